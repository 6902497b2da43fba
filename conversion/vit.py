"""timm VisionTransformer / VisionTransformerDistilled -> ``vitzoo_vit`` config and weights.

The config is read off a built timm model (on the meta device for real conversions), so every constructor
argument timm resolved (pretrained config overrides, partials, defaults) is seen exactly once. Anything the
family cannot express fails here with the module that is in the way, never later as a silent mismatch.
"""

from __future__ import annotations

import torch
from torch import nn

from vitzoo_hf import VitzooViTConfig


class UnsupportedArchitecture(ValueError):
    """The timm model uses a layer or flag the target family does not implement."""


def activation_name(act: nn.Module) -> str:
    """transformers ``ACT2FN`` key of a timm activation module."""
    name = type(act).__name__
    if isinstance(act, nn.GELU):
        return "gelu_pytorch_tanh" if act.approximate == "tanh" else "gelu"
    names = {"GELU": "gelu", "GELUTanh": "gelu_pytorch_tanh", "QuickGELU": "quick_gelu", "SiLU": "silu", "ReLU": "relu"}
    if name not in names:
        raise UnsupportedArchitecture(f"activation {name} is not supported (supported: {', '.join(names)}).")
    return names[name]


def norm_spec(norm: nn.Module) -> tuple[str, float]:
    name = type(norm).__name__
    if isinstance(norm, nn.LayerNorm):
        if norm.bias is None or not norm.elementwise_affine:
            raise UnsupportedArchitecture(f"norm layer {name} without affine weight and bias is not supported.")
        return "layernorm", float(norm.eps)
    if name == "RmsNorm" or isinstance(norm, nn.RMSNorm):
        if getattr(norm, "weight", None) is None:
            raise UnsupportedArchitecture(f"norm layer {name} without a weight is not supported.")
        return "rmsnorm", float(norm.eps)
    raise UnsupportedArchitecture(f"norm layer {name} is not supported (LayerNorm and RmsNorm are).")


def _present(module: nn.Module | None) -> bool:
    return module is not None and not isinstance(module, nn.Identity)


def _mlp_spec(mlp: nn.Module) -> tuple[str, int]:
    name = type(mlp).__name__
    if name == "Mlp" and isinstance(mlp.fc1, nn.Linear):
        return "mlp", mlp.fc1.out_features
    if name == "GluMlp":
        if mlp.gate_last:
            raise UnsupportedArchitecture("GluMlp with gate_last=True is not supported (SwiGLUPacked gates first).")
        return "glu_packed", mlp.fc1.out_features
    if name == "SwiGLU":
        return "swiglu", mlp.fc1_x.out_features
    raise UnsupportedArchitecture(f"MLP layer {name} is not supported (Mlp, SwiGLUPacked and SwiGLU are).")


def _check_attention(attn: nn.Module) -> None:
    name = type(attn).__name__
    if name != "Attention":
        raise UnsupportedArchitecture(f"attention layer {name} is not supported (timm Attention is).")
    if getattr(attn, "gate", None) is not None:
        raise UnsupportedArchitecture("gated attention (Attention(gated=True)) is not supported.")
    if attn.attn_dim != attn.qkv.in_features:
        raise UnsupportedArchitecture("attention with a head dim other than embed_dim / num_heads is not supported.")


def _check_attn_pool(pool: nn.Module) -> None:
    name = type(pool).__name__
    if name != "AttentionPoolLatent":
        raise UnsupportedArchitecture(f"pooling module {name} (global_pool='prr'?) is not supported.")
    standard = (
        pool.latent_len == 1
        and pool.pos_embed is None
        and pool.pool == "token"
        and not _present(pool.q_norm)
        and isinstance(pool.q, nn.Linear)
        and pool.mlp is not None
    )
    if not standard:
        raise UnsupportedArchitecture("only the standard single-latent MAP head (SigLIP) is supported.")


def config_from_timm(model: nn.Module, **overrides) -> VitzooViTConfig:
    """Read a ``VitzooViTConfig`` off a timm VisionTransformer(-Distilled); ``overrides`` set config fields."""
    cls_name = type(model).__name__
    if cls_name not in ("VisionTransformer", "VisionTransformerDistilled"):
        raise UnsupportedArchitecture(f"{cls_name} is not a timm VisionTransformer; the vit family cannot hold it.")
    embed = model.patch_embed
    if type(embed).__name__ != "PatchEmbed":
        raise UnsupportedArchitecture(f"patch embedding {type(embed).__name__} is not supported (PatchEmbed is).")
    if embed.dynamic_img_pad:
        raise UnsupportedArchitecture("dynamic_img_pad=True is not supported: inputs must be multiples of the patch.")
    if embed.proj.kernel_size != embed.proj.stride or embed.proj.padding != (0, 0):
        raise UnsupportedArchitecture("overlapping patch embedding is not supported.")
    block = model.blocks[0]
    block_name = type(block).__name__
    if block_name not in ("Block", "ResPostBlock"):
        raise UnsupportedArchitecture(f"block type {block_name} is not supported (Block and ResPostBlock are).")
    _check_attention(block.attn)
    norm_type, eps = norm_spec(block.norm1)
    mlp_type, hidden = _mlp_spec(block.mlp)
    distilled = cls_name == "VisionTransformerDistilled"
    if model.attn_pool is not None:
        _check_attn_pool(model.attn_pool)
    if not isinstance(model.head, (nn.Linear, nn.Identity)):
        raise UnsupportedArchitecture(f"classifier {type(model.head).__name__} is not supported (Linear is).")
    layer_scale = getattr(block, "ls1", None)
    fc_norm = _present(model.fc_norm)
    num_classes = model.head.out_features if isinstance(model.head, nn.Linear) else 0
    fields = dict(
        image_size=list(embed.img_size),
        patch_size=list(embed.patch_size),
        num_channels=embed.proj.in_channels,
        hidden_size=model.embed_dim,
        num_hidden_layers=len(model.blocks),
        num_attention_heads=block.attn.num_heads,
        intermediate_size=hidden,
        hidden_act=activation_name(block.mlp.act),
        norm_type=norm_type,
        layer_norm_eps=eps,
        qkv_bias=block.attn.qkv.bias is not None,
        qk_norm=_present(block.attn.q_norm),
        proj_bias=block.attn.proj.bias is not None,
        scale_attn_norm=_present(block.attn.norm),
        scale_mlp_norm=_present(block.mlp.norm),
        mlp_type=mlp_type,
        layer_scale_init_value=float(layer_scale.init_values) if _present(layer_scale) else None,
        block_type="res_post" if block_name == "ResPostBlock" else "pre_norm",
        class_token=model.cls_token is not None,
        num_register_tokens=0 if distilled else model.num_reg_tokens,
        distilled=distilled,
        use_pos_embed=model.pos_embed is not None,
        no_embed_class=model.no_embed_class,
        patch_embed_norm=_present(embed.norm),
        pre_norm=_present(model.norm_pre),
        final_norm=_present(model.norm) or fc_norm,
        fc_norm=fc_norm,
        global_pool=model.global_pool,
        pool_include_prefix=model.pool_include_prefix,
        head_type="linear" if num_classes else "none",
        num_labels=num_classes if num_classes else 1,
    )
    fields.update(overrides)
    return VitzooViTConfig(**fields)


def _target_key(key: str) -> str:
    """timm key -> ``VitzooViTModel`` key (the classification head keys are handled by the caller)."""
    for name in ("cls_token", "reg_token", "dist_token", "pos_embed", "patch_embed."):
        if key.startswith(name):
            return "embeddings." + key
    return key


def convert_key(key: str, with_head: bool) -> str | None:
    """timm key -> key of ``VitzooViTForImageClassification`` (``with_head``) or ``VitzooViTModel``.

    Returns None for head weights when converting the headless model.
    """
    for head in ("head.", "head_dist."):
        if key.startswith(head):
            return head + "layers." + key[len(head) :] if with_head else None
    target = _target_key(key)
    return "vit." + target if with_head else target


def convert_state_dict(state_dict: dict[str, torch.Tensor], with_head: bool = True) -> dict[str, torch.Tensor]:
    converted = {}
    for key, value in state_dict.items():
        target = convert_key(key, with_head)
        if target is not None:
            converted[target] = value
    return converted
