"""timm ``ConvNeXt`` -> ``vitzoo_convnext`` config and weights (ConvNeXt, ConvNeXt-V2, DINOv3 ConvNeXt, CLIP towers).

The config is read off a built timm model (on the meta device for real conversions); each piece the family
cannot express fails here by name.
"""

from __future__ import annotations

from torch import nn

from conversion.common import UnsupportedArchitecture, activation_name, head_fields, present, square_or_pair
from conversion.stage_families import (  # noqa: F401  (hooks this family takes as they are)
    input_size,
    reference_at,
    reference_kwargs,
    verification_inputs,
)
from vitzoo_hf import VitzooConvNextConfig, VitzooConvNextModel

TIMM_CLASSES = ("ConvNeXt",)
TIMM_MODULES = ("convnext",)
CLASSIFIER_WEIGHT = "head.fc.weight"
# timm norm class -> our norm_type (NCHW and channels-last variants alike)
NORMS = {
    "LayerNorm2d": "layernorm",
    "LayerNorm": "layernorm",
    "RmsNorm2d": "rmsnorm",
    "RmsNorm": "rmsnorm",
    "SimpleNorm2d": "simplenorm",
    "SimpleNorm": "simplenorm",
}
POOLS = ("avg", "max", "avgmax", "")
# timm module prefix -> ours; the classifier becomes the configurable head.
RENAMES = (("norm_pre.", "norm."), ("head.norm.", "pre_logits.norm."), ("head.pre_logits.fc.", "pre_logits.fc."))


def _norm(module: nn.Module) -> tuple[str, float]:
    name = type(module).__name__
    if name not in NORMS:
        raise UnsupportedArchitecture(f"norm layer {name} is not supported ({', '.join(NORMS)} are).")
    if getattr(module, "weight", None) is None:
        raise UnsupportedArchitecture(f"norm layer {name} without an affine weight is not supported.")
    return NORMS[name], float(module.eps)


def _stem_fields(stem: nn.Sequential) -> dict:
    convs = [m for m in stem if isinstance(m, nn.Conv2d)]
    if len(convs) == 1 and convs[0].kernel_size == convs[0].stride and convs[0].padding == (0, 0):
        return dict(stem_type="patch", patch_size=convs[0].stride[0])
    if len(convs) == 2 and all(c.kernel_size == (3, 3) and c.stride == (2, 2) for c in convs):
        acts = [m for m in stem if not isinstance(m, nn.Conv2d) and m is not stem[-1]]
        mid, dim = convs[0].out_channels, convs[1].out_channels
        kind = "overlap_act" if acts else ("overlap_tiered" if mid != dim else "overlap")
        return dict(stem_type=kind, stem_mid_channels=mid if mid != dim else None)
    raise UnsupportedArchitecture("ConvNeXt stem layout is not supported (patch and overlapping stems are).")


def config_from_timm(model: nn.Module, **overrides) -> VitzooConvNextConfig:
    """Read a ``VitzooConvNextConfig`` off a timm ``ConvNeXt``; ``overrides`` set config fields."""
    if type(model).__name__ not in TIMM_CLASSES:
        raise UnsupportedArchitecture(
            f"{type(model).__name__} is not a timm ConvNeXt; the convnext family cannot hold it."
        )
    stages = list(model.stages)
    block = stages[0].blocks[0]
    depths, dims, kernels, strides = [], [], [], []
    for stage in stages:
        first = stage.blocks[0]
        if first.conv_dw.dilation != (1, 1) or type(first.shortcut).__name__ != "Identity":
            raise UnsupportedArchitecture("dilated ConvNeXt stages (output_stride < 32) are not supported.")
        depths.append(len(stage.blocks))
        dims.append(first.conv_dw.out_channels)
        kernels.append(first.conv_dw.kernel_size[0])
        strides.append(stage.downsample[1].stride[0] if present(stage.downsample) else 1)
    norm_type, eps = _norm(block.norm)
    mlp = block.mlp
    if type(mlp).__name__ not in ("Mlp", "GlobalResponseNormMlp") or present(getattr(mlp, "norm", None)):
        raise UnsupportedArchitecture(f"ConvNeXt MLP {type(mlp).__name__} is not supported (Mlp, GRN Mlp are).")
    head = model.head
    pool = head.global_pool.pool_type
    if pool not in POOLS:
        raise UnsupportedArchitecture(f"global pool {pool!r} is not supported ({', '.join(map(repr, POOLS))} are).")
    pre_logits = getattr(head, "pre_logits", None)
    if present(pre_logits) and activation_name(pre_logits.act) != "gelu":
        raise UnsupportedArchitecture("ConvNeXt MLP heads are built with GELU; this one is not.")
    fields = dict(
        image_size=square_or_pair(model.pretrained_cfg["input_size"][1:]),
        num_channels=model.stem[0].in_channels,
        depths=depths,
        hidden_sizes=dims,
        stage_strides=strides,
        kernel_sizes=kernels,
        **_stem_fields(model.stem),
        mlp_ratio=mlp.fc1.out_channels / dims[0] if block.use_conv_mlp else mlp.fc1.out_features / dims[0],
        conv_mlp=block.use_conv_mlp,
        conv_bias=block.conv_dw.bias is not None,
        use_grn=type(mlp).__name__ == "GlobalResponseNormMlp",
        layer_scale_init_value=1e-6 if block.gamma is not None else None,
        hidden_act=activation_name(mlp.act),
        norm_type=norm_type,
        layer_norm_eps=eps,
        head_norm_first=present(model.norm_pre),
        head_hidden_size=pre_logits.fc.out_features if present(pre_logits) else None,
        global_pool=pool,
        **head_fields(head.fc),
    )
    fields.update(overrides)
    return VitzooConvNextConfig(**fields)


def convert_key(key: str, with_head: bool = True) -> str | None:
    if key.startswith("head.fc."):
        return "head.layers." + key[len("head.fc.") :] if with_head else None
    for old, new in RENAMES:
        if key.startswith(old):
            key = new + key[len(old) :]
    return f"{VitzooConvNextModel.base_model_prefix}.{key}" if with_head else key


def num_blocks(model: nn.Module) -> int:
    """The deepest stage's block count: truncation keeps up to that many blocks per stage."""
    return max(len(stage.blocks) for stage in model.stages)


def truncated_kwargs(model: nn.Module, blocks: int) -> dict:
    """Each stage keeps its first ``blocks`` blocks (every stage still downsamples)."""
    return {"depths": tuple(min(len(stage.blocks), blocks) for stage in model.stages)}


def truncated_overrides(config, blocks: int) -> dict:
    return {"depths": [min(depth, blocks) for depth in config.depths]}
