"""2D rotary position embeddings of timm's ``Eva`` models, computed for the actual patch grid.

Three kinds, each numerically equal to timm's: ``cat`` (EVA02, PE: inverse-frequency bands over patch
indices, optionally rescaled to the pretraining grid), ``dinov3`` (centered coordinates in [-1, 1] with
period bands, plus DINOv3's training-time coordinate augmentations) and ``mixed`` (RoPE-Mixed: learned
frequencies per block and head). Tables are recomputed from the grid on every forward instead of living in
non-persistent buffers, so loading on the meta device can never leave them stale, and any input size works.
Output layout: ``(N, 2 * head_dim)`` = [sin, cos] (``mixed``: ``(depth, heads, N, 2 * head_dim)``).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _layout(x: torch.Tensor, rotate_half: bool) -> torch.Tensor:
    """Per-frequency values to the per-channel layout the rotation expects: [f0 f1 .. f0 f1 ..] or [f0 f0 f1 f1 ..]."""
    return torch.cat([x, x], dim=-1) if rotate_half else x.repeat_interleave(2, -1)


def _grid(axes: list[torch.Tensor], indexing: str) -> torch.Tensor:
    """(H, W, 2) coordinates; ``xy`` puts the width coordinate first, as timm's grid does."""
    if indexing == "xy":
        return torch.stack(torch.meshgrid(axes[1], axes[0], indexing="xy"), dim=-1)
    return torch.stack(torch.meshgrid(axes[0], axes[1], indexing="ij"), dim=-1)


class RotaryCat(nn.Module):
    """EVA02 / Perception Encoder RoPE over patch indices (timm ``RotaryEmbeddingCat`` with ``in_pixels=False``)."""

    def __init__(
        self,
        head_dim: int,
        temperature: float,
        grid_offset: float,
        indexing: str,
        ref_grid: tuple[int, int] | None,
        rotate_half: bool,
    ) -> None:
        super().__init__()
        self.head_dim, self.temperature, self.grid_offset = head_dim, temperature, grid_offset
        self.indexing, self.ref_grid, self.rotate_half = indexing, ref_grid, rotate_half

    def forward(self, grid: tuple[int, int], device: torch.device) -> torch.Tensor:
        num_bands = self.head_dim // 4
        exponent = torch.arange(num_bands, dtype=torch.int64, device=device).float() / num_bands
        bands = 1.0 / (self.temperature**exponent)
        axes = [torch.arange(size, device=device).float() + self.grid_offset for size in grid]
        if self.ref_grid is not None:  # positions rescaled onto the pretraining grid (EVA's resize scheme)
            axes = [t / size * ref for t, size, ref in zip(axes, grid, self.ref_grid, strict=True)]
        angles = (_grid(axes, self.indexing).unsqueeze(-1) * bands).flatten(-2).flatten(0, -2)
        return torch.cat([_layout(angles.sin(), self.rotate_half), _layout(angles.cos(), self.rotate_half)], dim=-1)


class RotaryDinoV3(nn.Module):
    """DINOv3 RoPE: 0.5-centered coordinates normalised to [-1, 1], periods ``temperature ** (2i / (D/2))``.

    While training, ``shift``/``jitter``/``rescale`` augment the coordinates as DINOv3 trains (one random
    transform per forward); in eval the table is deterministic.
    """

    def __init__(
        self,
        head_dim: int,
        temperature: float,
        normalize: str,
        grid_offset: float,
        indexing: str,
        rotate_half: bool,
        shift: float | None = None,
        jitter: float | None = None,
        rescale: float | None = None,
    ) -> None:
        super().__init__()
        self.head_dim, self.temperature, self.normalize = head_dim, temperature, normalize
        self.grid_offset, self.indexing, self.rotate_half = grid_offset, indexing, rotate_half
        self.shift, self.jitter, self.rescale = shift, jitter, rescale

    def _augment(self, coords: torch.Tensor) -> torch.Tensor:
        if self.shift is not None:
            coords = coords + torch.empty(2, device=coords.device).uniform_(-self.shift, self.shift)
        if self.jitter is not None:
            limit = math.log(self.jitter)
            coords = coords * torch.empty(2, device=coords.device).uniform_(-limit, limit).exp()
        if self.rescale is not None:
            limit = math.log(self.rescale)
            coords = coords * torch.empty(1, device=coords.device).uniform_(-limit, limit).exp()
        return coords

    def forward(self, grid: tuple[int, int], device: torch.device) -> torch.Tensor:
        # Axes stay in (H, W) order here; _grid swaps the channels for "xy" as timm does. sym_max/sym_min (not
        # float()/max()) keep the grid symbolic, so an exported graph serves every input size.
        largest, smallest = torch.sym_max(*grid), torch.sym_min(*grid)
        denominators = {"separate": grid, "max": (largest, largest), "min": (smallest, smallest)}[self.normalize]
        axes = [
            (torch.arange(0.5, size, device=device, dtype=torch.float32) + self.grid_offset) / denominator
            for size, denominator in zip(grid, denominators, strict=True)
        ]
        coords = (2.0 * _grid(axes, self.indexing) - 1.0).flatten(0, -2)
        if self.training:
            coords = self._augment(coords)
        num_bands = self.head_dim // 4
        periods = self.temperature ** (2.0 * torch.arange(num_bands, dtype=torch.float32) / (self.head_dim // 2))
        angles = (2 * math.pi * coords[:, :, None] / periods.to(device)[None, None, :]).flatten(1)
        return torch.cat([_layout(angles.sin(), self.rotate_half), _layout(angles.cos(), self.rotate_half)], dim=-1)


class RotaryMixed(nn.Module):
    """RoPE-Mixed: learned 2D frequencies per block and head (timm ``RotaryEmbeddingMixed``)."""

    def __init__(self, head_dim: int, depth: int, num_heads: int, temperature: float, indexing: str) -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"Mixed RoPE needs a head dim divisible by 4, got {head_dim}.")
        self.head_dim, self.temperature, self.indexing = head_dim, temperature, indexing
        self.freqs = nn.Parameter(torch.zeros(2, depth, num_heads, head_dim // 2))

    def initial_freqs(self) -> torch.Tensor:
        """The RoPE-Mixed init: base magnitudes rotated by a random angle per block and head."""
        _, depth, heads, _ = self.freqs.shape
        magnitude = 1.0 / (self.temperature ** (torch.arange(0, self.head_dim, 4).float() / self.head_dim))
        angles = torch.rand(depth, heads, 1) * 2 * math.pi
        fx = torch.cat([magnitude * torch.cos(angles), magnitude * torch.cos(angles + math.pi / 2)], dim=-1)
        fy = torch.cat([magnitude * torch.sin(angles), magnitude * torch.sin(angles + math.pi / 2)], dim=-1)
        return torch.stack([fx, fy], dim=0)

    def forward(self, grid: tuple[int, int], device: torch.device) -> torch.Tensor:
        axes = [torch.arange(size, device=device).float() for size in grid]
        coords = _grid(axes, self.indexing).reshape(-1, 2)
        freqs = self.freqs.float()
        angles = coords[:, 0, None] * freqs[0].unsqueeze(-2) + coords[:, 1, None] * freqs[1].unsqueeze(-2)
        table = torch.cat([_layout(angles.sin(), False), _layout(angles.cos(), False)], dim=-1)
        return table.to(self.freqs.dtype)
