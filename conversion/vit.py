"""timm VisionTransformer / VisionTransformerDistilled -> ``vitzoo_vit`` config and weights.

The config is read off a built timm model (on the meta device for real conversions), so every constructor
argument timm resolved (pretrained config overrides, partials, defaults) is seen exactly once. Anything the
family cannot express fails here with the module that is in the way, never later as a silent mismatch.
"""

from __future__ import annotations

from functools import partial

import torch
from timm.layers import LayerNorm, RmsNorm, SwiGLU, SwiGLUPacked
from timm.models.vision_transformer import ResPostBlock
from torch import nn

from conversion.common import UnsupportedArchitecture, head_fields, present
from conversion.token_families import TokenHooks, check_attn_pool, encoder_fields
from vitzoo_hf import VitzooViTConfig

TIMM_CLASSES = ("VisionTransformer", "VisionTransformerDistilled")


def _check_attention(attn: nn.Module) -> None:
    name = type(attn).__name__
    if name != "Attention":
        raise UnsupportedArchitecture(f"attention layer {name} is not supported (timm Attention is).")
    if getattr(attn, "gate", None) is not None:
        raise UnsupportedArchitecture("gated attention (Attention(gated=True)) is not supported.")
    if attn.attn_dim != attn.qkv.in_features:
        raise UnsupportedArchitecture("attention with a head dim other than embed_dim / num_heads is not supported.")


class ViTHooks(TokenHooks):
    timm_classes = TIMM_CLASSES
    timm_modules = ("vision_transformer", "deit")
    tiny = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=7)
    # Each exercises the flags its pretrained namesake uses.
    variants = {
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
        "nonsquare_ratio": (
            "vit_base_patch16_224",
            {"img_size": (32, 48), "patch_size": (8, 4), "mlp_ratio": 2.6153},
        ),
    }
    showcase = ("dinov2_reg",)
    suite_configs = [
        {},
        # registers, LayerScale, packed SwiGLU, no position embedding for the prefix tokens
        dict(
            num_register_tokens=2,
            layer_scale_init_value=1e-5,
            mlp_type="glu_packed",
            hidden_act="silu",
            no_embed_class=True,
        ),
    ]

    def config_from_timm(self, model: nn.Module, **overrides) -> VitzooViTConfig:
        """Read a ``VitzooViTConfig`` off a timm VisionTransformer(-Distilled); ``overrides`` set config fields."""
        cls_name = type(model).__name__
        if cls_name not in TIMM_CLASSES:
            raise UnsupportedArchitecture(f"{cls_name} is not a timm VisionTransformer; the vit family cannot hold it.")
        fields = encoder_fields(model, ("Block", "ResPostBlock"))
        block, embed = model.blocks[0], model.patch_embed
        block_name = type(block).__name__
        _check_attention(block.attn)
        distilled = cls_name == "VisionTransformerDistilled"
        if model.attn_pool is not None:
            check_attn_pool(model.attn_pool)
        layer_scale = getattr(block, "ls1", None)
        fields.update(
            qkv_bias=block.attn.qkv.bias is not None,
            qk_norm=present(block.attn.q_norm),
            proj_bias=block.attn.proj.bias is not None,
            scale_attn_norm=present(block.attn.norm),
            layer_scale_init_value=float(layer_scale.init_values) if present(layer_scale) else None,
            post_norm=block_name == "ResPostBlock",
            class_token=model.cls_token is not None,
            num_register_tokens=0 if distilled else model.num_reg_tokens,
            distilled=distilled,
            use_pos_embed=model.pos_embed is not None,
            no_embed_class=model.no_embed_class,
            patch_embed_norm=present(embed.norm),
            pre_norm=present(model.norm_pre),
            final_norm=present(model.norm),
            fc_norm=present(model.fc_norm),
            global_pool=model.global_pool,
            pool_include_prefix=model.pool_include_prefix,
            **head_fields(model.head),
        )
        fields.update(overrides)
        return VitzooViTConfig(**fields)


HOOKS = ViTHooks
