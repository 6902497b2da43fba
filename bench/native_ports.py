"""The same timm weights in transformers' native ports (ViTModel, Dinov2Model, DINOv3ViTModel), for benchmarks.

Each builder returns a native model holding a timm model's weights; the benchmark checks its outputs against
timm before timing anything.
"""

from __future__ import annotations

import torch
from transformers import Dinov2Config, Dinov2Model, DINOv3ViTConfig, DINOv3ViTModel, ViTConfig, ViTModel


def _split_qkv(state: dict, prefix: str, out: dict, target: str) -> None:
    for kind in ("weight", "bias"):
        key = f"{prefix}.attn.qkv.{kind}"
        if key in state:
            q, k, v = state[key].chunk(3, dim=0)
            out[f"{target}.attention.q_proj.{kind}"] = q
            out[f"{target}.attention.k_proj.{kind}"] = k
            out[f"{target}.attention.v_proj.{kind}"] = v
    for kind in ("weight", "bias"):
        out[f"{target}.attention.o_proj.{kind}"] = state[f"{prefix}.attn.proj.{kind}"]


def _common(timm_model) -> dict:
    block = timm_model.blocks[0]
    return dict(
        hidden_size=timm_model.embed_dim,
        num_hidden_layers=len(timm_model.blocks),
        num_attention_heads=block.attn.num_heads,
        intermediate_size=block.mlp.fc1.out_features,
        image_size=timm_model.patch_embed.img_size[0],
        patch_size=timm_model.patch_embed.patch_size[0],
        layer_norm_eps=block.norm1.eps,
    )


def vit(timm_model, attn: str) -> ViTModel:
    """timm ``vit_*_patch16_224`` -> transformers ViTModel (no pooler)."""
    config = ViTConfig(**_common(timm_model), qkv_bias=True, attn_implementation=attn)
    model = ViTModel(config, add_pooling_layer=False)
    state, out = timm_model.state_dict(), {}
    out["embeddings.cls_token"] = state["cls_token"]
    out["embeddings.position_embeddings"] = state["pos_embed"]
    for kind in ("weight", "bias"):
        out[f"embeddings.patch_embeddings.projection.{kind}"] = state[f"patch_embed.proj.{kind}"]
        out[f"layernorm.{kind}"] = state[f"norm.{kind}"]
    for i in range(len(timm_model.blocks)):
        p, t = f"blocks.{i}", f"layers.{i}"
        _split_qkv(state, p, out, t)
        for kind in ("weight", "bias"):
            out[f"{t}.layernorm_before.{kind}"] = state[f"{p}.norm1.{kind}"]
            out[f"{t}.layernorm_after.{kind}"] = state[f"{p}.norm2.{kind}"]
            out[f"{t}.mlp.fc1.{kind}"] = state[f"{p}.mlp.fc1.{kind}"]
            out[f"{t}.mlp.fc2.{kind}"] = state[f"{p}.mlp.fc2.{kind}"]
    model.load_state_dict(out, strict=True)
    return model.eval()


def dinov2(timm_model, attn: str) -> Dinov2Model:
    """timm ``vit_*_patch14_dinov2`` -> transformers Dinov2Model."""
    config = Dinov2Config(**_common(timm_model), mlp_ratio=4, attn_implementation=attn)
    model = Dinov2Model(config)
    state, out = timm_model.state_dict(), {}
    out["embeddings.cls_token"] = state["cls_token"]
    out["embeddings.mask_token"] = model.state_dict()["embeddings.mask_token"]
    out["embeddings.position_embeddings"] = state["pos_embed"]
    for kind in ("weight", "bias"):
        out[f"embeddings.patch_embeddings.projection.{kind}"] = state[f"patch_embed.proj.{kind}"]
        out[f"layernorm.{kind}"] = state[f"norm.{kind}"]
    for i in range(len(timm_model.blocks)):
        p, t = f"blocks.{i}", f"encoder.layer.{i}"
        _split_qkv(state, p, out, t)
        out[f"{t}.layer_scale1.lambda1"] = state[f"{p}.ls1.gamma"]
        out[f"{t}.layer_scale2.lambda1"] = state[f"{p}.ls2.gamma"]
        for kind in ("weight", "bias"):
            out[f"{t}.norm1.{kind}"] = state[f"{p}.norm1.{kind}"]
            out[f"{t}.norm2.{kind}"] = state[f"{p}.norm2.{kind}"]
            out[f"{t}.mlp.fc1.{kind}"] = state[f"{p}.mlp.fc1.{kind}"]
            out[f"{t}.mlp.fc2.{kind}"] = state[f"{p}.mlp.fc2.{kind}"]
    model.load_state_dict(out, strict=True)
    return model.eval()


def dinov3(timm_model, attn: str) -> DINOv3ViTModel:
    """timm ``vit_*_patch16_dinov3`` (no qkv bias) -> transformers DINOv3ViTModel."""
    common = _common(timm_model)
    config = DINOv3ViTConfig(
        **common,
        num_register_tokens=timm_model.reg_token.shape[1],
        query_bias=False,
        key_bias=False,
        value_bias=False,
        layerscale_value=1.0,
        rope_theta=float(timm_model.rope.temperature),
        attn_implementation=attn,
    )
    model = DINOv3ViTModel(config)
    state, out = timm_model.state_dict(), {}
    out["embeddings.cls_token"] = state["cls_token"]
    out["embeddings.mask_token"] = model.state_dict()["embeddings.mask_token"]
    out["embeddings.register_tokens"] = state["reg_token"]
    for kind in ("weight", "bias"):
        out[f"embeddings.patch_embeddings.{kind}"] = state[f"patch_embed.proj.{kind}"]
        out[f"norm.{kind}"] = state[f"norm.{kind}"]
    for i in range(len(timm_model.blocks)):
        p, t = f"blocks.{i}", f"model.layer.{i}"
        _split_qkv(state, p, out, t)
        out[f"{t}.layer_scale1.lambda1"] = state[f"{p}.gamma_1"]
        out[f"{t}.layer_scale2.lambda1"] = state[f"{p}.gamma_2"]
        for kind in ("weight", "bias"):
            out[f"{t}.norm1.{kind}"] = state[f"{p}.norm1.{kind}"]
            out[f"{t}.norm2.{kind}"] = state[f"{p}.norm2.{kind}"]
            out[f"{t}.mlp.up_proj.{kind}"] = state[f"{p}.mlp.fc1.{kind}"]
            out[f"{t}.mlp.down_proj.{kind}"] = state[f"{p}.mlp.fc2.{kind}"]
    model.load_state_dict(out, strict=True)
    return model.eval()


PORTS = {"vit": vit, "dinov2": dinov2, "dinov3": dinov3}


@torch.no_grad()
def native_features(model, pixel_values: torch.Tensor) -> torch.Tensor:
    return model(pixel_values=pixel_values).last_hidden_state
