"""Reading timm modules into vitzoo config fields, shared by every family's mapping."""

from __future__ import annotations

import torch
from torch import nn


class UnsupportedArchitecture(ValueError):
    """The timm model uses a layer or flag the target family does not implement."""


def present(module: nn.Module | None) -> bool:
    return module is not None and not isinstance(module, nn.Identity)


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


def mlp_spec(mlp: nn.Module) -> dict:
    """mlp_type, intermediate_size (fc1 width; packed GLU: both halves), activation, MLP norm."""
    name = type(mlp).__name__
    if name == "Mlp" and isinstance(mlp.fc1, nn.Linear):
        kind, hidden = "mlp", mlp.fc1.out_features
    elif name == "GluMlp":
        if mlp.gate_last:
            raise UnsupportedArchitecture("GluMlp with gate_last=True is not supported (SwiGLUPacked gates first).")
        kind, hidden = "glu_packed", mlp.fc1.out_features
    elif name == "SwiGLU":
        kind, hidden = "swiglu", mlp.fc1_x.out_features
    else:
        raise UnsupportedArchitecture(f"MLP layer {name} is not supported (Mlp, SwiGLUPacked and SwiGLU are).")
    return dict(mlp_type=kind, intermediate_size=hidden, hidden_act=activation_name(mlp.act))


def square_or_pair(size: tuple[int, int]) -> int | list[int]:
    """An int for square sizes: transformers' dense models (DPT, DepthAnything) read ``patch_size`` as one."""
    return int(size[0]) if size[0] == size[1] else [int(size[0]), int(size[1])]


def check_patch_embed(embed: nn.Module) -> None:
    if type(embed).__name__ != "PatchEmbed":
        raise UnsupportedArchitecture(f"patch embedding {type(embed).__name__} is not supported (PatchEmbed is).")
    if embed.dynamic_img_pad:
        raise UnsupportedArchitecture("dynamic_img_pad=True is not supported: inputs must be multiples of the patch.")
    if embed.proj.kernel_size != embed.proj.stride or embed.proj.padding != (0, 0):
        raise UnsupportedArchitecture("overlapping patch embedding is not supported.")


def encoder_fields(model: nn.Module, block_types: tuple[str, ...]) -> dict:
    """Geometry, MLP and norm fields every family reads the same way off a timm model (its first block
    standing for all); checks the patch embedding and the block type first."""
    embed = model.patch_embed
    check_patch_embed(embed)
    block = model.blocks[0]
    if type(block).__name__ not in block_types:
        supported = ", ".join(block_types)
        raise UnsupportedArchitecture(f"block type {type(block).__name__} is not supported ({supported} are).")
    norm_type, eps = norm_spec(block.norm1)
    return dict(
        image_size=square_or_pair(embed.img_size),
        patch_size=square_or_pair(embed.patch_size),
        num_channels=embed.proj.in_channels,
        hidden_size=model.embed_dim,
        num_hidden_layers=len(model.blocks),
        num_attention_heads=block.attn.num_heads,
        **mlp_spec(block.mlp),
        scale_mlp_norm=present(block.mlp.norm),
        norm_type=norm_type,
        layer_norm_eps=eps,
    )


def check_attn_pool(pool: nn.Module) -> None:
    name = type(pool).__name__
    if name != "AttentionPoolLatent":
        raise UnsupportedArchitecture(f"pooling module {name} (global_pool='prr'?) is not supported.")
    standard = (
        pool.latent_len == 1
        and pool.pos_embed is None
        and pool.pool == "token"
        and not present(pool.q_norm)
        and isinstance(pool.q, nn.Linear)
        and pool.mlp is not None
    )
    if not standard:
        raise UnsupportedArchitecture("only the standard single-latent MAP head (SigLIP) is supported.")


def head_fields(model: nn.Module) -> dict:
    if not isinstance(model.head, (nn.Linear, nn.Identity)):
        raise UnsupportedArchitecture(f"classifier {type(model.head).__name__} is not supported (Linear is).")
    num_classes = model.head.out_features if isinstance(model.head, nn.Linear) else 0
    # A headless model gets no labels (num_labels=0): asking for N labels later creates a fresh N-class head.
    return dict(head_type="linear", num_labels=num_classes)


EMBEDDING_KEYS = ("cls_token", "reg_token", "dist_token", "pos_embed", "patch_embed.")


def convert_key(key: str, prefix: str, with_head: bool, renames: dict[str, str] | None = None) -> str | None:
    """timm key -> key of the family's ForImageClassification (``with_head``) or base model; None drops it.

    Embedding parameters move under ``embeddings.``, ``renames`` maps key suffixes (e.g. ``gamma_1`` ->
    ``ls1.gamma``), the classifier becomes ``head.layers`` and everything else keeps timm's name.
    """
    head = next((h for h in ("head.", "head_dist.") if key.startswith(h)), None)
    if head is not None:
        return head + "layers." + key[len(head) :] if with_head else None
    for old, new in (renames or {}).items():
        if key.endswith("." + old):
            key = key[: -len(old)] + new
    if key.startswith(EMBEDDING_KEYS):
        key = "embeddings." + key
    return f"{prefix}.{key}" if with_head else key


def convert_state_dict(
    state_dict: dict[str, torch.Tensor], prefix: str, with_head: bool, renames: dict[str, str] | None = None
) -> dict[str, torch.Tensor]:
    converted = {}
    for key, value in state_dict.items():
        target = convert_key(key, prefix, with_head, renames)
        if target is not None:
            converted[target] = value
    return converted
