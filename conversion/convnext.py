"""timm ``ConvNeXt`` -> ``vitzoo_convnext`` config and weights (ConvNeXt, ConvNeXt-V2, DINOv3 ConvNeXt, CLIP towers).

The config is read off a built timm model (on the meta device for real conversions); each piece the family
cannot express fails here by name.
"""

from __future__ import annotations

from torch import nn

from conversion.common import UnsupportedArchitecture, activation_name, head_fields, present, square_or_pair
from conversion.stage_families import StageHooks, pool_type
from vitzoo_hf import VitzooConvNextConfig

TIMM_CLASSES = ("ConvNeXt",)
# timm norm class -> our norm_type (NCHW and channels-last variants alike)
NORMS = {
    "LayerNorm2d": "layernorm",
    "LayerNorm": "layernorm",
    "RmsNorm2d": "rmsnorm",
    "RmsNorm": "rmsnorm",
    "SimpleNorm2d": "simplenorm",
    "SimpleNorm": "simplenorm",
}
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


class ConvNextHooks(StageHooks):
    timm_classes = TIMM_CLASSES
    timm_modules = ("convnext",)
    # timm's own entrypoints (their flags), shrunk to depths (1, 1, 2, 1) and small widths; 7 classes.
    tiny = dict(depths=(1, 1, 2, 1), dims=(16, 24, 32, 48), num_classes=7)
    variants = {
        "convnext": ("convnext_tiny", {}),
        "ols_tiered_stem": ("convnext_atto_ols", {}),
        "ols_overlap_stem": ("convnext_nano_ols", {}),
        "zepto_simplenorm_act_stem": ("convnext_zepto_rms_ols", {}),
        "rmsnorm_conv_mlp": ("convnext_atto_rms", {}),
        "v2_grn_conv_mlp": ("convnextv2_atto", {}),
        "v2_grn_linear": ("convnextv2_tiny", {}),
        "head_norm_first": ("convnext_tiny_hnf", {}),
        "mlp_head": ("convnext_large_mlp", {"head_hidden_size": 40}),
        "kernels_silu_no_bias": ("test_convnext3", {"conv_bias": False, "dims": (16, 24, 32, 48)}),
        "gelu_tanh_eps": ("test_convnext", {"dims": (16, 24, 32, 48)}),
        "no_layer_scale_max_pool": ("convnext_tiny", {"ls_init_value": None, "global_pool": "max"}),
        "patch2_avgmax": ("convnext_tiny", {"patch_size": 2, "global_pool": "avgmax"}),
        "headless_dinov3": ("convnext_tiny", {"num_classes": 0}),
    }
    showcase = ("convnext",)
    suite_configs = [
        dict(depths=[1, 1, 2, 1], hidden_sizes=[8, 16, 24, 32]),
        # ConvNeXt-V2 (GRN, no LayerScale), conv MLP, overlapping stem, RMSNorm, MLP head
        dict(
            depths=[1, 1, 2, 1],
            hidden_sizes=[8, 16, 24, 32],
            use_grn=True,
            layer_scale_init_value=None,
            conv_mlp=True,
            stem_type="overlap_act",
            stem_mid_channels=4,
            norm_type="rmsnorm",
            head_hidden_size=12,
        ),
    ]

    def convert_key(self, key: str, with_head: bool = True) -> str | None:
        if key.startswith("head.fc."):
            return "head.layers." + key[len("head.fc.") :] if with_head else None
        for old, new in RENAMES:
            if key.startswith(old):
                key = new + key[len(old) :]
        return f"{self.family.model.base_model_prefix}.{key}" if with_head else key

    def block_groups(self, model: nn.Module) -> list[nn.Sequential]:
        return [stage.blocks for stage in model.stages]

    def config_from_timm(self, model: nn.Module, **overrides) -> VitzooConvNextConfig:
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
        pool = pool_type(head.global_pool)
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


HOOKS = ConvNextHooks
