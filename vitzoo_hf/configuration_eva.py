"""Configuration of the ``vitzoo_eva`` family: every timm ``Eva`` (DINOv3, EVA02, RoPE-ViT, PE, Sapiens2...).

The token-family fields (``TokenConfig``) plus what ``Eva`` adds: the attention flavour (EVA's or the RoPE
one, grouped-query heads), attention-only LayerScale, the attention pool's size and the rotary embedding.
"""

from __future__ import annotations

from .attention_layers import MLP_TYPES  # noqa: F401

# Every sibling the config needs is imported here by name: some transformers releases copy only direct imports.
from .common_compat import BackboneConfigMixin  # noqa: F401
from .common_config import check_choice
from .common_heads import HEAD_TYPES  # noqa: F401
from .common_layers import NORMS  # noqa: F401
from .token_config import TokenConfig

ATTENTION_TYPES = ("eva", "rope")
ROPE_TYPES = (None, "cat", "dinov3", "mixed")
GRID_INDEXING = ("ij", "xy")
COORD_NORMALIZATIONS = ("separate", "min", "max")


class VitzooEvaConfig(TokenConfig):
    r"""A timm ``Eva`` model: the token-family fields (see ``TokenConfig``) plus (timm argument in brackets)
    ``attention_type`` ("eva" = EvaAttention: key without bias; "rope" = AttentionRope), ``qkv_fused``,
    ``num_key_value_heads`` [num_kv_heads; an int, or one per block, for grouped-query attention],
    ``attn_only_layer_scale``, ``attn_pool_num_heads``, ``attn_pool_intermediate_size``, and the RoPE:
    ``rope_type`` (None, "cat" = EVA02/PE, "dinov3", "mixed" = RoPE-Mixed), ``rope_temperature``,
    ``rope_grid_offset``, ``rope_grid_indexing``, ``rope_rotate_half``, ``rope_ref_grid`` [ref_feat_shape],
    ``rope_normalize_coords``, and DINOv3's training-time ``rope_shift_coords``/``rope_jitter_coords``/
    ``rope_rescale_coords``. timm's ``Eva`` attention pool reads the prefix tokens too, so
    ``pool_include_prefix`` defaults to ``global_pool == "map"`` here.

    ``pooler_output`` follows ``global_pool``; DINOv3 conversions set ``"token"`` (the normed CLS token, as
    upstream DINOv3 and transformers' DINOv3ViTModel give it). ``head_pooling="avg"`` keeps the avg view.
    """

    model_type = "vitzoo_eva"

    def __init__(
        self,
        attention_type: str = "eva",
        qkv_fused: bool = True,
        num_key_value_heads: int | list[int] | None = None,
        attn_only_layer_scale: bool = False,
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
        **kwargs,
    ) -> None:
        check_choice("attention_type", attention_type, ATTENTION_TYPES)
        check_choice("rope_type", rope_type, ROPE_TYPES)
        check_choice("rope_grid_indexing", rope_grid_indexing, GRID_INDEXING)
        check_choice("rope_normalize_coords", rope_normalize_coords, COORD_NORMALIZATIONS)
        if rope_type == "mixed" and rope_rotate_half:
            raise ValueError("rope_type='mixed' uses the interleaved layout: set rope_rotate_half=False.")
        depth = kwargs.get("num_hidden_layers", 12)
        if isinstance(num_key_value_heads, list) and len(num_key_value_heads) != depth:
            raise ValueError(f"num_key_value_heads lists {len(num_key_value_heads)} values for {depth} blocks.")
        grouped = num_key_value_heads is not None and num_key_value_heads != kwargs.get("num_attention_heads", 12)
        if grouped and (qkv_fused or attention_type != "rope"):
            raise ValueError("Grouped-query attention needs attention_type='rope' and qkv_fused=False.")
        kwargs.setdefault("pool_include_prefix", kwargs.get("global_pool", "token") == "map")
        self.attention_type = attention_type
        self.qkv_fused = qkv_fused
        self.num_key_value_heads = num_key_value_heads
        self.attn_only_layer_scale = attn_only_layer_scale
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
        super().__init__(**kwargs)

    def kv_heads(self, layer: int) -> int:
        heads = self.num_key_value_heads
        if isinstance(heads, list):
            heads = heads[layer]
        return heads or self.num_attention_heads


__all__ = ["VitzooEvaConfig"]
