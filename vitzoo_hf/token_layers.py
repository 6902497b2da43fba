"""Transformer building blocks of the token families (vit, eva): patches, MLPs, attention, attention pooling.

Module and parameter names mirror timm's (``qkv``, ``proj``, ``fc1``...) so that converting a timm state dict is
mostly renaming. See docs/ARCHITECTURE.md for how the shared files are grouped.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .common_compat import attention_interface
from .common_layers import Activation


def rotate(x: torch.Tensor, rope: torch.Tensor, rotate_half: bool) -> torch.Tensor:
    """Apply a [sin, cos] table to the last dimension of ``x`` (timm's ``apply_rot_embed_cat``)."""
    sin, cos = rope.chunk(2, dim=-1)
    if rotate_half:
        first, second = x.chunk(2, dim=-1)
        turned = torch.cat([-second, first], dim=-1)
    else:
        turned = torch.stack([-x[..., 1::2], x[..., ::2]], dim=-1).reshape(x.shape)
    return (x * cos + turned * sin).to(x.dtype)


def _exporting() -> bool:
    """True while torch.export traces (torch >= 2.7 reports it; earlier versions cannot export dynamic sizes)."""
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return bool(is_exporting and is_exporting())


def resample_abs_pos_embed(
    pos_embed: torch.Tensor, new_size: tuple[int, int], old_size: tuple[int, int], num_prefix_tokens: int
) -> torch.Tensor:
    """Resize a (1, prefix + H*W, C) table to a new grid the way timm does it.

    Antialiased bicubic in float32, with prefix-token (class/register) entries kept out of the
    interpolation. transformers' native ports skip the antialias, which is why they drift from timm.
    """
    if tuple(new_size) == tuple(old_size) and not _exporting():
        return pos_embed  # an exported graph keeps the resampling, so it serves every input size
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dim = grid.shape[-1]
    grid = grid.float().reshape(1, old_size[0], old_size[1], dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=tuple(new_size), mode="bicubic", antialias=True, align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)


class PatchEmbed(nn.Module):
    """Non-overlapping patches by a strided convolution, output (B, H*W, C) plus the grid size."""

    def __init__(
        self, patch_size: tuple[int, int], num_channels: int, dim: int, bias: bool, norm: nn.Module | None
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(num_channels, dim, kernel_size=patch_size, stride=patch_size, bias=bias)
        self.norm = norm if norm is not None else nn.Identity()

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """A remainder of pixels past the last whole patch is dropped, as timm's strict-size patch embed does
        at the native size (SigLIP so400m/14 at 384 runs on a 27x27 grid)."""
        x = self.proj(pixel_values.to(self.proj.weight.dtype))
        grid = (x.shape[-2], x.shape[-1])
        return self.norm(x.flatten(2).transpose(1, 2)), grid


class Mlp(nn.Module):
    """fc1 -> act -> (norm) -> fc2, timm's ``Mlp``."""

    def __init__(self, dim: int, hidden: int, act: str, bias: bool, norm: nn.Module | None, drop: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.act = Activation(act, inplace=True)
        self.norm = norm if norm is not None else nn.Identity()
        self.fc2 = nn.Linear(hidden, dim, bias=bias)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.norm(self.drop(self.act(self.fc1(x))))))


class GluMlp(nn.Module):
    """Packed gated MLP (timm ``SwiGLUPacked``/``GluMlp`` with the gate first): one fc1 split in halves."""

    def __init__(self, dim: int, hidden: int, act: str, bias: bool, norm: nn.Module | None, drop: float) -> None:
        super().__init__()
        if hidden % 2:
            raise ValueError(f"A packed GLU MLP needs an even hidden size, got {hidden}.")
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.act = Activation(act, inplace=True)
        self.norm = norm if norm is not None else nn.Identity()
        self.fc2 = nn.Linear(hidden // 2, dim, bias=bias)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.fc1(x).chunk(2, dim=-1)
        return self.drop(self.fc2(self.norm(self.drop(self.act(gate) * value))))


class SwiGLU(nn.Module):
    """Split gated MLP (timm ``SwiGLU``): separate gate (fc1_g) and value (fc1_x) projections."""

    def __init__(self, dim: int, hidden: int, act: str, bias: bool, norm: nn.Module | None, drop: float) -> None:
        super().__init__()
        self.fc1_g = nn.Linear(dim, hidden, bias=bias)
        self.fc1_x = nn.Linear(dim, hidden, bias=bias)
        self.act = Activation(act, inplace=True)
        self.norm = norm if norm is not None else nn.Identity()
        self.fc2 = nn.Linear(hidden, dim, bias=bias)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.fc1_g(x)) * self.fc1_x(x)
        return self.drop(self.fc2(self.norm(self.drop(x))))


MLP_TYPES = {"mlp": Mlp, "glu_packed": GluMlp, "swiglu": SwiGLU}


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention, in timm's order (scale the queries, softmax in the input dtype); the one path
    that can return the attention probabilities."""
    weights = torch.matmul(query * scaling, key.transpose(-2, -1))
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = F.dropout(weights.softmax(dim=-1), p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2), weights


def sdpa_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """torch's SDPA, called directly: transformers' wrapper adds ~16 us of decoder guards (GQA packing, paged
    caches) per layer, which is most of the gap to timm at small batches."""
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling)
    return out.transpose(1, 2), None


def attention_function(implementation: str | None, output_attentions: bool) -> Callable:
    """The attention backend for one forward pass (resolved once, then handed to every block).

    Only eager materialises the probabilities, so asking for them switches this call to eager rather than
    returning ``None`` as sdpa would. Implementations other than eager and sdpa (flash, flex, registered
    custom ones) come from transformers' ``ALL_ATTENTION_FUNCTIONS``.
    """
    if output_attentions or implementation in (None, "eager"):
        return eager_attention_forward
    if implementation == "sdpa":
        return sdpa_attention_forward
    return attention_interface(implementation)


class SelfAttention(nn.Module):
    """Multi-head self-attention covering timm's ``Attention``, ``EvaAttention`` and ``AttentionRope``.

    ``qkv_layout``: ``fused`` (one ``qkv`` Linear), ``fused_qv_bias`` (EVA: bias-free ``qkv`` plus ``q_bias``
    and ``v_bias``, the key has no bias) or ``separate`` (``q_proj``/``k_proj``/``v_proj``, with fewer key/value
    heads for grouped-query attention). A RoPE table rotates queries and keys of the patch tokens only.
    """

    def __init__(
        self,
        config,
        dim: int,
        num_heads: int,
        qkv_bias: bool,
        proj_bias: bool,
        qk_norm: nn.Module | None = None,
        k_norm: nn.Module | None = None,
        out_norm: nn.Module | None = None,
        qkv_layout: str = "fused",
        k_bias: bool = True,
        num_kv_heads: int | None = None,
        num_prefix_tokens: int = 0,
        rotate_half: bool = False,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden_size ({dim}) must be divisible by num_attention_heads ({num_heads}).")
        num_kv_heads = num_kv_heads or num_heads
        if num_heads % num_kv_heads:
            raise ValueError(f"num_attention_heads ({num_heads}) must be a multiple of the key/value heads.")
        self.config = config
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = dim // num_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.qkv_layout = qkv_layout
        self.num_prefix_tokens, self.rotate_half = num_prefix_tokens, rotate_half
        if qkv_layout == "separate":
            kv_dim = self.head_dim * num_kv_heads
            self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
            self.k_proj = nn.Linear(dim, kv_dim, bias=qkv_bias and k_bias)
            self.v_proj = nn.Linear(dim, kv_dim, bias=qkv_bias)
        elif num_kv_heads != num_heads:
            raise ValueError("Grouped-query attention needs separate q/k/v projections (qkv_fused=False).")
        elif qkv_layout == "fused":
            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        elif qkv_layout == "fused_qv_bias":
            self.qkv = nn.Linear(dim, dim * 3, bias=False)
            self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
            self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        else:
            raise ValueError(f"Unknown qkv_layout {qkv_layout!r}; expected 'fused', 'fused_qv_bias' or 'separate'.")
        self.q_norm = qk_norm if qk_norm is not None else nn.Identity()
        self.k_norm = k_norm if k_norm is not None else nn.Identity()
        self.norm = out_norm if out_norm is not None else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(config.hidden_dropout_prob)

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, length, _ = x.shape
        if self.qkv_layout == "separate":
            heads = (self.num_heads, self.num_kv_heads, self.num_kv_heads)
            projections = (self.q_proj, self.k_proj, self.v_proj)
            return tuple(
                proj(x).reshape(batch, length, n, self.head_dim).transpose(1, 2)
                for proj, n in zip(projections, heads, strict=True)
            )
        qkv = self.qkv(x)  # through the module, so LoRA / quantization wrappers of `qkv` take effect
        if self.qkv_layout == "fused_qv_bias" and self.q_bias is not None:
            qkv = qkv + torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
        qkv = qkv.reshape(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return tuple(qkv.unbind(0))

    def _rotate(self, x: torch.Tensor, rope: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        prefix = self.num_prefix_tokens
        rotated = rotate(x[:, :, prefix:], rope, self.rotate_half)
        return torch.cat([x[:, :, :prefix], rotated], dim=2).type_as(like)

    def forward(
        self, hidden_states: torch.Tensor, rope: torch.Tensor | None = None, attend: Callable | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``attend``: the backend for this pass (see ``attention_function``); resolved here if not given."""
        batch, length, dim = hidden_states.shape
        query, key, value = self._project(hidden_states)
        query, key = self.q_norm(query), self.k_norm(key)
        if rope is not None:
            query, key = self._rotate(query, rope, value), self._rotate(key, rope, value)
        if self.num_kv_heads != self.num_heads:
            groups = self.num_heads // self.num_kv_heads
            key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
        if attend is None:
            attend = attention_function(self.config._attn_implementation, False)
        dropout = self.config.attention_dropout if self.training else 0.0
        out, weights = attend(self, query, key, value, None, scaling=self.scaling, dropout=dropout, is_causal=False)
        out = self.norm(out.reshape(batch, length, dim))
        return self.proj_drop(self.proj(out)), weights


class AttentionPoolLatent(nn.Module):
    """Multihead attention pooling with a learned latent query (SigLIP's "map" head, timm's ``attn_pool``)."""

    def __init__(self, config, dim: int, num_heads: int, hidden: int, norm: nn.Module, act: str) -> None:
        super().__init__()
        self.config = config
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.latent = nn.Parameter(torch.zeros(1, 1, dim))
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)
        self.norm = norm
        self.mlp = Mlp(dim, hidden, act, bias=True, norm=None, drop=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        query = self.q(self.latent.expand(batch, -1, -1)).reshape(batch, 1, self.num_heads, self.head_dim)
        key, value = self.kv(x).reshape(batch, length, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        attend = attention_function(self.config._attn_implementation, False)
        out, _ = attend(self, query.transpose(1, 2), key, value, None, scaling=self.scaling, is_causal=False)
        out = self.proj(out.reshape(batch, 1, dim))
        out = out + self.mlp(self.norm(out))
        return out[:, 0]
