"""Building blocks stage families share: norms over the channels of NCHW maps (or channels-last tensors).

timm's ``LayerNorm2d``/``RmsNorm2d``/``SimpleNorm2d`` and their channels-last twins, computed the way timm computes
them, so that parity holds to the last bit where timm's own kernels allow.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# The one list of channel norms: configs validate against it, ChannelNorm computes each.
CHANNEL_NORMS = ("layernorm", "rmsnorm", "simplenorm")


class ChannelNorm(nn.Module):
    """Normalises over channels: dim 1 of (B, C, H, W) maps, or the last dim when ``channels_last`` (a (B, H, W, C)
    tensor or a pooled (B, C) vector). ``layernorm`` (weight, bias), ``rmsnorm`` and ``simplenorm`` (x / std(x),
    no centring; weight only)."""

    def __init__(self, kind: str, dim: int, eps: float, channels_last: bool = False) -> None:
        super().__init__()
        if kind not in CHANNEL_NORMS:
            raise ValueError(f"Unknown norm_type {kind!r}; expected one of {', '.join(map(repr, CHANNEL_NORMS))}.")
        self.kind, self.eps, self.channels_last = kind, eps, channels_last
        self.normalized_shape = (dim,)
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if kind == "layernorm" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "rmsnorm" and not self.channels_last:  # timm reduces over dim 1 without permuting
            x = x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)
            return x * self.weight.reshape(1, -1, 1, 1)
        if not self.channels_last:
            x = x.permute(0, 2, 3, 1)
        if self.kind == "layernorm":
            x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        elif self.kind == "rmsnorm":
            x = x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight
        else:
            x = x * torch.rsqrt(torch.var(x, dim=-1, keepdim=True) + self.eps) * self.weight
        return x if self.channels_last else x.permute(0, 3, 1, 2)


__all__ = ["CHANNEL_NORMS", "ChannelNorm"]
