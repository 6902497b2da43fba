"""Shared test fixtures: tiny timm models of every supported variant, perturbed, and their vitzoo twins."""

from __future__ import annotations

from functools import partial

import timm
import torch
from timm.layers import LayerNorm, RmsNorm, SwiGLU, SwiGLUPacked
from timm.models.vision_transformer import ResPostBlock

from conversion.vit import config_from_timm, convert_state_dict

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=7)

# name -> (timm entrypoint, constructor overrides); each exercises the flags its pretrained namesake uses.
VIT_VARIANTS: dict[str, tuple[str, dict]] = {
    "vit": ("vit_base_patch16_224", {}),
    "deit_distilled": ("deit_base_distilled_patch16_224", {}),
    "deit3": ("deit3_base_patch16_224", {"no_embed_class": True, "init_values": 1e-6}),
    "dino": ("vit_small_patch16_224", {"qkv_bias": True, "num_classes": 0}),
    "dinov2": ("vit_base_patch14_dinov2", {"init_values": 1e-5}),
    "dinov2_reg": ("vit_base_patch14_reg4_dinov2", {"init_values": 1e-5, "reg_tokens": 4}),
    "dinov2_giant_swiglu": (
        "vit_giant_patch14_dinov2",
        {"init_values": 1e-5, "mlp_layer": SwiGLUPacked, "act_layer": torch.nn.SiLU, "mlp_ratio": 2.6667 * 2},
    ),
    "clip": (
        "vit_base_patch16_clip_224",
        {"pre_norm": True, "norm_layer": partial(LayerNorm, eps=1e-5), "act_layer": "quick_gelu"},
    ),
    "siglip_map": (
        "vit_base_patch16_siglip_224",
        {"class_token": False, "global_pool": "map", "act_layer": "gelu_tanh", "mlp_ratio": 3.7362},
    ),
    "siglip_gap_reg": (
        "vit_betwixt_patch16_reg4_gap_256",
        {"class_token": False, "reg_tokens": 4, "global_pool": "avg", "no_embed_class": True, "init_values": 1e-5},
    ),
    "avg_fc_norm": ("vit_medium_patch16_gap_256", {"class_token": False, "global_pool": "avg", "fc_norm": True}),
    "avgmax_include_prefix": ("vit_base_patch16_224", {"global_pool": "avgmax", "pool_include_prefix": True}),
    "max_pool": ("vit_base_patch16_224", {"global_pool": "max", "reg_tokens": 1}),
    "map_include_prefix": ("vit_base_patch16_224", {"global_pool": "map", "pool_include_prefix": True}),
    "aimv2_rms_swiglu": (
        "aimv2_large_patch14_224",
        {
            "class_token": False,
            "global_pool": "avg",
            "fc_norm": False,
            "qkv_bias": False,
            "proj_bias": False,
            "act_layer": "silu",
            "norm_layer": partial(RmsNorm, eps=1e-5),
            "embed_norm_layer": partial(RmsNorm, eps=1e-5),
            "mlp_layer": SwiGLU,
            "mlp_ratio": 2.75,
        },
    ),
    "beit3_scale_norms": ("vit_base_patch16_224", {"scale_attn_norm": True, "scale_mlp_norm": True}),
    "qk_norm": ("vit_base_patch16_224", {"qk_norm": True, "qkv_bias": False}),
    "res_post": ("vit_base_patch16_224", {"block_fn": ResPostBlock, "init_values": 1e-5, "class_token": True}),
    "no_final_norm_no_pos": ("vit_base_patch16_224", {"final_norm": False, "pos_embed": "none", "reg_tokens": 2}),
    "nonsquare_ratio": ("vit_base_patch16_224", {"img_size": (32, 48), "patch_size": (8, 4), "mlp_ratio": 2.6153}),
}


@torch.no_grad()
def perturb(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Add noise to EVERY parameter and buffer: timm's init hides mapping bugs (zero biases, LayerScale 1e-5)."""
    generator = torch.Generator().manual_seed(seed)
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            tensor.add_(torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype) * 0.1)
    return model


def make_timm(variant: str, dynamic: bool = False, seed: int = 0, **extra) -> torch.nn.Module:
    name, overrides = VIT_VARIANTS[variant]
    kwargs = {**TINY, **overrides, **extra}
    if dynamic:
        kwargs["dynamic_img_size"] = True
    model = timm.create_model(name, pretrained=False, **kwargs)
    return perturb(model, seed).eval()


def vitzoo_from_timm(timm_model: torch.nn.Module, model_class, attn: str = "sdpa", **config_overrides):
    """Build a vitzoo model of ``model_class`` holding the timm model's weights (strict: every key must map)."""
    config = config_from_timm(timm_model, **config_overrides)
    config._attn_implementation = attn
    model = model_class(config)
    with_head = model_class.__name__.endswith("ForImageClassification")
    state = convert_state_dict(timm_model.state_dict(), with_head=with_head)
    target = model.vit if model_class.__name__.endswith("Backbone") else model
    target.load_state_dict(state, strict=True)
    return model.eval()
