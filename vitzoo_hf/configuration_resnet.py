"""Configuration of the ``vitzoo_resnet`` family: every timm ``ResNet`` (ResNet, ResNet-D/-T, ResNeXt, SE- and
ECA-ResNe(X)t, ResNet-RS, Wide ResNet, the anti-aliased and GroupNorm variants)."""

from __future__ import annotations

from transformers.activations import ACT2FN

# Every sibling the config needs is imported here by name: some transformers releases copy only direct imports.
from .common_compat import BackboneConfigMixin  # noqa: F401
from .common_config import Field, VitzooConfig, check_choice  # noqa: F401
from .common_heads import HEAD_TYPES  # noqa: F401
from .stage_config import StageConfig

BLOCK_TYPES = {"basic": 1, "bottleneck": 4}  # block type -> channel expansion of its output over its planes
STEM_TYPES = ("", "deep", "deep_tiered")
ATTN_TYPES = ("se", "eca")
AA_TYPES = ("avgpool", "blurpool")
NORM_TYPES = ("batchnorm", "groupnorm")
STEM_OUTPUTS = ("conv", "pool")


def check_inner_widths(widths: list, block_types: list[str], depths: list[int], cardinality: int) -> None:
    """``block_inner_widths`` holds, per stage and block, one width per inner conv of that block type."""
    if len(widths) != len(depths):
        raise ValueError(f"block_inner_widths lists {len(widths)} stages; give one per stage ({len(depths)}).")
    convs = {"basic": 1, "bottleneck": 2}
    for stage, (stage_widths, block_type, depth) in enumerate(zip(widths, block_types, depths, strict=True)):
        if len(stage_widths) != depth or any(len(w) != convs[block_type] for w in stage_widths):
            raise ValueError(
                f"block_inner_widths[{stage}] is {stage_widths}: give {depth} lists (one per block) of "
                f"{convs[block_type]} width(s) for a {block_type} stage."
            )
        if any(width % cardinality for block in stage_widths for width in block):
            raise ValueError(f"block_inner_widths[{stage}]: a grouped conv's widths must divide by {cardinality}.")


class VitzooResNetConfig(StageConfig):
    r"""A timm ResNet: the stage-family fields (``hidden_sizes`` are the channels out of each stage, timm's
    ``channels`` times the block's expansion; ``stem_channels`` those out of the stem) plus ResNet's own.

    Pruned ResNets (timm's ``*_pruned``) give every block its own widths: ``block_inner_widths`` lists, per stage
    and block, the channels inside the block's branch (bottleneck: out of its 1x1 then its 3x3 conv; basic: out of
    its first conv), in place of the widths ``base_width``, ``cardinality`` and ``block_reduce_first`` derive; the
    stage outputs (``hidden_sizes``) then need not be multiples of the block's expansion.

    ``stem_output`` says where the stem's map (``stage_names[0]``, ``hidden_states[0]``) is taken: "conv" after
    its activation, at stride 2, as timm's ``features_only``; "pool" after the stem's pool, at stride 4, as
    transformers' own ResNet names its "stem" (for heads written against that). The stages' maps are the same
    either way (strides 4, 8, 16, 32), and so are the weights: it is a choice of output, not of architecture.
    """

    model_type = "vitzoo_resnet"
    config_fields = dict(
        depths=Field((3, 4, 6, 3), "blocks per stage [layers]"),
        hidden_sizes=Field((256, 512, 1024, 2048), "channels out of each stage"),
        block_types=Field(("bottleneck",) * 4, '"basic" or "bottleneck" per stage [block]'),
        stem_type=Field(
            "", '"": one 7x7 conv; "deep": three 3x3 convs; "deep_tiered": a narrower first conv', STEM_TYPES
        ),
        deep_stem_width=Field(32, "the deep stems' inner width [stem_width]"),
        stem_channels=Field(lambda config: 2 * config.deep_stem_width if config.stem_type else 64, "stem channels"),
        stem_stride=Field(2, "downsampling of the stem (its pool halves the map again before stage 1)"),
        stage_strides=Field(lambda config: [2] * len(config.depths), "every stage halves the map"),
        replace_stem_pool=Field(False, "a strided 3x3 conv instead of the stem's max pool (ResNet-RS)"),
        cardinality=Field(1, "groups of the 3x3 conv (ResNeXt)"),
        base_width=Field(64, "width per group (ResNeXt, Wide ResNet)"),
        block_reduce_first=Field(1, "SENet's narrower first conv"),
        down_kernel_size=Field(1, "kernel of the shortcut's strided conv"),
        avg_down=Field(False, "ResNet-D shortcut: a 2x2 average pool then a 1x1 conv"),
        attn_type=Field(None, '"se" or "eca" after each block\'s last norm; None: none', (*ATTN_TYPES, None)),
        se_ratio=Field(1 / 16, "SE's reduction [rd_ratio]"),
        aa_type=Field(
            None,
            'anti-aliasing of strided convs and the stem pool: "avgpool", "blurpool" [aa_layer]',
            (*AA_TYPES, None),
        ),
        norm_type=Field("batchnorm", '"batchnorm" or "groupnorm" (norm_groups) [norm_layer]', NORM_TYPES),
        norm_groups=Field(32, "GroupNorm's groups"),
        norm_eps=Field(1e-5, "norm epsilon"),
        hidden_act=Field("relu", "activation [act_layer]", ACT2FN),
        zero_init_last=Field(True, "a new model starts each block's last norm at zero, as timm does"),
        stem_output=Field(
            "conv", 'where the stem\'s map is taken: "conv" (stride 2) or "pool" (stride 4)', STEM_OUTPUTS
        ),
        block_inner_widths=Field(None, "pruned models: per stage and block, the widths inside the branch"),
        eca_kernel_sizes=Field(None, "pruned models: ECA kernel per stage, the unpruned parent's; None: timm's rule"),
    )

    def check_fields(self) -> None:
        stages = len(self.depths)
        for block_type in self.block_types:
            check_choice("block_type", block_type, BLOCK_TYPES)
        if len(self.block_types) != stages:
            raise ValueError(f"block_types lists {len(self.block_types)} values; give one per stage ({stages}).")
        # The stem's pool before stage 1, and every later stage's first block, halve the map.
        if list(self.stage_strides) != [2] * stages:
            raise ValueError(
                f"stage_strides {list(self.stage_strides)} cannot be built: every ResNet stage halves the map "
                "(dilated, output-stride 8/16 ResNets are not supported). Leave stage_strides unset."
            )
        inner = self.block_inner_widths
        if inner is not None:
            check_inner_widths(inner, self.block_types, self.depths, self.cardinality)
            self.block_inner_widths = [[list(block) for block in stage] for stage in inner]
        if self.eca_kernel_sizes is not None and (len(self.eca_kernel_sizes) != stages or self.attn_type != "eca"):
            raise ValueError(
                f"eca_kernel_sizes {list(self.eca_kernel_sizes)} needs attn_type='eca' and one kernel per stage "
                f"({stages})."
            )
        for block_type, width in zip(self.block_types, self.hidden_sizes, strict=True):
            if inner is None and width % BLOCK_TYPES[block_type]:
                raise ValueError(
                    f"hidden_sizes holds each stage's output channels: {width} is not a multiple of a {block_type} "
                    f"block's expansion ({BLOCK_TYPES[block_type]})."
                )
        if "basic" in self.block_types and (self.cardinality != 1 or self.base_width != 64):
            raise ValueError("basic blocks take cardinality=1 and base_width=64 only (as in timm).")
        super().check_fields()

    @property
    def strides(self) -> list[int]:
        """As the stage layer's, but a stem map taken after the stem's pool is at stride 4, as stage 1's."""
        strides = super().strides
        return [strides[1], *strides[1:]] if self.stem_output == "pool" else strides


__all__ = ["VitzooResNetConfig"]
