"""The config base of the token families (vit, eva): one token sequence through a stack of transformer blocks.

Fields mirror what timm's ``VisionTransformer`` and ``Eva`` constructors share; each is declared once here.
"""

from __future__ import annotations

from transformers.activations import ACT2FN

from .attention_layers import MLP_TYPES
from .common_config import Field, VitzooConfig
from .common_layers import NORMS

# timm's global_pool names; heads may also read [class token, mean of patches] ("token_avg", DINOv2's probe).
TOKEN_POOLS = ("token", "avg", "avgmax", "max", "map")


def norms_after_pooling(global_pool: str, fc_norm: bool | None) -> bool:
    """timm's rule for a norm after pooling: on for avg/avgmax/max pools unless ``fc_norm`` says otherwise."""
    return global_pool in ("avg", "avgmax", "max") if fc_norm is None else fc_norm


class TokenConfig(VitzooConfig):
    r"""Token-family architecture. ``head_pooling``: None, "token", "avg", "avgmax", "max", "map" (over patch
    tokens) or "token_avg". Backbone: ``stage_names`` are "stem" (the embeddings) and "stage1".."stageN" (block i's
    output)."""

    head_poolings = (*TOKEN_POOLS, "token_avg")
    config_fields = dict(
        patch_size=Field(16, "patch side in pixels, or [height, width]"),
        hidden_size=Field(768, "token width [embed_dim]"),
        num_hidden_layers=Field(12, "blocks [depth]"),
        num_attention_heads=Field(12, "attention heads [num_heads]"),
        intermediate_size=Field(3072, "MLP width [int(embed_dim * mlp_ratio)]; packed GLU: both halves"),
        hidden_act=Field("gelu", "MLP activation [act_layer]", ACT2FN),
        mlp_type=Field("mlp", 'MLP: "mlp", "glu_packed" (SwiGLUPacked) or "swiglu" (SwiGLU) [mlp_layer]', MLP_TYPES),
        norm_type=Field("layernorm", "norm layer [norm_layer]", NORMS),
        layer_norm_eps=Field(1e-6, "norm epsilon [norm_layer]"),
        qkv_bias=Field(True, "biases of the query/key/value projections"),
        qk_norm=Field(False, "a norm on queries and keys"),
        scale_attn_norm=Field(False, "a norm inside attention before its output projection"),
        scale_mlp_norm=Field(False, "a norm inside the MLP before its output projection"),
        layer_scale_init_value=Field(None, "LayerScale's initial value; None: no LayerScale [init_values]"),
        post_norm=Field(False, "norm after each branch (timm ResPostBlock / EvaBlockPostNorm)"),
        class_token=Field(True, "a class token in front of the patch tokens"),
        num_register_tokens=Field(0, "register tokens after the class token [reg_tokens]"),
        use_pos_embed=Field(True, "a learned absolute position embedding [pos_embed]"),
        no_embed_class=Field(False, "prefix tokens get no position embedding"),
        patch_embed_norm=Field(False, "a norm after the patch embedding [embed_norm_layer]"),
        pre_norm=Field(False, "a norm before the blocks"),
        final_norm=Field(None, "a norm of the output tokens; None: timm's rule (where there is no fc_norm)"),
        fc_norm=Field(None, "a norm after pooling; None: timm's rule (for avg/avgmax/max pools)"),
        global_pool=Field(
            "token", 'pooler_output: "token", "avg", "avgmax", "max", "map" or "" (none)', (*TOKEN_POOLS, "")
        ),
        pool_include_prefix=Field(False, "pools read the prefix tokens too"),
        attention_dropout=Field(0.0, "dropout of the attention probabilities [attn_drop_rate]"),
        hidden_dropout_prob=Field(0.0, "dropout after projections [proj_drop_rate]"),
        apply_layernorm=Field(True, "backbone: the final norm on each map"),
        reshape_hidden_states=Field(True, "backbone: NCHW maps (else [class token, patch tokens])"),
    )

    def check_fields(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})."
            )
        for name in ("global_pool", "head_pooling"):
            value = getattr(self, name)
            if value in ("token", "token_avg") and not self.class_token:
                raise ValueError(f"{name}={value!r} needs a class token but class_token=False; choose 'avg' or 'map'.")
        super().check_fields()

    def backbone_stage_names(self) -> list[str]:
        return ["stem"] + [f"stage{i}" for i in range(1, self.num_hidden_layers + 1)]

    @property
    def num_prefix_tokens(self) -> int:
        """Class and register tokens in front of the patch tokens (a family may add its own)."""
        return int(self.class_token) + self.num_register_tokens

    @property
    def use_fc_norm(self) -> bool:
        """A norm after pooling: by timm's rule, for avg/max pools unless ``fc_norm`` says otherwise."""
        return norms_after_pooling(self.global_pool, self.fc_norm)

    @property
    def use_final_norm(self) -> bool:
        """A norm of the output tokens: by timm's rule, where there is no norm after pooling."""
        return not self.use_fc_norm if self.final_norm is None else self.final_norm

    @classmethod
    def upgrade_saved_fields(cls, fields: dict) -> dict:
        """Release 0.1 named the attention's inner norm ``scale_attn_inner`` in eva configs and the post-norm
        block ``block_type="res_post"`` in vit configs."""
        if "scale_attn_inner" in fields:
            fields["scale_attn_norm"] = fields.pop("scale_attn_inner")
        if "block_type" in fields:
            fields["post_norm"] = fields.pop("block_type") == "res_post"
        return super().upgrade_saved_fields(fields)


__all__ = ["TOKEN_POOLS", "TokenConfig", "norms_after_pooling"]
