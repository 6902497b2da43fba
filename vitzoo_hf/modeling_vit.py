"""The ``vitzoo_vit`` family: timm's VisionTransformer line as transformers models.

Numerically equal to timm (``forward_features``, pre-logits, logits, ``forward_intermediates``) on the same
weights. Ships as Hub remote code: imports torch, transformers and sibling files only.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BackboneOutput, BaseModelOutputWithPooling, ImageClassifierOutput
from transformers.modeling_utils import PreTrainedModel

try:  # transformers >= 5
    from transformers.backbone_utils import BackboneMixin
except ImportError:  # pragma: no cover - transformers 4.x
    from transformers.utils.backbone_utils import BackboneMixin

from .configuration_vit import VitzooViTConfig
from .heads import ClassifierHead, freeze, pool_tokens, pooled_width
from .layers import (
    MLP_TYPES,
    AttentionPoolLatent,
    DropPath,
    LayerScale,
    PatchEmbed,
    SelfAttention,
    build_norm,
    check_pixel_values,
    init_trunc_normal,
    resample_abs_pos_embed,
    to_2tuple,
)


class VitzooViTEmbeddings(nn.Module):
    """Patch embedding, prefix tokens (class, distillation, registers) and absolute position embedding."""

    def __init__(self, config: VitzooViTConfig) -> None:
        super().__init__()
        self.config = config
        self.image_size = to_2tuple(config.image_size)
        patch_size = to_2tuple(config.patch_size)
        self.grid_size = (self.image_size[0] // patch_size[0], self.image_size[1] // patch_size[1])
        dim = config.hidden_size
        norm = build_norm(config.norm_type, dim, config.layer_norm_eps) if config.patch_embed_norm else None
        # CLIP-style pre-norm models have no patch-embed bias (timm: bias=not pre_norm).
        self.patch_embed = PatchEmbed(patch_size, config.num_channels, dim, bias=not config.pre_norm, norm=norm)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if config.class_token else None
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim)) if config.distilled else None
        regs = config.num_register_tokens
        self.reg_token = nn.Parameter(torch.zeros(1, regs, dim)) if regs else None
        num_patches = self.grid_size[0] * self.grid_size[1]
        self.num_embedded_prefix = 0 if config.no_embed_class else config.num_prefix_tokens
        length = num_patches + self.num_embedded_prefix
        self.pos_embed = nn.Parameter(torch.zeros(1, length, dim)) if config.use_pos_embed else None
        self.pos_drop = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        check_pixel_values(pixel_values, self.config.num_channels)
        height, width = pixel_values.shape[-2:]
        if not interpolate_pos_encoding and (height, width) != self.image_size:
            raise ValueError(
                f"Input image size ({height}x{width}) doesn't match the model ({self.image_size[0]}x"
                f"{self.image_size[1]}). Pass interpolate_pos_encoding=True to run at another size, or resize the "
                "images (the model's image processor does)."
            )
        x, grid = self.patch_embed(pixel_values)
        batch = x.shape[0]
        prefix = [t.expand(batch, -1, -1) for t in (self.cls_token, self.dist_token, self.reg_token) if t is not None]
        pos_embed = self.pos_embed
        if pos_embed is not None:
            pos_embed = resample_abs_pos_embed(pos_embed, grid, self.grid_size, self.num_embedded_prefix)
        if pos_embed is not None and self.config.no_embed_class:
            x = x + pos_embed  # DeiT3 / big_vision: prefix tokens get no position
        x = torch.cat([*prefix, x], dim=1)
        if pos_embed is not None and not self.config.no_embed_class:
            x = x + pos_embed
        return self.pos_drop(x), grid


class VitzooViTLayer(GradientCheckpointingLayer):
    """timm ``Block`` (pre-norm residuals with optional LayerScale) or ``ResPostBlock`` (norm after each branch)."""

    def __init__(self, config: VitzooViTConfig, drop_path: float = 0.0) -> None:
        super().__init__()
        dim, eps, norm_type = config.hidden_size, config.layer_norm_eps, config.norm_type
        head_dim = dim // config.num_attention_heads
        self.res_post = config.block_type == "res_post"
        self.norm1 = build_norm(norm_type, dim, eps)
        self.attn = SelfAttention(
            config,
            dim,
            config.num_attention_heads,
            qkv_bias=config.qkv_bias,
            proj_bias=config.proj_bias,
            qk_norm=build_norm(norm_type, head_dim, eps) if config.qk_norm else None,
            k_norm=build_norm(norm_type, head_dim, eps) if config.qk_norm else None,
            out_norm=build_norm(norm_type, dim, eps) if config.scale_attn_norm else None,
        )
        init_value = config.layer_scale_init_value
        self.ls1 = LayerScale(dim, init_value) if init_value and not self.res_post else nn.Identity()
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = build_norm(norm_type, dim, eps)
        mlp_hidden = config.intermediate_size
        mlp_norm_width = mlp_hidden // 2 if config.mlp_type == "glu_packed" else mlp_hidden
        self.mlp = MLP_TYPES[config.mlp_type](
            dim,
            mlp_hidden,
            config.hidden_act,
            bias=config.proj_bias,
            norm=build_norm(norm_type, mlp_norm_width, eps) if config.scale_mlp_norm else None,
            drop=config.hidden_dropout_prob,
        )
        self.ls2 = LayerScale(dim, init_value) if init_value and not self.res_post else nn.Identity()
        self.drop_path2 = DropPath(drop_path)

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.res_post:
            attn, weights = self.attn(hidden_states, output_attentions)
            hidden_states = hidden_states + self.drop_path1(self.norm1(attn))
            return hidden_states + self.drop_path2(self.norm2(self.mlp(hidden_states))), weights
        attn, weights = self.attn(self.norm1(hidden_states), output_attentions)
        hidden_states = hidden_states + self.drop_path1(self.ls1(attn))
        hidden_states = hidden_states + self.drop_path2(self.ls2(self.mlp(self.norm2(hidden_states))))
        return hidden_states, weights


class VitzooViTPreTrainedModel(PreTrainedModel):
    config_class = VitzooViTConfig
    config: VitzooViTConfig
    base_model_prefix = "vit"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["VitzooViTEmbeddings", "VitzooViTLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # Loading a classification folder into the headless classes leaves the head out, by design.
    _keys_to_ignore_on_load_unexpected = [r"^head\.", r"^head_dist\.", r"^head_pool\."]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Covers every parameter (the loader calls it only for weights missing from a checkpoint)."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init_trunc_normal(init, module.weight, std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
            if module.weight is not None:
                init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
        elif isinstance(module, VitzooViTEmbeddings):
            for token in (module.cls_token, module.reg_token):
                if token is not None:
                    init.normal_(token, std=1e-6)
            for table in (module.dist_token, module.pos_embed):
                if table is not None:
                    init_trunc_normal(init, table, std)
        elif isinstance(module, LayerScale):
            init.constant_(module.gamma, module.init_value)
        elif isinstance(module, AttentionPoolLatent):
            init_trunc_normal(init, module.latent, module.latent.shape[-1] ** -0.5)


def _output_flags(
    config: VitzooViTConfig, output_attentions: bool | None, output_hidden_states: bool | None, return_dict: bool | None
) -> tuple[bool, bool, bool]:
    """Per-call flags, falling back to the config as transformers models do."""
    if output_attentions is None:
        output_attentions = getattr(config, "output_attentions", False)
    if output_hidden_states is None:
        output_hidden_states = config.output_hidden_states
    if return_dict is None:
        return_dict = config.return_dict
    return bool(output_attentions), bool(output_hidden_states), return_dict


def _map_pool(config: VitzooViTConfig) -> AttentionPoolLatent:
    """SigLIP's attention-pool head, sized as timm sizes it (MLP width = the blocks' intermediate size)."""
    dim, heads = config.hidden_size, config.num_attention_heads
    norm = build_norm(config.norm_type, dim, config.layer_norm_eps)
    return AttentionPoolLatent(config, dim, heads, config.intermediate_size, norm, config.hidden_act)


def _encode(
    model: VitzooViTModel,
    pixel_values: torch.Tensor,
    interpolate_pos_encoding: bool,
    output_attentions: bool,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], tuple[torch.Tensor, ...], tuple[int, int]]:
    """Embeddings and blocks: last (un-normed) tokens, every block input/output, attentions, patch grid."""
    hidden, grid = model.embeddings(pixel_values, interpolate_pos_encoding)
    hidden = model.norm_pre(hidden)
    states, attentions = [hidden], []
    for block in model.blocks:
        hidden, weights = block(hidden, output_attentions)
        states.append(hidden)
        if output_attentions:
            attentions.append(weights)
    return hidden, tuple(states), tuple(attentions), grid


class VitzooViTModel(VitzooViTPreTrainedModel):
    """``last_hidden_state`` = timm ``forward_features``; ``pooler_output`` = timm pre-logits."""

    def __init__(self, config: VitzooViTConfig) -> None:
        super().__init__(config)
        dim, eps, norm_type = config.hidden_size, config.layer_norm_eps, config.norm_type
        self.embeddings = VitzooViTEmbeddings(config)
        self.norm_pre = build_norm(norm_type, dim, eps) if config.pre_norm else nn.Identity()
        depth = config.num_hidden_layers
        # timm's linear stochastic-depth rule, in plain Python so the model also builds on the meta device.
        rates = [config.drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(VitzooViTLayer(config, rate) for rate in rates)
        use_fc_norm = config.use_fc_norm
        self.norm = build_norm(norm_type, dim, eps) if config.final_norm and not use_fc_norm else nn.Identity()
        self.attn_pool = _map_pool(config) if config.global_pool == "map" else None
        self.fc_norm = build_norm(norm_type, dim, eps) if config.final_norm and use_fc_norm else nn.Identity()
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embed

    def pool(self, last_hidden_state: torch.Tensor) -> torch.Tensor | None:
        """timm ``forward_head(x, pre_logits=True)``: the configured global pool, then fc_norm."""
        config, prefix = self.config, self.config.num_prefix_tokens
        pool = config.global_pool
        if not pool:
            return None
        tokens = last_hidden_state if config.pool_include_prefix else last_hidden_state[:, prefix:]
        if self.attn_pool is not None:
            pooled = self.attn_pool(tokens)
        elif config.distilled:
            pooled = (last_hidden_state[:, 0] + last_hidden_state[:, 1]) / 2
        elif pool == "token":
            pooled = last_hidden_state[:, 0]
        elif pool == "avg":
            pooled = tokens.mean(dim=1)
        elif pool == "max":
            pooled = tokens.amax(dim=1)
        else:  # avgmax
            pooled = 0.5 * (tokens.amax(dim=1) + tokens.mean(dim=1))
        return self.fc_norm(pooled)

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        config = self.config
        output_attentions, output_hidden_states, return_dict = _output_flags(
            config, output_attentions, output_hidden_states, return_dict
        )
        hidden, states, attentions, _ = _encode(self, pixel_values, interpolate_pos_encoding, output_attentions)
        last_hidden_state = self.norm(hidden)
        output = BaseModelOutputWithPooling(
            last_hidden_state=last_hidden_state,
            pooler_output=self.pool(last_hidden_state),
            hidden_states=states if output_hidden_states else None,
            attentions=attentions if output_attentions else None,
        )
        return output if return_dict else output.to_tuple()


class VitzooViTForImageClassification(VitzooViTPreTrainedModel):
    """A configurable head (linear / MLP / none) over a chosen pooling; DeiT keeps its two averaged heads."""

    def __init__(self, config: VitzooViTConfig) -> None:
        super().__init__(config)
        # transformers picks the loss from the class name; pin it so user subclasses keep it too.
        self.loss_type = "ForImageClassification"
        self.num_labels = config.num_labels
        self.vit = VitzooViTModel(config)
        pooling = config.head_pooling
        if pooling in ("cls", "cls_mean") and not config.class_token:
            raise ValueError(
                f"head_pooling={pooling!r} needs a class token but class_token=False; use 'mean' or 'map'."
            )
        # "map" pooling on a model without its own attention pool trains a fresh one here.
        self.head_pool = _map_pool(config) if pooling == "map" and config.global_pool != "map" else None
        head_args = (
            config.head_type,
            pooled_width(pooling, config.hidden_size),
            config.num_labels,
            config.head_hidden_sizes,
            config.head_act,
            config.head_dropout,
            config.head_norm,
        )
        self.head = ClassifierHead(*head_args)
        # DeiT: a second head reads the distillation token and eval logits average both (as timm).
        two_heads = config.distilled and config.head_type == "linear" and pooling is None
        self.head_dist = ClassifierHead(*head_args) if two_heads else None
        self.post_init()
        if config.freeze_backbone:
            self.freeze_backbone()

    def freeze_backbone(self, frozen: bool = True) -> None:
        """Train only the head (linear probing); ``frozen=False`` undoes it."""
        freeze(self.vit, frozen)
        self.config.freeze_backbone = frozen

    def unfreeze_backbone(self) -> None:
        self.freeze_backbone(False)

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.vit(
            pixel_values,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            interpolate_pos_encoding=interpolate_pos_encoding,
            return_dict=True,
        )
        tokens = outputs.last_hidden_state
        if self.head_dist is not None:
            logits = (self.head(tokens[:, 0]) + self.head_dist(tokens[:, 1])) / 2
        else:
            pooling = self.config.head_pooling
            if pooling is None:
                if outputs.pooler_output is None:
                    raise ValueError("global_pool='' gives no pooled output: set head_pooling for the head.")
                pooled = outputs.pooler_output
            else:
                attn_pool = self.head_pool if self.head_pool is not None else self.vit.attn_pool
                pooled = pool_tokens(pooling, tokens, self.config.num_prefix_tokens, self.vit.fc_norm, attn_pool)
            logits = self.head(pooled)
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        output = ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return output if return_dict else output.to_tuple()


class VitzooViTBackbone(BackboneMixin, VitzooViTPreTrainedModel):
    """NCHW feature maps of chosen blocks, equal to timm ``forward_intermediates``.

    Stage ``stem`` is the embedding output, ``stageN`` the output of block N; ``apply_layernorm`` applies
    the model's final norm as timm's ``norm=True`` does.
    """

    def __init__(self, config: VitzooViTConfig) -> None:
        super().__init__(config)
        self.vit = VitzooViTModel(config)
        self.num_features = [config.hidden_size] * (config.num_hidden_layers + 1)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.vit.embeddings.patch_embed

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BackboneOutput | tuple:
        config = self.config
        output_attentions, output_hidden_states, return_dict = _output_flags(
            config, output_attentions, output_hidden_states, return_dict
        )
        _, states, attentions, grid = _encode(self.vit, pixel_values, interpolate_pos_encoding, output_attentions)
        prefix = config.num_prefix_tokens
        maps = []
        for stage, state in zip(self.stage_names, states, strict=True):
            if stage not in self.out_features:
                continue
            if config.apply_layernorm:
                state = self.vit.norm(state)
            if config.reshape_hidden_states:
                state = state[:, prefix:].reshape(state.shape[0], grid[0], grid[1], -1).permute(0, 3, 1, 2)
                state = state.contiguous()
            maps.append(state)
        output = BackboneOutput(
            feature_maps=tuple(maps),
            hidden_states=states if output_hidden_states else None,
            attentions=attentions if output_attentions else None,
        )
        return output if return_dict else output.to_tuple()


__all__ = [
    "VitzooViTBackbone",
    "VitzooViTForImageClassification",
    "VitzooViTModel",
    "VitzooViTPreTrainedModel",
]
