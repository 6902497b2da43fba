"""Configuration of the ``vitzoo_eva`` family: every timm ``Eva`` (DINOv3, EVA02, RoPE-ViT, PE, Sapiens2...).

The token-family fields (``TokenConfig``) plus what ``Eva`` adds: the attention flavour (EVA's or the RoPE
one, grouped-query heads), attention-only LayerScale, the attention pool's size and the rotary embedding.
"""

from __future__ import annotations

from .attention_layers import MLP_TYPES  # noqa: F401

# Every sibling the config needs is imported here by name: some transformers releases copy only direct imports.
from .common_compat import BackboneConfigMixin  # noqa: F401
from .common_config import Field, VitzooConfig  # noqa: F401
from .common_heads import HEAD_TYPES  # noqa: F401
from .common_layers import NORMS  # noqa: F401
from .token_config import TokenConfig

ATTENTION_TYPES = ("eva", "rope")
ROPE_TYPES = (None, "cat", "dinov3", "mixed")
GRID_INDEXING = ("ij", "xy")
COORD_NORMALIZATIONS = ("separate", "min", "max")


class VitzooEvaConfig(TokenConfig):
    r"""A timm ``Eva`` model: the token-family fields plus Eva's own. ``pooler_output`` follows ``global_pool``;
    DINOv3 conversions set ``"token"`` (the normed CLS token, as upstream DINOv3 and transformers' DINOv3ViTModel
    give it). ``head_pooling="avg"`` keeps the avg view."""

    model_type = "vitzoo_eva"
    config_fields = dict(
        attention_type=Field(
            "eva", '"eva" (EvaAttention: key without bias) or "rope" (AttentionRope)', ATTENTION_TYPES
        ),
        qkv_fused=Field(True, "one qkv projection (else q/k/v apart)"),
        num_key_value_heads=Field(None, "grouped-query heads: an int, or one per block [num_kv_heads]"),
        attn_only_layer_scale=Field(False, "LayerScale on the attention branch only"),
        attn_pool_num_heads=Field(None, "heads of the attention pool; None: num_attention_heads"),
        attn_pool_intermediate_size=Field(None, "MLP width of the attention pool; None: intermediate_size"),
        rope_type=Field(None, 'rotary embedding: None, "cat" (EVA02/PE), "dinov3", "mixed" (RoPE-Mixed)', ROPE_TYPES),
        rope_temperature=Field(10000.0, "RoPE base"),
        rope_grid_offset=Field(0.0, "offset of the RoPE patch coordinates"),
        rope_grid_indexing=Field("ij", "RoPE grid order", GRID_INDEXING),
        rope_rotate_half=Field(False, "rotate halves (else interleaved pairs)"),
        rope_ref_grid=Field(None, "the grid RoPE coordinates are scaled to [ref_feat_shape]"),
        rope_normalize_coords=Field("separate", "DINOv3 coordinate normalisation", COORD_NORMALIZATIONS),
        rope_shift_coords=Field(None, "DINOv3 training-time coordinate shift"),
        rope_jitter_coords=Field(None, "DINOv3 training-time coordinate jitter"),
        rope_rescale_coords=Field(None, "DINOv3 training-time coordinate rescale"),
        # timm's Eva attention pool reads the prefix tokens too
        pool_include_prefix=Field(lambda config: config.global_pool == "map", "pools read the prefix tokens too"),
    )

    def check_fields(self) -> None:
        if self.rope_type == "mixed" and self.rope_rotate_half:
            raise ValueError("rope_type='mixed' uses the interleaved layout: set rope_rotate_half=False.")
        heads, depth = self.num_key_value_heads, self.num_hidden_layers
        if isinstance(heads, list) and len(heads) != depth:
            raise ValueError(f"num_key_value_heads lists {len(heads)} values for {depth} blocks.")
        grouped = heads is not None and heads != self.num_attention_heads
        if grouped and (self.qkv_fused or self.attention_type != "rope"):
            raise ValueError("Grouped-query attention needs attention_type='rope' and qkv_fused=False.")
        super().check_fields()

    def kv_heads(self, layer: int) -> int:
        heads = self.num_key_value_heads
        if isinstance(heads, list):
            heads = heads[layer]
        return heads or self.num_attention_heads


__all__ = ["VitzooEvaConfig"]
