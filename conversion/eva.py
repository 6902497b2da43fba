"""timm ``Eva`` -> ``vitzoo_eva`` config and weights (DINOv3, EVA02, RoPE-ViT, Perception Encoder, Sapiens2...).

Like the vit mapping, the config is read off a built model so that timm's own resolution of every argument
is what gets converted; each unsupported piece fails here by name.
"""

from __future__ import annotations

from timm.models import split_model_name_tag
from torch import nn

from conversion.common import UnsupportedArchitecture, activation_name, head_fields, present
from conversion.token_families import TokenHooks, check_attn_pool, encoder_fields
from vitzoo_hf import VitzooEvaConfig

TIMM_CLASSES = ("Eva",)


def _attention_fields(model: nn.Module) -> dict:
    attn = model.blocks[0].attn
    name = type(attn).__name__
    if name not in ("EvaAttention", "AttentionRope"):
        raise UnsupportedArchitecture(f"attention layer {name} is not supported (EvaAttention, AttentionRope are).")
    for block in model.blocks:
        if getattr(block.attn, "gate", None) is not None:
            raise UnsupportedArchitecture("gated attention (gated_attn=True) is not supported.")
        if block.attn.head_dim * block.attn.num_heads != model.embed_dim:
            raise UnsupportedArchitecture(
                "attention with a head dim other than embed_dim / num_heads is not supported."
            )
        if block.attn.proj.bias is None:
            raise UnsupportedArchitecture("attention output projection without bias is not supported.")
    fused = attn.qkv is not None
    if fused:
        qkv_bias = attn.q_bias is not None if name == "EvaAttention" else attn.qkv.bias is not None
    else:
        qkv_bias = attn.q_proj.bias is not None
    kv_heads = [getattr(block.attn, "num_kv_heads", attn.num_heads) for block in model.blocks]
    return dict(
        attention_type="eva" if name == "EvaAttention" else "rope",
        qkv_fused=fused,
        qkv_bias=qkv_bias,
        qk_norm=present(attn.q_norm),
        scale_attn_norm=present(attn.norm),
        num_key_value_heads=None if set(kv_heads) == {attn.num_heads} else kv_heads,
        rope_rotate_half=bool(getattr(attn, "rotate_half", False)),
    )


def _rope_fields(rope: nn.Module | None) -> dict:
    if rope is None:
        return dict(rope_type=None)
    name = type(rope).__name__
    augment = dict(
        rope_shift_coords=rope.shift_coords,
        rope_jitter_coords=rope.jitter_coords,
        rope_rescale_coords=rope.rescale_coords,
    )
    if name == "RotaryEmbeddingCat":
        if rope.in_pixels or rope.grid_type != "index" or rope.aug_active:
            raise UnsupportedArchitecture("RotaryEmbeddingCat is supported over patch indices without augmentation.")
        ref = list(rope.ref_feat_shape) if rope.ref_feat_shape is not None else None
        return dict(
            rope_type="cat",
            rope_temperature=float(rope.temperature),
            rope_grid_offset=float(rope.grid_offset),
            rope_grid_indexing=rope.grid_indexing,
            rope_ref_grid=ref,
        )
    if name == "RotaryEmbeddingDinoV3":
        if rope.min_period is not None or rope.max_period is not None:
            raise UnsupportedArchitecture("DINOv3 RoPE with min/max periods is not supported (temperature is).")
        return dict(
            rope_type="dinov3",
            rope_temperature=float(rope.temperature),
            rope_grid_offset=float(rope.grid_offset),
            rope_grid_indexing=rope.grid_indexing,
            rope_normalize_coords=rope.normalize_coords,
            **augment,
        )
    if name == "RotaryEmbeddingMixed":
        if rope.aug_active:
            raise UnsupportedArchitecture("RoPE-Mixed with coordinate augmentation is not supported.")
        return dict(rope_type="mixed", rope_temperature=float(rope.temperature), rope_grid_indexing=rope.grid_indexing)
    raise UnsupportedArchitecture(f"rotary embedding {name} is not supported (cat, dinov3 and mixed are).")


class EvaHooks(TokenHooks):
    timm_classes = TIMM_CLASSES
    timm_modules = ("eva",)
    # timm's EvaBlock stores LayerScale as bare gamma_1/gamma_2 parameters; ours are ls1.gamma/ls2.gamma.
    renames = {"gamma_1": "ls1.gamma", "gamma_2": "ls2.gamma"}
    # RoPE needs head_dim % 4 == 0 with room for several bands: 64 wide, 4 heads.
    tiny = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_classes=7)
    # Each is a real timm Eva entrypoint (so its flags are timm's own), shrunk by ``tiny`` and the overrides.
    variants = {
        "dinov3": ("vit_small_patch16_dinov3", {"global_pool": "token"}),
        "dinov3_qkvb": ("vit_small_patch16_dinov3_qkvb", {"global_pool": "token"}),
        "dinov3_plus_swiglu_aligned": ("vit_small_plus_patch16_dinov3", {"global_pool": "token", "mlp_ratio": 2.7}),
        "dinov3_7b_style": ("vit_7b_patch16_dinov3", {"global_pool": "token"}),
        "eva02_mim": ("eva02_base_patch14_224", {"ref_feat_shape": (2, 2), "patch_size": 8}),
        "eva02_clip_scale_attn": ("eva02_base_patch16_clip_224", {"ref_feat_shape": (3, 3)}),
        "eva02_enormous_post_norm": ("eva02_enormous_patch14_clip_224", {"patch_size": 8}),
        "eva_giant_abs_pos": ("eva_giant_patch14_224", {"patch_size": 8}),
        "rope_mixed": ("vit_small_patch16_rope_mixed_224", {}),
        "rope_ape_xy": ("vit_small_patch16_rope_ape_224", {}),
        "rope_reg_gap": ("vit_base_patch16_rope_reg1_gap_256", {"ref_feat_shape": (2, 2)}),
        "pe_core_map": ("vit_pe_core_base_patch16_224", {"ref_feat_shape": (2, 2), "attn_pool_num_heads": 8}),
        "pe_spatial_no_final_norm": (
            "vit_pe_spatial_base_patch16_512",
            {"ref_feat_shape": (3, 3), "num_classes": 0},
        ),
        "sapiens2_gqa_rms": ("vit_base_patch16_sapiens2", {"num_kv_heads": (4, 2), "global_pool": "token"}),
        "lingbot": ("vit_base_patch16_lingbot", {}),
    }
    showcase = ("dinov3", "rope_mixed")
    suite_configs = [
        # DINOv3-style: RoPE over centered coordinates, registers, LayerScale, bias-free fused qkv
        dict(
            num_register_tokens=4,
            layer_scale_init_value=1e-5,
            qkv_bias=False,
            rope_type="dinov3",
            rope_temperature=100.0,
            rope_rotate_half=True,
            use_pos_embed=False,
        ),
        # EVA02-style: separate q/k/v (no key bias), SwiGLU with MLP norm, attention-out norm, EVA RoPE
        dict(
            qkv_fused=False,
            mlp_type="swiglu",
            hidden_act="silu",
            scale_mlp_norm=True,
            scale_attn_norm=True,
            rope_type="cat",
            rope_ref_grid=[2, 2],
            global_pool="avg",
            final_norm=False,
            fc_norm=True,
        ),
        # Sapiens2-style: grouped-query attention per block, QK norm, RMSNorm, attention-only LayerScale
        dict(
            attention_type="rope",
            qkv_fused=False,
            num_key_value_heads=[4, 2],
            qk_norm=True,
            norm_type="rmsnorm",
            layer_scale_init_value=1.0,
            attn_only_layer_scale=True,
            rope_type="dinov3",
            rope_rotate_half=True,
            num_register_tokens=2,
        ),
        # RoPE-Mixed (learned frequencies per block and head), a MAP attention-pool head, post-norm blocks
        dict(attention_type="rope", rope_type="mixed", rope_temperature=10.0, global_pool="map", post_norm=True),
    ]

    def truncate(self, model: nn.Module, blocks: int) -> nn.Module:
        """RoPE-Mixed learns frequencies per block, in a table beside the blocks: cut with them."""
        super().truncate(model, blocks)
        if type(model.rope).__name__ == "RotaryEmbeddingMixed":
            model.rope.freqs = nn.Parameter(model.rope.freqs[:, :blocks], model.rope.freqs.requires_grad)
            model.rope.depth = blocks
        return model

    def reference_kwargs(self, model_name: str) -> dict:
        """DINOv3's pooled output is the CLS token, as upstream DINOv3 and transformers' DINOv3ViTModel give it
        (timm defaults to avg)."""
        kwargs = super().reference_kwargs(model_name)
        if "dinov3" in split_model_name_tag(model_name)[0]:
            kwargs["global_pool"] = "token"
        return kwargs

    def config_from_timm(self, model: nn.Module, **overrides) -> VitzooEvaConfig:
        """Read a ``VitzooEvaConfig`` off a timm ``Eva`` model; ``overrides`` set config fields."""
        if type(model).__name__ not in TIMM_CLASSES:
            raise UnsupportedArchitecture(f"{type(model).__name__} is not a timm Eva; the eva family cannot hold it.")
        fields = encoder_fields(model, ("EvaBlock", "EvaBlockPostNorm"))
        block = model.blocks[0]
        block_name = type(block).__name__
        pool = model.attn_pool
        if pool is not None:
            check_attn_pool(pool)
        gamma_1, gamma_2 = getattr(block, "gamma_1", None), getattr(block, "gamma_2", None)
        fields.update(
            **_attention_fields(model),
            layer_scale_init_value=float(block.init_values) if gamma_1 is not None else None,
            attn_only_layer_scale=gamma_1 is not None and gamma_2 is None,
            post_norm=block_name == "EvaBlockPostNorm",
            class_token=model.cls_token is not None,
            num_register_tokens=model.reg_token.shape[1] if model.reg_token is not None else 0,
            use_pos_embed=model.pos_embed is not None,
            no_embed_class=model.no_embed_class,
            pre_norm=present(model.norm_pre),
            final_norm=present(model.norm),
            fc_norm=present(model.fc_norm),
            global_pool=model.global_pool,
            attn_pool_num_heads=pool.num_heads if pool is not None else None,
            attn_pool_intermediate_size=pool.mlp.fc1.out_features if pool is not None else None,
            **_rope_fields(model.rope),
            **head_fields(model.head),
        )
        if pool is not None and activation_name(pool.mlp.act) != "gelu":
            raise UnsupportedArchitecture("Eva attention pools are built with GELU; this one is not.")
        fields.update(overrides)
        return VitzooEvaConfig(**fields)


HOOKS = EvaHooks
