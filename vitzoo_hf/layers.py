"""Transformer building blocks shared by the vitzoo families.

Module and parameter names mirror timm's (``qkv``, ``proj``, ``fc1``, ``ls1.gamma``...) so that converting
a timm state dict is mostly renaming. This file ships as Hub remote code next to each family's modeling
file, so it imports only torch and transformers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS


def to_2tuple(value: int | list[int] | tuple[int, int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    return int(value[0]), int(value[1])


def build_norm(norm_type: str, dim: int, eps: float) -> nn.Module:
    """LayerNorm or RMSNorm; torch's RMSNorm computes exactly timm's ``x * rsqrt(mean(x^2) + eps) * w``."""
    if norm_type == "layernorm":
        return nn.LayerNorm(dim, eps=eps)
    if norm_type == "rmsnorm":
        return nn.RMSNorm(dim, eps=eps)
    raise ValueError(f"Unknown norm_type {norm_type!r}: expected 'layernorm' or 'rmsnorm'.")


def check_pixel_values(pixel_values: torch.Tensor, num_channels: int) -> None:
    """Fail early with a readable message instead of a shape error deep inside a convolution."""
    if pixel_values.ndim != 4:
        raise ValueError(
            f"pixel_values must be a 4D tensor (batch, channels, height, width), got shape {tuple(pixel_values.shape)}."
        )
    if pixel_values.shape[1] != num_channels:
        raise ValueError(
            f"pixel_values has {pixel_values.shape[1]} channels but the model expects {num_channels} "
            f"(config.num_channels). Convert the images (e.g. to RGB) or build the model with num_channels="
            f"{pixel_values.shape[1]}."
        )


def resample_abs_pos_embed(
    pos_embed: torch.Tensor, new_size: tuple[int, int], old_size: tuple[int, int], num_prefix_tokens: int
) -> torch.Tensor:
    """Resize a (1, prefix + H*W, C) table to a new grid the way timm does it.

    Antialiased bicubic in float32, with prefix-token (class/register) entries kept out of the
    interpolation. transformers' native ports skip the antialias, which is why they drift from timm.
    """
    if tuple(new_size) == tuple(old_size):
        return pos_embed
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
        height, width = pixel_values.shape[-2:]
        if height % self.patch_size[0] or width % self.patch_size[1]:
            raise ValueError(
                f"Input size {height}x{width} is not divisible by the patch size "
                f"{self.patch_size[0]}x{self.patch_size[1]}; resize or crop the images to a multiple of it."
            )
        x = self.proj(pixel_values.to(self.proj.weight.dtype))
        grid = (x.shape[-2], x.shape[-1])
        return self.norm(x.flatten(2).transpose(1, 2)), grid


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.init_value = init_value
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class DropPath(nn.Module):
    """Stochastic depth: drops whole residual branches per sample while training."""

    def __init__(self, drop_prob: float) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Mlp(nn.Module):
    """fc1 -> act -> (norm) -> fc2, timm's ``Mlp``."""

    def __init__(self, dim: int, hidden: int, act: str, bias: bool, norm: nn.Module | None, drop: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.act = ACT2FN[act]
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
        self.act = ACT2FN[act]
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
        self.act = ACT2FN[act]
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
    """Plain softmax attention; the one path that can return the attention probabilities."""
    weights = torch.matmul(query, key.transpose(-2, -1)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = F.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def attention_function(implementation: str | None, output_attentions: bool) -> Callable:
    """The transformers attention backend for this call.

    Only eager materialises the probabilities, so asking for them switches this call to eager rather than
    returning ``None`` as sdpa would.
    """
    if output_attentions or implementation in (None, "eager"):
        return eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS[implementation]


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (timm ``Attention``)."""

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
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"hidden_size ({dim}) must be divisible by num_attention_heads ({num_heads}).")
        self.config = config
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = qk_norm if qk_norm is not None else nn.Identity()
        self.k_norm = k_norm if k_norm is not None else nn.Identity()
        self.norm = out_norm if out_norm is not None else nn.Identity()
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(getattr(config, "hidden_dropout_prob", 0.0))

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, length, dim = hidden_states.shape
        qkv = self.qkv(hidden_states).reshape(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        query, key, value = qkv.unbind(0)
        query, key = self.q_norm(query), self.k_norm(key)
        attend = attention_function(self.config._attn_implementation, output_attentions)
        out, weights = attend(
            self,
            query,
            key,
            value,
            None,
            scaling=self.scaling,
            dropout=self.config.attention_dropout if self.training else 0.0,
            is_causal=False,
        )
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


def init_trunc_normal(init, tensor: torch.Tensor, std: float) -> None:
    """Truncated normal at +-2 std, the init timm and transformers use for ViT weights."""
    init.trunc_normal_(tensor, mean=0.0, std=std, a=-2 * std, b=2 * std)
