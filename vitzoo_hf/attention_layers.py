"""Attention and MLP blocks any family may use, whatever its shape: token sequences (vit, eva) or attention inside
stages (hybrids, window attention). Nothing here assumes a patch grid, prefix tokens or stages.

Module and parameter names mirror timm's (``qkv``, ``proj``, ``fc1``...) so that converting a timm state dict is
mostly renaming. Attention runs through transformers' attention interface (eager and sdpa here, anything else
from ``ALL_ATTENTION_FUNCTIONS``) and takes an optional additive bias (relative position bias, shift masks).
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
    heads for grouped-query attention). A RoPE table rotates queries and keys past the first ``num_prefix_tokens``;
    ``attn_bias`` (broadcast to (B, heads, N, N)) is added to the attention logits before the softmax. ``config``
    is any family's: its ``_attn_implementation`` picks the backend, and ``attention_dropout`` /
    ``hidden_dropout_prob`` apply where it has them.
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
        self.proj_drop = nn.Dropout(getattr(config, "hidden_dropout_prob", 0.0))

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
        self,
        hidden_states: torch.Tensor,
        rope: torch.Tensor | None = None,
        attend: Callable | None = None,
        attn_bias: torch.Tensor | None = None,
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
        dropout = getattr(self.config, "attention_dropout", 0.0) if self.training else 0.0
        if attn_bias is not None:
            attn_bias = attn_bias.to(query.dtype)
        out, weights = attend(
            self, query, key, value, attn_bias, scaling=self.scaling, dropout=dropout, is_causal=False
        )
        out = self.norm(out.reshape(batch, length, dim))
        return self.proj_drop(self.proj(out)), weights


__all__ = [
    "MLP_TYPES",
    "GluMlp",
    "Mlp",
    "SelfAttention",
    "SwiGLU",
    "attention_function",
    "eager_attention_forward",
    "rotate",
    "sdpa_attention_forward",
]
