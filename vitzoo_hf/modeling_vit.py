"""The ``vitzoo_vit`` family: timm's VisionTransformer line as transformers models.

Numerically equal to timm (``forward_features``, pre-logits, logits, ``forward_intermediates``) on the same
weights. Ships as Hub remote code: imports torch, transformers and sibling files only.
"""

from __future__ import annotations

from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import PreTrainedModel

from .compat import BackboneMixin
from .config_common import auto_map  # noqa: F401  (imported directly so every release's loader copies it)
from .configuration_vit import VitzooViTConfig
from .encoder import (
    EncoderBackboneMixin,
    EncoderModelMixin,
    PatchTokenEmbeddings,
    TransformerLayer,
    drop_path_rates,
    init_encoder_weights,
    map_pool,
)
from .heads import ImageClassifierMixin
from .layers import MLP_TYPES, AttentionPoolLatent, SelfAttention, build_norm


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
        post_norm = config.block_type == "res_post"
        super().__init__(config, attn, mlp, drop_path, config.layer_scale_init_value, post_norm=post_norm)


class VitzooViTPreTrainedModel(PreTrainedModel):
    config_class = VitzooViTConfig
    config: VitzooViTConfig
    base_model_prefix = "vit"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["PatchTokenEmbeddings", "VitzooViTLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # Loading a classification folder into the headless classes leaves the head out, by design.
    _keys_to_ignore_on_load_unexpected = [r"^head\.", r"^head_dist\.", r"^head_pool\."]

    def _init_weights(self, module: nn.Module) -> None:
        init_encoder_weights(module, self.config.initializer_range)


def _map_pool(config: VitzooViTConfig) -> AttentionPoolLatent:
    """SigLIP's attention pool, sized as timm sizes it (MLP width = the blocks' intermediate size)."""
    return map_pool(config, config.num_attention_heads, config.intermediate_size, config.hidden_act)


class VitzooViTModel(EncoderModelMixin, VitzooViTPreTrainedModel):
    """``last_hidden_state`` = timm ``forward_features``; ``pooler_output`` = timm pre-logits."""

    def __init__(self, config: VitzooViTConfig) -> None:
        super().__init__(config)
        dim, eps, norm_type = config.hidden_size, config.layer_norm_eps, config.norm_type
        self.embeddings = PatchTokenEmbeddings(config)
        self.norm_pre = build_norm(norm_type, dim, eps) if config.pre_norm else nn.Identity()
        self.blocks = nn.ModuleList(VitzooViTLayer(config, rate) for rate in drop_path_rates(config))
        use_fc_norm = config.use_fc_norm
        self.norm = build_norm(norm_type, dim, eps) if config.final_norm and not use_fc_norm else nn.Identity()
        self.attn_pool = _map_pool(config) if config.global_pool == "map" else None
        self.fc_norm = build_norm(norm_type, dim, eps) if config.final_norm and use_fc_norm else nn.Identity()
        self.post_init()


class VitzooViTForImageClassification(ImageClassifierMixin, VitzooViTPreTrainedModel):
    """A configurable head (linear / MLP / none) over a chosen pooling; DeiT keeps its two averaged heads."""

    def __init__(self, config: VitzooViTConfig) -> None:
        super().__init__(config)
        self.vit = VitzooViTModel(config)
        self.init_head(config, lambda: _map_pool(config))
        self.post_init()
        if config.freeze_backbone:
            self.freeze_backbone()


class VitzooViTBackbone(EncoderBackboneMixin, BackboneMixin, VitzooViTPreTrainedModel):
    """NCHW feature maps of chosen blocks, equal to timm ``forward_intermediates``."""

    def __init__(self, config: VitzooViTConfig) -> None:
        super().__init__(config)
        self.vit = VitzooViTModel(config)
        self.init_backbone(config)
        self.post_init()


__all__ = [
    "VitzooViTBackbone",
    "VitzooViTForImageClassification",
    "VitzooViTModel",
    "VitzooViTPreTrainedModel",
]
