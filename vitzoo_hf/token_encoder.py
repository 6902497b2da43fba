"""The encoder of the token families (vit, eva): embeddings, transformer layers, pooling, the three forwards.

A token family's modeling file builds its modules (attention flavour, MLP, RoPE) and inherits the forward
passes from :class:`TokenModelMixin`, :class:`TokenClassifierMixin` and :class:`TokenBackboneMixin`, so every
token family returns the same outputs with the same options. Fields read here are ``TokenConfig``'s.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers.modeling_outputs import BackboneOutput, BaseModelOutputWithPooling

from .attention_layers import SelfAttention, attention_function
from .common_compat import init
from .common_heads import ImageClassifierMixin
from .common_layers import (
    DropPath,
    LayerScale,
    build_norm,
    check_pixel_values,
    drop_path_rates,
    init_trunc_normal,
    output_flags,
    to_2tuple,
)
from .common_modeling import VitzooBackboneMixin
from .token_layers import AttentionPoolLatent, PatchEmbed, resample_abs_pos_embed


class PatchTokenEmbeddings(nn.Module):
    """Patch embedding, prefix tokens (class, DeiT's distillation token, registers), absolute position embedding."""

    def __init__(self, config, distilled: bool = False) -> None:
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
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim)) if distilled else None
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
        patch = self.patch_embed.patch_size
        # Divisibility first: it is static while exporting, so the size comparison is never traced.
        if (height % patch[0] or width % patch[1]) and (height, width) != self.image_size:
            raise ValueError(
                f"Input size {height}x{width} is not divisible by the patch size {patch[0]}x{patch[1]}; resize or "
                "crop the images to a multiple of it (only the model's own image size may leave a remainder)."
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


class TransformerLayer(nn.Module):
    """Pre-norm block with optional LayerScale (timm ``Block``/``EvaBlock``) or a post-norm one
    (``ResPostBlock``/``EvaBlockPostNorm``: norm after each branch). LayerScale gammas are ``ls1``/``ls2``.

    A family's layer class combines it with transformers' ``GradientCheckpointingLayer`` (listed first), so
    the checkpointing wrapper is installed exactly once around this forward.
    """

    def __init__(
        self,
        config,
        attn: nn.Module,
        mlp: nn.Module,
        drop_path: float,
        layer_scale: float | None,
        mlp_layer_scale: bool = True,
        post_norm: bool = False,
    ) -> None:
        super().__init__()
        dim, eps, norm_type = config.hidden_size, config.layer_norm_eps, config.norm_type
        self.post_norm = post_norm
        self.norm1 = build_norm(norm_type, dim, eps)
        self.attn = attn
        self.ls1 = LayerScale(dim, layer_scale) if layer_scale and not post_norm else nn.Identity()
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = build_norm(norm_type, dim, eps)
        self.mlp = mlp
        use_ls2 = layer_scale and mlp_layer_scale and not post_norm
        self.ls2 = LayerScale(dim, layer_scale) if use_ls2 else nn.Identity()
        self.drop_path2 = DropPath(drop_path)

    def forward(
        self, hidden_states: torch.Tensor, rope: torch.Tensor | None = None, attend: Callable | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.post_norm:
            attn, weights = self.attn(hidden_states, rope, attend)
            hidden_states = hidden_states + self.drop_path1(self.norm1(attn))
            return hidden_states + self.drop_path2(self.norm2(self.mlp(hidden_states))), weights
        attn, weights = self.attn(self.norm1(hidden_states), rope, attend)
        hidden_states = hidden_states + self.drop_path1(self.ls1(attn))
        hidden_states = hidden_states + self.drop_path2(self.ls2(self.mlp(self.norm2(hidden_states))))
        return hidden_states, weights


@torch.no_grad()
def init_token_weights(module: nn.Module, std: float) -> None:
    """Every parameter of the token encoder, through transformers' guarded init functions so that weights
    loaded from a checkpoint are never overwritten (the loader calls this only for missing ones)."""
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        init_trunc_normal(init, module.weight, std)
        if module.bias is not None:
            init.zeros_(module.bias)
    elif isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
        if module.weight is not None:
            init.ones_(module.weight)
        if getattr(module, "bias", None) is not None:
            init.zeros_(module.bias)
    elif isinstance(module, PatchTokenEmbeddings):
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
    elif isinstance(module, SelfAttention) and getattr(module, "q_bias", None) is not None:
        init.zeros_(module.q_bias)
        init.zeros_(module.v_bias)


def map_pool(config, num_heads: int, hidden: int, act: str) -> AttentionPoolLatent:
    """Attention pooling with a latent query (SigLIP / PE "map" head)."""
    dim = config.hidden_size
    norm = build_norm(config.norm_type, dim, config.layer_norm_eps)
    return AttentionPoolLatent(config, dim, num_heads, hidden, norm, act)


def encode(
    model: nn.Module, pixel_values: torch.Tensor, interpolate_pos_encoding: bool, output_attentions: bool
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], tuple[torch.Tensor, ...], tuple[int, int]]:
    """Embeddings and blocks: last (un-normed) tokens, every block input/output, attentions, patch grid.

    The model's position table (``position_table``: a RoPE table, or None) is computed once for the grid; a
    per-block table (RoPE-Mixed) is split across the blocks.
    """
    hidden, grid = model.embeddings(pixel_values, interpolate_pos_encoding)
    rope = model.position_table(grid, hidden.device)
    per_block = rope is not None and rope.ndim == 4
    hidden = model.norm_pre(hidden)
    attend = attention_function(model.config._attn_implementation, output_attentions)
    states, attentions = [hidden], []
    for index, block in enumerate(model.blocks):
        hidden, weights = block(hidden, rope[index] if per_block else rope, attend)
        states.append(hidden)
        if output_attentions:
            attentions.append(weights)
    return hidden, tuple(states), tuple(attentions), grid


def layer_drop_rates(config) -> list[float]:
    return drop_path_rates(config.drop_path_rate, config.num_hidden_layers)


def pool_tokens(
    kind: str,
    last_hidden_state: torch.Tensor,
    num_prefix_tokens: int,
    fc_norm: nn.Module,
    attn_pool: nn.Module | None = None,
    include_prefix: bool = False,
) -> torch.Tensor:
    """timm's ``pool`` then ``fc_norm``, for ``global_pool`` and ``head_pooling`` alike (one vocabulary).

    ``token`` is the class token, ``avg``/``max``/``avgmax`` reduce the patch tokens (with the prefix tokens when
    ``include_prefix``), ``map`` is attention pooling, ``token_avg`` concatenates ``token`` and ``avg`` (DINOv2's
    linear-probe input).
    """
    if kind == "token_avg":
        parts = (pool_tokens(k, last_hidden_state, num_prefix_tokens, fc_norm) for k in ("token", "avg"))
        return torch.cat(list(parts), dim=-1)
    tokens = last_hidden_state if include_prefix else last_hidden_state[:, num_prefix_tokens:]
    if kind == "token":
        pooled = last_hidden_state[:, 0]
    elif kind == "map":
        pooled = attn_pool(tokens)
    elif kind == "avg":
        pooled = tokens.mean(dim=1)
    elif kind == "max":
        pooled = tokens.amax(dim=1)
    elif kind == "avgmax":
        pooled = 0.5 * (tokens.amax(dim=1) + tokens.mean(dim=1))
    else:
        raise ValueError(f"Unknown token pooling {kind!r}; expected token, avg, max, avgmax, map or token_avg.")
    return fc_norm(pooled)


class TokenModelMixin:
    """Forward of a token family's base model: ``last_hidden_state`` = timm ``forward_features``,
    ``pooler_output`` = timm pre-logits. Expects ``embeddings``, ``norm_pre``, ``blocks``, ``norm``, ``attn_pool``,
    ``fc_norm``; a family with rotary positions defines ``position_table``."""

    def position_table(self, grid: tuple[int, int], device: torch.device) -> torch.Tensor | None:
        """The table every block's attention rotates queries and keys by, for this grid (None: no RoPE)."""
        return None

    def pooled_output(self, last_hidden_state: torch.Tensor) -> torch.Tensor | None:
        """timm ``forward_head(x, pre_logits=True)``: the configured global pool, then fc_norm."""
        config = self.config
        if not config.global_pool:
            return None
        prefix, include = config.num_prefix_tokens, config.pool_include_prefix
        return pool_tokens(config.global_pool, last_hidden_state, prefix, self.fc_norm, self.attn_pool, include)

    def get_input_embeddings(self) -> nn.Module:
        """The whole token embedding (patches, prefix tokens, positions): it is a ``_no_split_modules`` unit, and
        FSDP2 under accelerate shards the input embedding as its own unit, which must not sit inside another."""
        return self.embeddings

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        output_attentions, output_hidden_states, return_dict = output_flags(
            self.config, output_attentions, output_hidden_states, return_dict
        )
        hidden, states, attentions, _ = encode(self, pixel_values, interpolate_pos_encoding, output_attentions)
        last_hidden_state = self.norm(hidden)
        output = BaseModelOutputWithPooling(
            last_hidden_state=last_hidden_state,
            pooler_output=self.pooled_output(last_hidden_state),
            hidden_states=states if output_hidden_states else None,
            attentions=attentions if output_attentions else None,
        )
        return output if return_dict else output.to_tuple()


class TokenClassifierMixin(ImageClassifierMixin):
    """``ForImageClassification`` of a token family: every ``head_pooling`` reads the output tokens."""

    def init_token_head(self, config, make_attn_pool: Callable[[], nn.Module]) -> None:
        """``make_attn_pool`` builds a fresh attention pool, trained for ``head_pooling="map"`` on a model
        that has none of its own."""
        pooling = config.head_pooling
        self.head_pool = make_attn_pool() if pooling == "map" and config.global_pool != "map" else None
        self.init_head(config, 2 * config.hidden_size if pooling == "token_avg" else config.hidden_size)

    def pool_for_head(self, outputs: BaseModelOutputWithPooling, pooling: str) -> torch.Tensor:
        encoder = self.base_model
        attn_pool = self.head_pool if self.head_pool is not None else encoder.attn_pool
        prefix = self.config.num_prefix_tokens
        return pool_tokens(pooling, outputs.last_hidden_state, prefix, encoder.fc_norm, attn_pool)


class TokenBackboneMixin(VitzooBackboneMixin):
    """NCHW feature maps of chosen blocks, equal to timm ``forward_intermediates``.

    Stage ``stem`` is the embedding output, ``stageN`` the output of block N; ``apply_layernorm`` applies the
    model's final norm as timm's ``norm=True`` does. The base model sits at ``base_model_prefix``.
    """

    def init_token_backbone(self, config) -> None:
        """Per-stage widths; token maps (``reshape_hidden_states=False``) need a class token to lead them."""
        if not config.reshape_hidden_states and not config.class_token:
            raise ValueError(
                "reshape_hidden_states=False returns [class token, patch tokens] per stage (the layout DPT and "
                "DepthAnything reassemble), but this model has no class token. Use reshape_hidden_states=True for "
                "NCHW maps (UperNet, Mask2Former, DETR)."
            )
        self.init_backbone(config, [config.hidden_size] * (config.num_hidden_layers + 1))

    def get_input_embeddings(self) -> nn.Module:
        return self.base_model.embeddings

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BackboneOutput | tuple:
        config, encoder = self.config, self.base_model
        output_attentions, output_hidden_states, return_dict = output_flags(
            config, output_attentions, output_hidden_states, return_dict
        )
        _, states, attentions, grid = encode(encoder, pixel_values, interpolate_pos_encoding, output_attentions)
        prefix = config.num_prefix_tokens
        maps = []
        for stage, state in zip(self.stage_names, states, strict=True):
            if stage not in self.out_features:
                continue
            if config.apply_layernorm:
                state = encoder.norm(state)
            if config.reshape_hidden_states:
                state = state[:, prefix:].reshape(*state.shape[:1], *grid, state.shape[-1]).permute(0, 3, 1, 2)
                state = state.contiguous()
            elif prefix > 1:  # [class token, patches]: other prefix tokens would shift DPT's reassemble grid
                state = torch.cat([state[:, :1], state[:, prefix:]], dim=1)
            maps.append(state)
        output = BackboneOutput(
            feature_maps=tuple(maps),
            hidden_states=states if output_hidden_states else None,
            attentions=attentions if output_attentions else None,
        )
        return output if return_dict else output.to_tuple()
