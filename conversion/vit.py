"""timm VisionTransformer / VisionTransformerDistilled -> ``vitzoo_vit`` config and weights.

The config is read off a built timm model (on the meta device for real conversions), so every constructor
argument timm resolved (pretrained config overrides, partials, defaults) is seen exactly once. Anything the
family cannot express fails here with the module that is in the way, never later as a silent mismatch.
"""

from __future__ import annotations

from torch import nn

from conversion.common import UnsupportedArchitecture, head_fields, present
from conversion.token_families import (  # noqa: F401  (hooks this family takes as they are)
    CLASSIFIER_WEIGHT,
    check_attn_pool,
    encoder_fields,
    input_size,
    num_blocks,
    reference_at,
    reference_kwargs,
    token_key,
    truncated_kwargs,
    truncated_overrides,
    verification_inputs,
)
from vitzoo_hf import VitzooViTConfig, VitzooViTModel

TIMM_CLASSES = ("VisionTransformer", "VisionTransformerDistilled")
TIMM_MODULES = ("vision_transformer", "deit")


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


def convert_key(key: str, with_head: bool = True) -> str | None:
    return token_key(key, VitzooViTModel.base_model_prefix, with_head)
