"""Building blocks every vitzoo family uses, whatever its shape (token sequence or stages of feature maps).

Norms, activations (in place where no autograd graph needs the input), stochastic depth, LayerScale, input checks,
the output flags and the init rule. Nothing here assumes tokens or stages; see docs/ARCHITECTURE.md for how the
shared files are grouped.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

# The one list of norm layers: configs validate ``norm_type`` against it, models build from it.
NORMS: dict[str, type[nn.Module]] = {"layernorm": nn.LayerNorm, "rmsnorm": nn.RMSNorm}


def to_2tuple(value: int | list[int] | tuple[int, int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    return int(value[0]), int(value[1])


def build_norm(norm_type: str, dim: int, eps: float) -> nn.Module:
    """LayerNorm or RMSNorm; torch's RMSNorm computes exactly timm's ``x * rsqrt(mean(x^2) + eps) * w``."""
    if norm_type not in NORMS:
        raise ValueError(f"Unknown norm_type {norm_type!r}: expected one of {', '.join(map(repr, NORMS))}.")
    return NORMS[norm_type](dim, eps=eps)


def check_pixel_values(pixel_values: torch.Tensor, num_channels: int) -> None:
    """Fail early with a readable message instead of a shape error deep inside a convolution."""
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(
            f"pixel_values must be a torch.Tensor, got {type(pixel_values).__module__}.{type(pixel_values).__name__}. "
            "Run the images through the model's image processor: AutoImageProcessor.from_pretrained(path, "
            "trust_remote_code=True)(images, return_tensors='pt')."
        )
    if not pixel_values.is_floating_point():
        raise TypeError(
            f"pixel_values has dtype {pixel_values.dtype}: raw image values? The model expects normalised floats; "
            "run the images through the model's image processor (AutoImageProcessor.from_pretrained(path, "
            "trust_remote_code=True)), which scales and normalises them."
        )
    if pixel_values.ndim != 4:
        raise ValueError(
            f"pixel_values must be a 4D tensor (batch, channels, height, width), got shape {tuple(pixel_values.shape)}."
        )
    if 0 in pixel_values.shape[2:]:
        raise ValueError(f"pixel_values has shape {tuple(pixel_values.shape)}: an image needs at least 1x1 pixels.")
    if pixel_values.shape[1] != num_channels:
        raise ValueError(
            f"pixel_values has {pixel_values.shape[1]} channels but the model expects {num_channels} "
            f"(config.num_channels). Convert the images (e.g. to RGB) or build the model with num_channels="
            f"{pixel_values.shape[1]}."
        )


def overwritable(first: torch.Tensor, *others: torch.Tensor) -> bool:
    """Whether an elementwise op of these tensors may write its result over ``first`` and give the same bits: no
    autograd graph reads them (inference, frozen layers) and they share a dtype (an in-place op keeps ``first``'s,
    where the out-of-place one would promote, as under autocast). Call sites pass as ``first`` only a temporary
    their block made itself, never a block's input or output."""
    tensors = (first, *others)
    return not any(t.requires_grad for t in tensors) and all(t.dtype == first.dtype for t in others)


# In-place twins of transformers' activations, by ACT2FN name: the same kernels, so the same bits (a test holds
# each to its ACT2FN twin). Names missing here (quick_gelu, ...) always run out of place.
INPLACE_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": torch.ops.aten.gelu_,
    "gelu_pytorch_tanh": partial(torch.ops.aten.gelu_, approximate="tanh"),
    "relu": torch.relu_,
    "silu": partial(F.silu, inplace=True),
    "swish": partial(F.silu, inplace=True),
}


class Activation(nn.Module):
    """transformers' ``ACT2FN[name]``. With ``inplace`` (for call sites whose input is a temporary nothing else
    reads, like the output of an MLP's fc1) it overwrites its input whenever no autograd graph needs that input
    (inference, frozen layers): the widest tensor of a block is then made once instead of twice, which lowers the
    peak and, on CPU, the fresh pages each forward touches. Training computes out of place, as before."""

    def __init__(self, name: str, inplace: bool = False) -> None:
        super().__init__()
        self.fn = ACT2FN[name]
        self.inplace_fn = INPLACE_ACTIVATIONS.get(name) if inplace else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace_fn is not None and overwritable(x):
            return self.inplace_fn(x)
        return self.fn(x)


class LayerScale(nn.Module):
    """Per-channel scale of a residual branch; ``channel_dim`` -1 for tokens (B, N, C), 1 for maps (B, C, H, W)."""

    def __init__(self, dim: int, init_value: float, channel_dim: int = -1) -> None:
        super().__init__()
        self.init_value = init_value
        self.channel_dim = channel_dim
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channel_dim == -1:
            return x * self.gamma
        return x * self.gamma.reshape(-1, *([1] * (x.ndim - 1 - self.channel_dim)))


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
        return x * mask.div_(keep)  # the mask scaled first, as timm does: the same rounding


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """timm's linear stochastic-depth rule over all blocks, in plain Python so models build on the meta device."""
    return [rate * i / max(depth - 1, 1) for i in range(depth)]


def init_trunc_normal(init, tensor: torch.Tensor, std: float) -> None:
    """Truncated normal at +-2 std, the init timm and transformers use for ViT and ConvNeXt weights."""
    init.trunc_normal_(tensor, mean=0.0, std=std, a=-2 * std, b=2 * std)


def output_flags(
    config, output_attentions: bool | None, output_hidden_states: bool | None, return_dict: bool | None
) -> tuple[bool, bool, bool]:
    """Per-call flags, falling back to the config as transformers models do (``output_attentions`` is read
    with a default because some releases keep it out of the config's attributes)."""
    if output_attentions is None:
        output_attentions = getattr(config, "output_attentions", False)
    if output_hidden_states is None:
        output_hidden_states = config.output_hidden_states
    if return_dict is None:
        return_dict = config.return_dict
    return bool(output_attentions), bool(output_hidden_states), return_dict


__all__ = [
    "INPLACE_ACTIVATIONS",
    "NORMS",
    "Activation",
    "DropPath",
    "LayerScale",
    "build_norm",
    "check_pixel_values",
    "drop_path_rates",
    "init_trunc_normal",
    "output_flags",
    "overwritable",
    "to_2tuple",
]
