"""The ``vitzoo_eva`` family: timm's ``Eva`` (DINOv3, EVA02, RoPE-ViT, Perception Encoder...) as transformers models.

Numerically equal to timm on the same weights. RoPE tables are computed for the actual grid on each forward
(no non-persistent buffers), so meta-device loading and any input size give correct numbers. Ships as Hub
remote code: imports torch, transformers and sibling files only.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import PreTrainedModel

from .attention_layers import MLP_TYPES, SelfAttention

# Every sibling the family needs is imported here by name: some transformers releases copy only direct imports.
from .common_compat import BackboneMixin, init
from .common_config import VitzooConfig  # noqa: F401
from .common_heads import ClassifierHead  # noqa: F401
from .common_layers import build_norm, to_2tuple
from .common_modeling import VitzooPreTrainedMixin
from .configuration_eva import VitzooEvaConfig
from .token_config import TokenConfig  # noqa: F401
from .token_encoder import (
    PatchTokenEmbeddings,
    TokenBackboneMixin,
    TokenClassifierMixin,
    TokenModelMixin,
    TransformerLayer,
    init_token_weights,
    layer_drop_rates,
    map_pool,
)
from .token_layers import AttentionPoolLatent
from .token_rope import RotaryCat, RotaryDinoV3, RotaryMixed


def _qkv_layout(config: VitzooEvaConfig) -> tuple[str, bool]:
    """timm's EvaAttention gives the key no bias (fused: q_bias/v_bias parameters); AttentionRope biases all."""
    if config.qkv_fused:
        return ("fused_qv_bias" if config.attention_type == "eva" else "fused"), True
    return "separate", config.attention_type == "rope"


class VitzooEvaLayer(GradientCheckpointingLayer, TransformerLayer):
    """timm ``EvaBlock`` (pre-norm, LayerScale optionally on attention only) or ``EvaBlockPostNorm``."""

    def __init__(self, config: VitzooEvaConfig, index: int, drop_path: float = 0.0) -> None:
        dim, eps, norm_type = config.hidden_size, config.layer_norm_eps, config.norm_type
        head_dim = dim // config.num_attention_heads
        layout, k_bias = _qkv_layout(config)
        attn = SelfAttention(
            config,
            dim,
            config.num_attention_heads,
            qkv_bias=config.qkv_bias,
            proj_bias=True,
            qk_norm=build_norm(norm_type, head_dim, eps) if config.qk_norm else None,
            k_norm=build_norm(norm_type, head_dim, eps) if config.qk_norm else None,
            out_norm=build_norm(norm_type, dim, eps) if config.scale_attn_norm else None,
            qkv_layout=layout,
            k_bias=k_bias,
            num_kv_heads=config.kv_heads(index),
            num_prefix_tokens=config.num_prefix_tokens,
            rotate_half=config.rope_rotate_half,
        )
        hidden = config.intermediate_size
        norm_width = hidden // 2 if config.mlp_type == "glu_packed" else hidden
        mlp = MLP_TYPES[config.mlp_type](
            dim,
            hidden,
            config.hidden_act,
            bias=True,
            norm=build_norm(norm_type, norm_width, eps) if config.scale_mlp_norm else None,
            drop=config.hidden_dropout_prob,
        )
        super().__init__(
            config,
            attn,
            mlp,
            drop_path,
            config.layer_scale_init_value,
            mlp_layer_scale=not config.attn_only_layer_scale,
            post_norm=config.post_norm,
        )


def build_rope(config: VitzooEvaConfig) -> nn.Module | None:
    head_dim = config.hidden_size // config.num_attention_heads
    kind, indexing = config.rope_type, config.rope_grid_indexing
    if kind == "cat":
        ref_grid = to_2tuple(config.rope_ref_grid) if config.rope_ref_grid is not None else None
        return RotaryCat(
            head_dim, config.rope_temperature, config.rope_grid_offset, indexing, ref_grid, config.rope_rotate_half
        )
    if kind == "dinov3":
        return RotaryDinoV3(
            head_dim,
            config.rope_temperature,
            config.rope_normalize_coords,
            config.rope_grid_offset,
            indexing,
            config.rope_rotate_half,
            shift=config.rope_shift_coords,
            jitter=config.rope_jitter_coords,
            rescale=config.rope_rescale_coords,
        )
    if kind == "mixed":
        return RotaryMixed(
            head_dim, config.num_hidden_layers, config.num_attention_heads, config.rope_temperature, indexing
        )
    return None


class VitzooEvaPreTrainedModel(VitzooPreTrainedMixin, PreTrainedModel):
    config_class = VitzooEvaConfig
    config: VitzooEvaConfig
    base_model_prefix = "eva"
    _no_split_modules = ["PatchTokenEmbeddings", "VitzooEvaLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def _init_weights(self, module: nn.Module) -> None:
        init_token_weights(module, self.config.initializer_range)
        if isinstance(module, RotaryMixed):
            init.copy_(module.freqs, module.initial_freqs())


def _map_pool(config: VitzooEvaConfig) -> AttentionPoolLatent:
    heads = config.attn_pool_num_heads or config.num_attention_heads
    return map_pool(config, heads, config.attn_pool_intermediate_size or config.intermediate_size, "gelu")


class VitzooEvaModel(TokenModelMixin, VitzooEvaPreTrainedModel):
    """``last_hidden_state`` = timm ``forward_features``; ``pooler_output`` = timm pre-logits."""

    def __init__(self, config: VitzooEvaConfig) -> None:
        super().__init__(config)
        dim, eps, norm_type = config.hidden_size, config.layer_norm_eps, config.norm_type
        self.embeddings = PatchTokenEmbeddings(config)
        self.rope = build_rope(config)
        self.norm_pre = build_norm(norm_type, dim, eps) if config.pre_norm else nn.Identity()
        rates = layer_drop_rates(config)
        self.blocks = nn.ModuleList(VitzooEvaLayer(config, i, rate) for i, rate in enumerate(rates))
        self.norm = build_norm(norm_type, dim, eps) if config.use_final_norm else nn.Identity()
        self.attn_pool = _map_pool(config) if config.global_pool == "map" else None
        self.fc_norm = build_norm(norm_type, dim, eps) if config.use_fc_norm else nn.Identity()
        self.post_init()

    def position_table(self, grid: tuple[int, int], device: torch.device) -> torch.Tensor | None:
        return self.rope(grid, device) if self.rope is not None else None


class VitzooEvaForImageClassification(TokenClassifierMixin, VitzooEvaPreTrainedModel):
    def __init__(self, config: VitzooEvaConfig) -> None:
        super().__init__(config)
        self.eva = VitzooEvaModel(config)
        self.init_token_head(config, lambda: _map_pool(config))
        self.post_init()


class VitzooEvaBackbone(TokenBackboneMixin, BackboneMixin, VitzooEvaPreTrainedModel):
    def __init__(self, config: VitzooEvaConfig) -> None:
        super().__init__(config)
        self.eva = VitzooEvaModel(config)
        self.init_token_backbone(config)
        self.post_init()


__all__ = [
    "VitzooEvaBackbone",
    "VitzooEvaForImageClassification",
    "VitzooEvaModel",
    "VitzooEvaPreTrainedModel",
]
