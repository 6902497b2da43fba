"""Configuration of the ``vitzoo_eva`` family: every timm ``Eva`` (DINOv3, EVA02, RoPE-ViT, PE, Sapiens2...).

Field names match the ``vitzoo_vit`` config wherever the meaning is the same; the additions are the
attention flavour (EVA's or the RoPE one, grouped-query heads), attention-only LayerScale, post-norm blocks
and the rotary position embedding.
"""

from __future__ import annotations

from transformers import PretrainedConfig

from .compat import BackboneConfigMixin
from .config_common import auto_map, check_choice, check_encoder, set_backbone_options, set_head_options

ATTENTION_TYPES = ("eva", "rope")
ROPE_TYPES = (None, "cat", "dinov3", "mixed")
GRID_INDEXING = ("ij", "xy")
COORD_NORMALIZATIONS = ("separate", "min", "max")


class VitzooEvaConfig(BackboneConfigMixin, PretrainedConfig):
    r"""Architecture of a timm ``Eva`` model, plus the classification head and backbone options.

    Beyond the fields shared with ``VitzooViTConfig`` (timm argument in brackets):
    ``attention_type`` ("eva" = EvaAttention: key without bias; "rope" = AttentionRope), ``qkv_fused``,
    ``num_key_value_heads`` [num_kv_heads; an int, or one per block, for grouped-query attention],
    ``scale_attn_inner``, ``scale_mlp_norm`` [scale_mlp], ``attn_only_layer_scale``, ``post_norm``
    [use_post_norm], ``pre_norm`` [use_pre_transformer_norm], ``final_norm`` [use_post_transformer_norm],
    ``fc_norm`` [use_fc_norm], ``attn_pool_num_heads``, ``attn_pool_intermediate_size``, and the RoPE:
    ``rope_type`` (None, "cat" = EVA02/PE, "dinov3", "mixed" = RoPE-Mixed), ``rope_temperature``,
    ``rope_grid_offset``, ``rope_grid_indexing``, ``rope_rotate_half``, ``rope_ref_grid`` [ref_feat_shape],
    ``rope_normalize_coords``, and DINOv3's training-time ``rope_shift_coords``/``rope_jitter_coords``/
    ``rope_rescale_coords``.

    ``pooler_output`` follows ``global_pool``; DINOv3 conversions set ``"token"`` (the normed CLS token, as
    upstream DINOv3 and transformers' DINOv3ViTModel give it). ``head_pooling="mean"`` keeps the avg view.
    """

    model_type = "vitzoo_eva"

    def __init__(
        self,
        image_size: int | list[int] = 224,
        patch_size: int | list[int] = 16,
        num_channels: int = 3,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        num_key_value_heads: int | list[int] | None = None,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        mlp_type: str = "mlp",
        norm_type: str = "layernorm",
        layer_norm_eps: float = 1e-6,
        attention_type: str = "eva",
        qkv_fused: bool = True,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        scale_attn_inner: bool = False,
        scale_mlp_norm: bool = False,
        layer_scale_init_value: float | None = None,
        attn_only_layer_scale: bool = False,
        post_norm: bool = False,
        class_token: bool = True,
        num_register_tokens: int = 0,
        use_pos_embed: bool = True,
        no_embed_class: bool = False,
        pre_norm: bool = False,
        final_norm: bool = True,
        fc_norm: bool = False,
        global_pool: str = "token",
        attn_pool_num_heads: int | None = None,
        attn_pool_intermediate_size: int | None = None,
        rope_type: str | None = None,
        rope_temperature: float = 10000.0,
        rope_grid_offset: float = 0.0,
        rope_grid_indexing: str = "ij",
        rope_rotate_half: bool = False,
        rope_ref_grid: list[int] | None = None,
        rope_normalize_coords: str = "separate",
        rope_shift_coords: float | None = None,
        rope_jitter_coords: float | None = None,
        rope_rescale_coords: float | None = None,
        attention_dropout: float = 0.0,
        hidden_dropout_prob: float = 0.0,
        drop_path_rate: float = 0.0,
        initializer_range: float = 0.02,
        head_type: str = "linear",
        head_pooling: str | None = None,
        head_hidden_sizes: list[int] | None = None,
        head_act: str = "gelu",
        head_dropout: float = 0.0,
        head_norm: bool = False,
        freeze_backbone: bool = False,
        out_features: list[str] | None = None,
        out_indices: list[int] | None = None,
        apply_layernorm: bool = True,
        reshape_hidden_states: bool = True,
        **kwargs,
    ) -> None:
        check_choice("attention_type", attention_type, ATTENTION_TYPES)
        check_choice("rope_type", rope_type, ROPE_TYPES)
        check_choice("rope_grid_indexing", rope_grid_indexing, GRID_INDEXING)
        check_choice("rope_normalize_coords", rope_normalize_coords, COORD_NORMALIZATIONS)
        if rope_type == "mixed" and rope_rotate_half:
            raise ValueError("rope_type='mixed' uses the interleaved layout: set rope_rotate_half=False.")
        if isinstance(num_key_value_heads, list) and len(num_key_value_heads) != num_hidden_layers:
            raise ValueError(
                f"num_key_value_heads lists {len(num_key_value_heads)} values for {num_hidden_layers} blocks."
            )
        grouped = num_key_value_heads is not None and num_key_value_heads != num_attention_heads
        if grouped and (qkv_fused or attention_type != "rope"):
            raise ValueError("Grouped-query attention needs attention_type='rope' and qkv_fused=False.")
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.mlp_type = mlp_type
        self.norm_type = norm_type
        self.layer_norm_eps = layer_norm_eps
        self.attention_type = attention_type
        self.qkv_fused = qkv_fused
        self.qkv_bias = qkv_bias
        self.qk_norm = qk_norm
        self.scale_attn_inner = scale_attn_inner
        self.scale_mlp_norm = scale_mlp_norm
        self.layer_scale_init_value = layer_scale_init_value
        self.attn_only_layer_scale = attn_only_layer_scale
        self.post_norm = post_norm
        self.class_token = class_token
        self.num_register_tokens = num_register_tokens
        self.use_pos_embed = use_pos_embed
        self.no_embed_class = no_embed_class
        self.patch_embed_norm = False
        self.pre_norm = pre_norm
        self.final_norm = final_norm
        self.fc_norm = fc_norm
        self.global_pool = global_pool
        # timm's Eva attention pool reads the whole sequence; its avg/max pools skip the prefix tokens.
        self.pool_include_prefix = global_pool == "map"
        self.attn_pool_num_heads = attn_pool_num_heads
        self.attn_pool_intermediate_size = attn_pool_intermediate_size
        self.rope_type = rope_type
        self.rope_temperature = rope_temperature
        self.rope_grid_offset = rope_grid_offset
        self.rope_grid_indexing = rope_grid_indexing
        self.rope_rotate_half = rope_rotate_half
        self.rope_ref_grid = list(rope_ref_grid) if rope_ref_grid is not None else None
        self.rope_normalize_coords = rope_normalize_coords
        self.rope_shift_coords = rope_shift_coords
        self.rope_jitter_coords = rope_jitter_coords
        self.rope_rescale_coords = rope_rescale_coords
        self.attention_dropout = attention_dropout
        self.hidden_dropout_prob = hidden_dropout_prob
        self.drop_path_rate = drop_path_rate
        self.initializer_range = initializer_range
        set_head_options(
            self, head_type, head_pooling, head_hidden_sizes, head_act, head_dropout, head_norm, freeze_backbone
        )
        set_backbone_options(self, out_features, out_indices, apply_layernorm, reshape_hidden_states)
        check_encoder(self)
        kwargs.setdefault("auto_map", auto_map("eva", "VitzooEvaConfig", "VitzooEva"))
        super().__init__(**kwargs)

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.class_token) + self.num_register_tokens

    def kv_heads(self, layer: int) -> int:
        heads = self.num_key_value_heads
        if isinstance(heads, list):
            heads = heads[layer]
        return heads or self.num_attention_heads


__all__ = ["VitzooEvaConfig"]
