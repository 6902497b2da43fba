"""Building blocks of the token families (vit, eva) only: patches, position-table resampling, attention pooling.

Attention and MLPs live in ``attention_layers.py``, which families of every shape share. Module and parameter names
mirror timm's. See docs/ARCHITECTURE.md for how the shared files are grouped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention_layers import Mlp, attention_function


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
