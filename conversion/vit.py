"""timm VisionTransformer / VisionTransformerDistilled -> ``vitzoo_vit`` config and weights.

The config is read off a built timm model (on the meta device for real conversions), so every constructor
argument timm resolved (pretrained config overrides, partials, defaults) is seen exactly once. Anything the
family cannot express fails here with the module that is in the way, never later as a silent mismatch.
"""

from __future__ import annotations

import torch
from torch import nn

from conversion.common import (
    UnsupportedArchitecture,
    check_attn_pool,
    encoder_fields,
    head_fields,
    present,
)
from conversion.common import convert_key as _convert_key
from conversion.common import convert_state_dict as _convert
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


def config_from_timm(model: nn.Module, **overrides) -> VitzooViTConfig:
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
    fc_norm = present(model.fc_norm)
    fields.update(
        qkv_bias=block.attn.qkv.bias is not None,
        qk_norm=present(block.attn.q_norm),
        proj_bias=block.attn.proj.bias is not None,
        scale_attn_norm=present(block.attn.norm),
        layer_scale_init_value=float(layer_scale.init_values) if present(layer_scale) else None,
        block_type="res_post" if block_name == "ResPostBlock" else "pre_norm",
        class_token=model.cls_token is not None,
        num_register_tokens=0 if distilled else model.num_reg_tokens,
        distilled=distilled,
        use_pos_embed=model.pos_embed is not None,
        no_embed_class=model.no_embed_class,
        patch_embed_norm=present(embed.norm),
        pre_norm=present(model.norm_pre),
        final_norm=present(model.norm) or fc_norm,
        fc_norm=fc_norm,
        global_pool=model.global_pool,
        pool_include_prefix=model.pool_include_prefix,
        **head_fields(model),
    )
    fields.update(overrides)
    return VitzooViTConfig(**fields)


def convert_state_dict(state_dict: dict[str, torch.Tensor], with_head: bool = True) -> dict[str, torch.Tensor]:
    return _convert(state_dict, "vit", with_head)


def convert_key(key: str, with_head: bool = True) -> str | None:
    return _convert_key(key, "vit", with_head, None)
