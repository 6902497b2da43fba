"""The ``vitzoo_vit`` family: timm's VisionTransformer line as transformers models.

Numerically equal to timm (``forward_features``, pre-logits, logits, ``forward_intermediates``) on the same
weights. Ships as Hub remote code: imports torch, transformers and sibling files only.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import PreTrainedModel

from .attention_layers import MLP_TYPES, SelfAttention

# Every sibling the family needs is imported here by name: some transformers releases copy only direct imports.
from .common_compat import BackboneMixin
from .common_config import VitzooConfig  # noqa: F401
from .common_heads import ClassifierHead
from .common_layers import build_norm
from .common_modeling import VitzooPreTrainedMixin
from .configuration_vit import VitzooViTConfig
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


class VitzooViTLayer(GradientCheckpointingLayer, TransformerLayer):
    """timm ``Block`` or ``ResPostBlock`` with the attention and MLP flavours the config names."""

    def __init__(self, config: VitzooViTConfig, drop_path: float = 0.0) -> None:
        dim, eps, norm_type = config.hidden_size, config.layer_norm_eps, config.norm_type
        head_dim = dim // config.num_attention_heads
        attn = SelfAttention(
            config,
            dim,
            config.num_attention_heads,
            qkv_bias=config.qkv_bias,
            proj_bias=config.proj_bias,
            qk_norm=build_norm(norm_type, head_dim, eps) if config.qk_norm else None,
            k_norm=build_norm(norm_type, head_dim, eps) if config.qk_norm else None,
            out_norm=build_norm(norm_type, dim, eps) if config.scale_attn_norm else None,
        )
        hidden = config.intermediate_size
        norm_width = hidden // 2 if config.mlp_type == "glu_packed" else hidden
        mlp = MLP_TYPES[config.mlp_type](
            dim,
            hidden,
            config.hidden_act,
            bias=config.proj_bias,
            norm=build_norm(norm_type, norm_width, eps) if config.scale_mlp_norm else None,
            drop=config.hidden_dropout_prob,
        )
        super().__init__(config, attn, mlp, drop_path, config.layer_scale_init_value, post_norm=config.post_norm)


class VitzooViTPreTrainedModel(VitzooPreTrainedMixin, PreTrainedModel):
    config_class = VitzooViTConfig
    config: VitzooViTConfig
    base_model_prefix = "vit"
    _no_split_modules = ["PatchTokenEmbeddings", "VitzooViTLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def _init_weights(self, module: nn.Module) -> None:
        init_token_weights(module, self.config.initializer_range)


def _map_pool(config: VitzooViTConfig) -> AttentionPoolLatent:
    """SigLIP's attention pool, sized as timm sizes it (MLP width = the blocks' intermediate size)."""
    return map_pool(config, config.num_attention_heads, config.intermediate_size, config.hidden_act)


class VitzooViTModel(TokenModelMixin, VitzooViTPreTrainedModel):
    """``last_hidden_state`` = timm ``forward_features``; ``pooler_output`` = timm pre-logits."""

    def __init__(self, config: VitzooViTConfig) -> None:
        super().__init__(config)
        dim, eps, norm_type = config.hidden_size, config.layer_norm_eps, config.norm_type
        self.embeddings = PatchTokenEmbeddings(config, distilled=config.distilled)
        self.norm_pre = build_norm(norm_type, dim, eps) if config.pre_norm else nn.Identity()
        self.blocks = nn.ModuleList(VitzooViTLayer(config, rate) for rate in layer_drop_rates(config))
        self.norm = build_norm(norm_type, dim, eps) if config.use_final_norm else nn.Identity()
        self.attn_pool = _map_pool(config) if config.global_pool == "map" else None
        self.fc_norm = build_norm(norm_type, dim, eps) if config.use_fc_norm else nn.Identity()
        self.post_init()

    def pooled_output(self, last_hidden_state: torch.Tensor) -> torch.Tensor | None:
        """DeiT's pre-logits average the class and distillation tokens, as timm's distilled model does."""
        if self.config.distilled:
            return self.fc_norm((last_hidden_state[:, 0] + last_hidden_state[:, 1]) / 2)
        return super().pooled_output(last_hidden_state)


class VitzooViTForImageClassification(TokenClassifierMixin, VitzooViTPreTrainedModel):
    """A configurable head (linear / MLP / none) over a chosen pooling; DeiT keeps its two averaged heads."""

    def __init__(self, config: VitzooViTConfig) -> None:
        super().__init__(config)
        self.vit = VitzooViTModel(config)
        self.init_token_head(config, lambda: _map_pool(config))
        # DeiT: a second head reads the distillation token and eval logits average both (as timm).
        two_heads = config.distilled and config.head_type == "linear" and config.head_pooling is None
        self.head_dist = ClassifierHead(config, config.hidden_size) if two_heads else None
        self.post_init()

    def classify(self, outputs: BaseModelOutputWithPooling) -> torch.Tensor:
        if self.head_dist is None:
            return super().classify(outputs)
        tokens = outputs.last_hidden_state
        return (self.head(tokens[:, 0]) + self.head_dist(tokens[:, 1])) / 2


class VitzooViTBackbone(TokenBackboneMixin, BackboneMixin, VitzooViTPreTrainedModel):
    """NCHW feature maps of chosen blocks, equal to timm ``forward_intermediates``."""

    def __init__(self, config: VitzooViTConfig) -> None:
        super().__init__(config)
        self.vit = VitzooViTModel(config)
        self.init_token_backbone(config)
        self.post_init()


__all__ = [
    "VitzooViTBackbone",
    "VitzooViTForImageClassification",
    "VitzooViTModel",
    "VitzooViTPreTrainedModel",
]
