"""Configuration of the ``vitzoo_resnet`` family: every timm ``ResNet`` (ResNet, ResNet-D/-T, ResNeXt, SE- and
ECA-ResNe(X)t, ResNet-RS, Wide ResNet, the anti-aliased and GroupNorm variants)."""

from __future__ import annotations

from transformers.activations import ACT2FN

# Every sibling the config needs is imported here by name: some transformers releases copy only direct imports.
from .common_compat import BackboneConfigMixin  # noqa: F401
from .common_config import VitzooConfig, check_choice  # noqa: F401
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
    r"""A timm ResNet: the stage-family fields (see ``StageConfig``; ``hidden_sizes`` are the channels out of each
    stage, timm's ``channels`` times the block's expansion; ``stem_channels`` those out of the stem) plus (timm
    argument in brackets) ``block_types`` ("basic" or "bottleneck" per stage) [block], ``stem_type`` ("": one 7x7
    conv; "deep": three 3x3 convs; "deep_tiered": the same with a narrower first conv), ``deep_stem_width``
    [stem_width: the deep stems' inner width], ``replace_stem_pool`` (a strided 3x3 conv instead of the stem's max
    pool, ResNet-RS), ``cardinality`` and ``base_width`` (ResNeXt groups and width per group), ``block_reduce_first``
    (SENet's narrower first conv), ``down_kernel_size`` and ``avg_down`` (the shortcut's projection: a 1x1 (or kxk)
    strided conv, or the ResNet-D 2x2 average pool then a 1x1 conv), ``attn_type`` ("se" or "eca" after each
    block's last norm; None: none) with ``se_ratio`` (SE's reduction [rd_ratio]), ``aa_type`` ("avgpool" or
    "blurpool" anti-aliasing of the strided convs and the stem pool [aa_layer]; None: none), ``norm_type``
    ("batchnorm", "groupnorm" with ``norm_groups``) and ``norm_eps`` [norm_layer], ``hidden_act`` [act_layer],
    ``zero_init_last`` (a new model starts each block's last norm at zero, as timm does).

    Pruned ResNets (timm's ``*_pruned``) give every block its own widths: ``block_inner_widths`` lists, per stage
    and block, the channels inside the block's branch (bottleneck: out of its 1x1 then its 3x3 conv; basic: out of
    its first conv), in place of the widths ``base_width``, ``cardinality`` and ``block_reduce_first`` derive; the
    stage outputs (``hidden_sizes``) then need not be multiples of the block's expansion. ``eca_kernel_sizes``
    (per stage; None: timm's rule from the stage's channel count) keeps the kernels of the unpruned parent.

    ``stem_output`` says where the stem's map (``stage_names[0]``, ``hidden_states[0]``) is taken: "conv" after
    its activation, at stride 2, as timm's ``features_only``; "pool" after the stem's pool, at stride 4, as
    transformers' own ResNet names its "stem" (for heads written against that). The stages' maps are the same
    either way (strides 4, 8, 16, 32), and so are the weights: it is a choice of output, not of architecture.
    """

    model_type = "vitzoo_resnet"

    def __init__(
        self,
        block_types: list[str] = ("bottleneck",) * 4,
        stem_type: str = "",
        deep_stem_width: int = 32,
        replace_stem_pool: bool = False,
        cardinality: int = 1,
        base_width: int = 64,
        block_reduce_first: int = 1,
        down_kernel_size: int = 1,
        avg_down: bool = False,
        attn_type: str | None = None,
        se_ratio: float = 1 / 16,
        aa_type: str | None = None,
        norm_type: str = "batchnorm",
        norm_groups: int = 32,
        norm_eps: float = 1e-5,
        hidden_act: str = "relu",
        zero_init_last: bool = True,
        stem_output: str = "conv",
        block_inner_widths: list[list[list[int]]] | None = None,
        eca_kernel_sizes: list[int] | None = None,
        **kwargs,
    ) -> None:
        block_types = list(block_types)
        for block_type in block_types:
            check_choice("block_type", block_type, BLOCK_TYPES)
        check_choice("stem_type", stem_type, STEM_TYPES)
        check_choice("attn_type", attn_type, (*ATTN_TYPES, None))
        check_choice("aa_type", aa_type, (*AA_TYPES, None))
        check_choice("norm_type", norm_type, NORM_TYPES)
        check_choice("hidden_act", hidden_act, ACT2FN)
        check_choice("stem_output", stem_output, STEM_OUTPUTS)
        kwargs.setdefault("depths", (3, 4, 6, 3))
        kwargs.setdefault("hidden_sizes", (256, 512, 1024, 2048))
        kwargs.setdefault("stem_channels", 2 * deep_stem_width if stem_type else 64)
        stages = len(kwargs["depths"])
        if len(block_types) != stages:
            raise ValueError(f"block_types lists {len(block_types)} values; give one per stage ({stages}).")
        # The stem's pool before stage 1, and every later stage's first block, halve the map.
        if list(kwargs.setdefault("stage_strides", [2] * stages)) != [2] * stages:
            raise ValueError(
                f"stage_strides {list(kwargs['stage_strides'])} cannot be built: every ResNet stage halves the map "
                "(dilated, output-stride 8/16 ResNets are not supported). Leave stage_strides unset."
            )
        kwargs.setdefault("stem_stride", 2)
        if block_inner_widths is not None:
            check_inner_widths(block_inner_widths, block_types, kwargs["depths"], cardinality)
        if eca_kernel_sizes is not None and (len(eca_kernel_sizes) != stages or attn_type != "eca"):
            raise ValueError(
                f"eca_kernel_sizes {list(eca_kernel_sizes)} needs attn_type='eca' and one kernel per stage ({stages})."
            )
        for block_type, width in zip(block_types, kwargs["hidden_sizes"], strict=True):
            if block_inner_widths is None and width % BLOCK_TYPES[block_type]:
                raise ValueError(
                    f"hidden_sizes holds each stage's output channels: {width} is not a multiple of a {block_type} "
                    f"block's expansion ({BLOCK_TYPES[block_type]})."
                )
        if "basic" in block_types and (cardinality != 1 or base_width != 64):
            raise ValueError("basic blocks take cardinality=1 and base_width=64 only (as in timm).")
        self.block_types = block_types
        self.stem_type = stem_type
        self.deep_stem_width = deep_stem_width
        self.replace_stem_pool = replace_stem_pool
        self.cardinality = cardinality
        self.base_width = base_width
        self.block_reduce_first = block_reduce_first
        self.down_kernel_size = down_kernel_size
        self.avg_down = avg_down
        self.attn_type = attn_type
        self.se_ratio = se_ratio
        self.aa_type = aa_type
        self.norm_type = norm_type
        self.norm_groups = norm_groups
        self.norm_eps = norm_eps
        self.hidden_act = hidden_act
        self.zero_init_last = zero_init_last
        self.stem_output = stem_output
        inner = block_inner_widths
        self.block_inner_widths = None if inner is None else [[list(block) for block in stage] for stage in inner]
        self.eca_kernel_sizes = None if eca_kernel_sizes is None else list(eca_kernel_sizes)
        super().__init__(**kwargs)

    @property
    def strides(self) -> list[int]:
        """As the stage layer's, but a stem map taken after the stem's pool is at stride 4, as stage 1's."""
        strides = super().strides
        return [strides[1], *strides[1:]] if self.stem_output == "pool" else strides


__all__ = ["VitzooResNetConfig"]
