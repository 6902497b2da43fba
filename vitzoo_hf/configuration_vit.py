"""Configuration of the ``vitzoo_vit`` family: every timm ``VisionTransformer``/``VisionTransformerDistilled``.

One config drives ViT, DeiT (distilled), DeiT3, DINO, DINOv2 (+registers), CLIP, SigLIP/SigLIP2, AIMv2,
BEiT3-style and I-JEPA/MAE variants through flags that mirror timm's constructor arguments.
"""

from __future__ import annotations

from transformers import PretrainedConfig

from .compat import BackboneConfigMixin
from .config_common import auto_map, check_choice, check_encoder, set_backbone_options, set_head_options

BLOCK_TYPES = ("pre_norm", "res_post")


class VitzooViTConfig(BackboneConfigMixin, PretrainedConfig):
    r"""Architecture of a timm Vision Transformer, plus the classification head and backbone options.

    Architecture (timm argument in brackets): ``image_size`` [img_size], ``patch_size``, ``num_channels``
    [in_chans], ``hidden_size`` [embed_dim], ``num_hidden_layers`` [depth], ``num_attention_heads``,
    ``intermediate_size`` [int(embed_dim * mlp_ratio)], ``hidden_act`` [act_layer], ``norm_type`` and
    ``layer_norm_eps`` [norm_layer], ``qkv_bias``, ``qk_norm``, ``proj_bias``, ``scale_attn_norm``,
    ``scale_mlp_norm``, ``mlp_type`` ("mlp", "glu_packed" = SwiGLUPacked, "swiglu" = SwiGLU),
    ``layer_scale_init_value`` [init_values], ``block_type`` ("pre_norm" = Block, "res_post" = ResPostBlock),
    ``class_token``, ``num_register_tokens`` [reg_tokens], ``distilled`` (DeiT distillation token and head),
    ``use_pos_embed`` [pos_embed], ``no_embed_class``, ``patch_embed_norm`` [embed_norm_layer], ``pre_norm``,
    ``final_norm``, ``fc_norm``, ``global_pool`` ("token", "avg", "avgmax", "max", "map", ""),
    ``pool_include_prefix``.

    Head of ``ForImageClassification``: ``head_type`` ("linear", "mlp", "none"), ``head_pooling`` (None = the
    model's own pooler output, "cls", "mean", "cls_mean", "map"), ``head_hidden_sizes``, ``head_act``,
    ``head_dropout``, ``head_norm``, ``freeze_backbone``; the loss follows ``problem_type``.

    Backbone: ``out_features``/``out_indices`` over ``stage_names`` ("stem", "stage1".."stageN", stage i being
    the output of block i), ``apply_layernorm`` (timm's final norm on each map), ``reshape_hidden_states``.
    """

    model_type = "vitzoo_vit"

    def __init__(
        self,
        image_size: int | list[int] = 224,
        patch_size: int | list[int] = 16,
        num_channels: int = 3,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        norm_type: str = "layernorm",
        layer_norm_eps: float = 1e-6,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        proj_bias: bool = True,
        scale_attn_norm: bool = False,
        scale_mlp_norm: bool = False,
        mlp_type: str = "mlp",
        layer_scale_init_value: float | None = None,
        block_type: str = "pre_norm",
        class_token: bool = True,
        num_register_tokens: int = 0,
        distilled: bool = False,
        use_pos_embed: bool = True,
        no_embed_class: bool = False,
        patch_embed_norm: bool = False,
        pre_norm: bool = False,
        final_norm: bool = True,
        fc_norm: bool | None = None,
        global_pool: str = "token",
        pool_include_prefix: bool = False,
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
        check_choice("block_type", block_type, BLOCK_TYPES)
        if distilled and (not class_token or global_pool != "token" or num_register_tokens):
            raise ValueError(
                "distilled=True (DeiT) reads the class and distillation tokens: it needs class_token=True, "
                "global_pool='token' and no register tokens."
            )
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.norm_type = norm_type
        self.layer_norm_eps = layer_norm_eps
        self.qkv_bias = qkv_bias
        self.qk_norm = qk_norm
        self.proj_bias = proj_bias
        self.scale_attn_norm = scale_attn_norm
        self.scale_mlp_norm = scale_mlp_norm
        self.mlp_type = mlp_type
        self.layer_scale_init_value = layer_scale_init_value
        self.block_type = block_type
        self.class_token = class_token
        self.num_register_tokens = num_register_tokens
        self.distilled = distilled
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
        self.drop_path_rate = drop_path_rate
        self.initializer_range = initializer_range
        set_head_options(
            self, head_type, head_pooling, head_hidden_sizes, head_act, head_dropout, head_norm, freeze_backbone
        )
        set_backbone_options(self, out_features, out_indices, apply_layernorm, reshape_hidden_states)
        check_encoder(self)
        kwargs.setdefault("auto_map", auto_map("vit", "VitzooViTConfig", "VitzooViT"))
        super().__init__(**kwargs)

    @property
    def num_prefix_tokens(self) -> int:
        """Class, distillation and register tokens in front of the patch tokens."""
        return int(self.class_token) + int(self.distilled) + self.num_register_tokens

    @property
    def use_fc_norm(self) -> bool:
        """timm moves the final norm after pooling for avg/max pools unless fc_norm says otherwise."""
        return self.global_pool in ("avg", "avgmax", "max") if self.fc_norm is None else self.fc_norm


__all__ = ["VitzooViTConfig"]
