"""Configuration of the ``vitzoo_efficientnet`` family: every model timm builds with its EfficientNet builder
(``EfficientNet`` and ``MobileNetV3``: EfficientNet B0-B8/L2, V2, EdgeTPU, lite, MixNet, MNASNet, TinyNet, FBNet,
MobileNetV2/V3/V4, LCNet...).

The architecture is stored decoded: per stage, the block specs timm's builder read (its private strings with the
channel and depth multipliers and channel rounding already applied), one readable dict per run of equal blocks.
"""

from __future__ import annotations

from transformers.activations import ACT2FN

# Every sibling the config needs is imported here by name: some transformers releases copy only direct imports.
from .common_compat import BackboneConfigMixin  # noqa: F401
from .common_config import Field, VitzooConfig, check_choice  # noqa: F401
from .common_heads import HEAD_TYPES  # noqa: F401
from .stage_config import STAGE_POOLS, StageConfig

HEAD_ORDERS = ("efficientnet", "mobilenetv3")
SE_GATES = ("sigmoid", "hard_sigmoid")
# transformers' names, and two that some releases lack (the models build them from torch: stage_layers.act_layer)
ACTIVATIONS = tuple(dict.fromkeys((*ACT2FN, "relu6", "hardswish")))

# Every field a block spec may hold, with its default; ``BLOCK_FIELDS[type]`` names those a block type reads.
SPEC_DEFAULTS: dict[str, object] = dict(
    repeats=1,  # blocks in this run; only the first is strided
    stride=1,
    kernel=3,  # the spatial conv's kernel (a list: MixNet's mixed kernels, channels split between them)
    exp_kernel=1,  # ir: the expansion conv's kernel (a list: grouped 1x1 convs)
    pw_kernel=1,  # ds/ir/er: the projection conv's kernel (a list: grouped 1x1 convs)
    group_size=1,  # channels per group of the spatial conv: 1 depthwise, 0 a dense conv
    mid_channels=0,  # ir/er/uir: the expanded width
    se_channels=0,  # the squeeze-excite's reduced width; 0: no squeeze-excite
    se_act=None,  # the squeeze-excite's activation; None: the block's
    se_gate="sigmoid",
    act=None,  # the block's activation; None: the model's hidden_act
    skip=True,  # the residual where the shape allows it (timm's noskip inverted)
    pw_act=False,  # ds: an activation after the pointwise conv
    num_experts=0,  # ir: CondConv experts (0: plain convs)
    start_kernel=0,  # uir: the depthwise conv before the expansion (0: none)
    end_kernel=0,  # uir: the depthwise conv after the projection (0: none)
    layer_scale=None,  # uir/mqa: LayerScale init value; None: no LayerScale
    num_heads=8,  # mqa
    key_dim=64,  # mqa
    value_dim=64,  # mqa
    kv_stride=1,  # mqa: keys and values downsampled by a strided depthwise conv (kernel: ``kernel``)
    query_stride=1,  # mqa: queries average-pooled, the output upsampled back
)
COMMON = ("type", "repeats", "out_channels", "stride", "act", "skip")
SE = ("se_channels", "se_act", "se_gate")
BLOCK_FIELDS: dict[str, tuple[str, ...]] = {
    "cn": (*COMMON, "kernel", "group_size"),
    "ds": (*COMMON, "kernel", "group_size", "pw_kernel", "pw_act", *SE),
    "ir": (*COMMON, "kernel", "group_size", "exp_kernel", "pw_kernel", "mid_channels", "num_experts", *SE),
    "er": (*COMMON, "kernel", "group_size", "pw_kernel", "mid_channels", *SE),
    "uir": (*COMMON, "kernel", "group_size", "start_kernel", "end_kernel", "mid_channels", "layer_scale", *SE),
    "mqa": (*COMMON, "kernel", "num_heads", "key_dim", "value_dim", "kv_stride", "query_stride", "layer_scale"),
}
BLOCK_NAMES = {
    "cn": "ConvBnAct",
    "ds": "DepthwiseSeparableConv",
    "ir": "InvertedResidual (CondConvResidual with num_experts)",
    "er": "EdgeResidual",
    "uir": "UniversalInvertedResidual",
    "mqa": "MobileAttention with multi-query attention",
}


def _mbconv(out: int, mid: int, se: int, kernel: int = 3, stride: int = 1, repeats: int = 1) -> dict:
    return dict(type="ir", out_channels=out, mid_channels=mid, se_channels=se, kernel=kernel, stride=stride,
                repeats=repeats)  # fmt: skip


# timm's efficientnet_b0, decoded (a stage's first block expands its input width, the rest their own)
EFFICIENTNET_B0 = (
    (dict(type="ds", out_channels=16, se_channels=8),),
    (_mbconv(24, 96, 4, stride=2), _mbconv(24, 144, 6)),
    (_mbconv(40, 144, 6, 5, 2), _mbconv(40, 240, 10, 5)),
    (_mbconv(80, 240, 10, stride=2), _mbconv(80, 480, 20, repeats=2)),
    (_mbconv(112, 480, 20, 5), _mbconv(112, 672, 28, 5, repeats=2)),
    (_mbconv(192, 672, 28, 5, 2), _mbconv(192, 1152, 48, 5, repeats=3)),
    (_mbconv(320, 1152, 48),),
)


def normalize_spec(spec: dict, where: str) -> dict:
    """A block spec with every field its type reads (defaults filled in), checked by name."""
    kind = spec.get("type")
    if kind not in BLOCK_FIELDS:
        raise ValueError(
            f"{where}: block type {kind!r} is not supported; expected one of "
            f"{', '.join(f'{k!r} ({v})' for k, v in BLOCK_NAMES.items())}."
        )
    unknown = set(spec) - set(BLOCK_FIELDS[kind])
    if unknown:
        raise ValueError(
            f"{where}: a {kind!r} block has no field(s) {', '.join(sorted(unknown))}; its fields are "
            f"{', '.join(BLOCK_FIELDS[kind])}."
        )
    if "out_channels" not in spec:
        raise ValueError(f"{where}: a block spec needs out_channels.")
    defaults = {k: SPEC_DEFAULTS[k] for k in BLOCK_FIELDS[kind] if k in SPEC_DEFAULTS}
    if kind in ("cn", "er"):  # timm's default for these: a dense spatial conv
        defaults["group_size"] = 0
    full = {"type": kind, **defaults, **spec}
    for name in ("repeats", "out_channels", "stride", "kv_stride", "query_stride", "num_heads"):
        value = full.get(name, 1)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65536:
            raise ValueError(f"{where}: {name}={value!r} must be a whole number from 1 to 65536.")
    for name in ("act", "se_act"):
        if full.get(name) is not None:
            check_choice(f"{where} {name}", full[name], ACTIVATIONS)
    if "se_gate" in full:
        check_choice(f"{where} se_gate", full["se_gate"], SE_GATES)
    if kind in ("ir", "er", "uir") and full["mid_channels"] < 1:
        raise ValueError(f"{where}: a {kind!r} block needs mid_channels (its expanded width).")
    for name in ("kernel", "exp_kernel", "pw_kernel"):
        if isinstance(full.get(name), tuple):
            full[name] = list(full[name])
    return full


class VitzooEfficientNetConfig(StageConfig):
    r"""A timm EfficientNet-builder model: a strided stem conv, stages of blocks (``block_specs``), then the head
    in one of two orders. "efficientnet": ``conv_head`` + BatchNorm-act on the final map (part of
    ``last_hidden_state``, as timm's ``forward_features``), then the pool; "mobilenetv3": the pool, then
    ``conv_head`` (with ``head_bias``) and an activation, or with ``conv_head_norm`` a BatchNorm-act (MobileNetV4),
    as timm's ``forward_head``. ``depths``, ``hidden_sizes`` and ``stage_strides`` follow from the block specs.

    A block spec is a dict: ``type`` ("cn", "ds", "ir", "er", "uir", "mqa"), ``repeats``, ``out_channels``, the
    stride of its first block, kernels, widths (``mid_channels``, ``se_channels``), activation, skip and the
    type's own options; see ``SPEC_DEFAULTS`` in this file for every field and its default."""

    model_type = "vitzoo_efficientnet"
    head_poolings = STAGE_POOLS
    config_fields = dict(
        block_specs=Field(
            EFFICIENTNET_B0,
            "per stage, the specs of its runs of blocks (decoded from timm's arch_def); default: EfficientNet-B0's",
        ),
        depths=Field(
            lambda config: [sum(s.get("repeats", 1) for s in stage) for stage in config.block_specs], "derived"
        ),
        hidden_sizes=Field(lambda config: [stage[-1]["out_channels"] for stage in config.block_specs], "derived"),
        stage_strides=Field(lambda config: [stage[0].get("stride", 1) for stage in config.block_specs], "derived"),
        stem_channels=Field(32, "channels out of the stem conv [stem_size]"),
        stem_kernel_size=Field(3, "the stem conv's kernel"),
        stem_stride=Field(2, "downsampling of the stem"),
        same_padding=Field(False, "TF 'SAME' padding computed per input size (the tf_ ports) [pad_type='same']"),
        hidden_act=Field(
            "silu", "the model's activation (stem, head, blocks without their own) [act_layer]", ACTIVATIONS
        ),
        norm_eps=Field(1e-5, "BatchNorm epsilon (1e-3 for the TF ports)"),
        head_order=Field("efficientnet", '"efficientnet" or "mobilenetv3": where conv_head sits', HEAD_ORDERS),
        head_channels=Field(1280, "channels out of conv_head; 0: no conv_head [num_features / head_hidden_size]"),
        head_bias=Field(True, "mobilenetv3 order: conv_head has a bias"),
        conv_head_norm=Field(False, "mobilenetv3 order: a BatchNorm-act after conv_head (MobileNetV4) [head_norm]"),
        attention_dropout=Field(0.0, "dropout on the attention probabilities of mqa blocks [attn_drop]"),
    )

    def check_fields(self) -> None:
        specs = self.block_specs
        if not isinstance(specs, (list, tuple)) or not specs or not all(isinstance(s, (list, tuple)) for s in specs):
            raise ValueError("block_specs lists the stages, each a non-empty list of block spec dicts.")
        self.block_specs = [
            [normalize_spec(dict(spec), f"block_specs[{i}][{j}]") for j, spec in enumerate(stage)]
            for i, stage in enumerate(specs)
        ]
        derived = (
            [sum(s["repeats"] for s in stage) for stage in self.block_specs],
            [stage[-1]["out_channels"] for stage in self.block_specs],
            [stage[0]["stride"] for stage in self.block_specs],
        )
        for name, value in zip(("depths", "hidden_sizes", "stage_strides"), derived, strict=True):
            if list(getattr(self, name)) != value:
                raise ValueError(
                    f"{name}={list(getattr(self, name))} disagrees with block_specs ({value}); leave it unset."
                )
        if any(spec["stride"] != 1 for stage in self.block_specs for spec in stage[1:]):
            raise ValueError("Only a stage's first block spec may be strided (timm's builder strides a stage once).")
        if self.head_order == "mobilenetv3" and (not self.global_pool or self.head_channels < 1):
            raise ValueError(
                "The mobilenetv3 head order pools before conv_head: it needs a global_pool and head_channels."
            )
        super().check_fields()

    @property
    def head_width(self) -> int:
        """Channels of the pre-logits vector."""
        return self.head_channels or self.hidden_sizes[-1]

    @property
    def has_attention(self) -> bool:
        """Whether any block attends (the MobileNetV4 hybrids' ``mqa``): only these models have maps to return."""
        return any(spec["type"] == "mqa" for stage in self.block_specs for spec in stage)


__all__ = ["VitzooEfficientNetConfig"]
