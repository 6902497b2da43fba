"""Conversion hooks the stage families (convnext, resnet, ...) share: input size, verification inputs, reference.

A stage family's hook module re-exports the hooks it takes from here unchanged and writes the rest (which
classes, config from timm, keys, truncation); see ``conversion/families.py``.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn


def reference_kwargs(model_name: str) -> dict:
    """A CNN runs at any size timm accepts as it is: no constructor flag needed."""
    return {}


def input_size(model: nn.Module) -> tuple[int, int, int]:
    """The pretrained input size timm's config names for the model."""
    channels, height, width = model.pretrained_cfg["input_size"]
    return int(channels), int(height), int(width)


def verification_inputs(reference: nn.Module) -> dict[str, tuple[torch.Tensor, dict]]:
    """The native size and another one, a whole number of the final stride away (any size such a model
    accepts; no call flag)."""
    channels, height, width = input_size(reference)
    stride = reference.feature_info[-1]["reduction"]
    generator = torch.Generator().manual_seed(0)
    return {
        "native": (torch.randn(2, channels, height, width, generator=generator), {}),
        "resized": (
            torch.randn(2, channels, height + 2 * stride, max(width - stride, stride), generator=generator),
            {},
        ),
    }


def reference_at(reference: nn.Module, input_name: str) -> nullcontext:
    return nullcontext()


__all__ = ["input_size", "reference_at", "reference_kwargs", "verification_inputs"]
