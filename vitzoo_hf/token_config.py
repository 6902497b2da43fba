"""The config base of the token families (vit, eva): one token sequence through a stack of transformer blocks.

Fields mirror what timm's ``VisionTransformer`` and ``Eva`` constructors share; each is written once here.
"""

from __future__ import annotations

from transformers.activations import ACT2FN

from .attention_layers import MLP_TYPES
from .common_config import VitzooConfig, check_choice
from .common_layers import NORMS

# timm's global_pool names; heads may also read [class token, mean of patches] ("token_avg", DINOv2's probe).
TOKEN_POOLS = ("token", "avg", "avgmax", "max", "map")


def norms_after_pooling(global_pool: str, fc_norm: bool | None) -> bool:
    """timm's rule for a norm after pooling: on for avg/avgmax/max pools unless ``fc_norm`` says otherwise."""
    return global_pool in ("avg", "avgmax", "max") if fc_norm is None else fc_norm


class TokenConfig(VitzooConfig):
    r"""Token-family architecture (timm argument in brackets where the name differs):

    ``patch_size``, ``hidden_size`` [embed_dim], ``num_hidden_layers`` [depth], ``num_attention_heads``,
    ``intermediate_size`` [int(embed_dim * mlp_ratio)], ``hidden_act`` [act_layer], ``mlp_type`` ("mlp",
    "glu_packed" = SwiGLUPacked, "swiglu" = SwiGLU), ``norm_type`` and ``layer_norm_eps`` [norm_layer],
    ``qkv_bias``, ``qk_norm``, ``scale_attn_norm`` (norm inside attention before the output projection),
    ``scale_mlp_norm``, ``layer_scale_init_value`` [init_values], ``post_norm`` (norm after each branch: timm
    ``ResPostBlock``/``EvaBlockPostNorm``), ``class_token``, ``num_register_tokens`` [reg_tokens],
    ``use_pos_embed`` [pos_embed], ``no_embed_class``, ``patch_embed_norm`` [embed_norm_layer], ``pre_norm``,
    ``final_norm`` (norm of the output tokens) and ``fc_norm`` (norm after pooling; None for both: timm's rule,
    avg/avgmax/max pools norm after pooling, the others norm the tokens), ``global_pool`` ("token", "avg",
    "avgmax", "max", "map", ""),
    ``pool_include_prefix`` (pools read the prefix tokens too), ``attention_dropout``, ``hidden_dropout_prob``.

    ``head_pooling``: None, "token", "avg", "avgmax", "max", "map" (over patch tokens) or "token_avg".
    Backbone: ``stage_names`` are "stem" (the embeddings) and "stage1".."stageN" (block i's output);
    ``apply_layernorm`` applies the final norm to each map, ``reshape_hidden_states`` gives NCHW maps (else
    [class token, patch tokens]).
    """

    head_poolings = (*TOKEN_POOLS, "token_avg")

    def __init__(
        self,
        patch_size: int | list[int] = 16,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        mlp_type: str = "mlp",
        norm_type: str = "layernorm",
        layer_norm_eps: float = 1e-6,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        scale_attn_norm: bool = False,
        scale_mlp_norm: bool = False,
        layer_scale_init_value: float | None = None,
        post_norm: bool = False,
        class_token: bool = True,
        num_register_tokens: int = 0,
        use_pos_embed: bool = True,
        no_embed_class: bool = False,
        patch_embed_norm: bool = False,
        pre_norm: bool = False,
        final_norm: bool | None = None,
        fc_norm: bool | None = None,
        global_pool: str = "token",
        pool_include_prefix: bool = False,
        attention_dropout: float = 0.0,
        hidden_dropout_prob: float = 0.0,
        apply_layernorm: bool = True,
        reshape_hidden_states: bool = True,
        **kwargs,
    ) -> None:
        check_choice("global_pool", global_pool, (*TOKEN_POOLS, ""))
        check_choice("mlp_type", mlp_type, MLP_TYPES)
        check_choice("norm_type", norm_type, NORMS)
        check_choice("hidden_act", hidden_act, ACT2FN)
        if hidden_size % num_attention_heads:
            raise ValueError(
                f"hidden_size ({hidden_size}) must be divisible by num_attention_heads ({num_attention_heads})."
            )
        needs_token = {"global_pool": global_pool, "head_pooling": kwargs.get("head_pooling")}
        for name, value in needs_token.items():
            if value in ("token", "token_avg") and not class_token:
                raise ValueError(f"{name}={value!r} needs a class token but class_token=False; choose 'avg' or 'map'.")
        self.patch_size = patch_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.mlp_type = mlp_type
        self.norm_type = norm_type
        self.layer_norm_eps = layer_norm_eps
        self.qkv_bias = qkv_bias
        self.qk_norm = qk_norm
        self.scale_attn_norm = scale_attn_norm
        self.scale_mlp_norm = scale_mlp_norm
        self.layer_scale_init_value = layer_scale_init_value
        self.post_norm = post_norm
        self.class_token = class_token
        self.num_register_tokens = num_register_tokens
        self.use_pos_embed = use_pos_embed
        self.no_embed_class = no_embed_class
        self.patch_embed_norm = patch_embed_norm
        self.pre_norm = pre_norm
        self.final_norm = final_norm
        self.fc_norm = fc_norm
        self.global_pool = global_pool
        self.pool_include_prefix = pool_include_prefix
        self.attention_dropout = attention_dropout
        self.hidden_dropout_prob = hidden_dropout_prob
        self.apply_layernorm = apply_layernorm
        self.reshape_hidden_states = reshape_hidden_states
        super().__init__(**kwargs)

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
