"""The CNN building blocks stage families share, as timm keeps them in ``timm/layers`` and its EfficientNet blocks.

Channel norms over NCHW maps (or channels-last tensors), BatchNorm/GroupNorm with their activation, TF "SAME"
padding convolutions, squeeze-excite and ECA channel attention, blur and average anti-aliasing, projection
shortcuts, depthwise-separable and inverted-residual blocks, ``make_divisible``. Each computes what its timm twin
computes, in the same order, under timm's module names (so a timm state dict loads by renaming prefixes only);
``tests/test_layers.py`` holds each to its twin. Families pick them by config strings.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from .common_layers import Activation, DropPath, overwritable

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


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """timm's channel rounding: the nearest multiple of ``divisor`` (at least ``min_value``, default the divisor),
    one step up where rounding down would lose more than ``1 - round_limit`` of the value (ResNet's SE passes 0)."""
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < round_limit * value else rounded


# Activations whose gradient needs only their output, or that timm's mobile CNNs run as torch's own modules: torch's
# modules, in place as timm runs them (``ACT2FN`` lacks these names in some transformers releases).
TORCH_ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish}


def act_layer(name: str) -> nn.Module:
    """An activation by ``ACT2FN`` name, in place as timm's CNNs run it: each overwrites a tensor nothing else reads.
    ReLU, ReLU6 and hard-swish as torch's modules; others in place where no autograd graph needs their input."""
    return TORCH_ACTIVATIONS[name](inplace=True) if name in TORCH_ACTIVATIONS else Activation(name, inplace=True)


MAP_NORMS = ("batchnorm", "groupnorm")


def norm2d(kind: str, channels: int, eps: float = 1e-5, groups: int = 32) -> nn.Module:
    """BatchNorm2d or GroupNorm over a map's channels (timm's ``norm_layer`` of its CNNs)."""
    if kind == "batchnorm":
        return nn.BatchNorm2d(channels, eps=eps)
    if kind == "groupnorm":
        return nn.GroupNorm(groups, channels, eps=eps)
    raise ValueError(f"Unknown map norm {kind!r}; expected one of {', '.join(map(repr, MAP_NORMS))}.")


class BatchNormAct2d(nn.BatchNorm2d):
    """timm's ``BatchNormAct2d``: BatchNorm then an activation (None: none), one module with BatchNorm's own
    parameter and statistic names."""

    def __init__(self, channels: int, eps: float = 1e-5, act: str | None = "relu") -> None:
        super().__init__(channels, eps=eps)
        self.act = act_layer(act) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> int:
    """Total padding TF's "SAME" adds along one side's length: the output is ceil(size / stride)."""
    return max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)


class Conv2dSame(nn.Conv2d):
    """timm's ``Conv2dSame``: TF "SAME" padding worked out per input size (the extra pixel, where the total is odd,
    goes right and bottom), for the TF-ported weights (``tf_efficientnet_*``) whose strided convs need it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h = same_padding(height, self.kernel_size[0], self.stride[0], self.dilation[0])
        pad_w = same_padding(width, self.kernel_size[1], self.stride[1], self.dilation[1])
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def conv2d(
    in_channels: int,
    out_channels: int,
    kernel: int | list[int],
    stride: int = 1,
    dilation: int = 1,
    groups: int = 1,
    bias: bool = False,
    same: bool = False,
) -> nn.Module:
    """timm's ``create_conv2d``: symmetric padding (PyTorch style), or with ``same`` TF's "SAME" padding, static
    where it does not depend on the input size (stride 1, odd kernel), else computed per call. A list of kernels
    is MixNet's mixed conv (depthwise when ``groups`` is the input width)."""
    if isinstance(kernel, (list, tuple)):
        depthwise = groups == in_channels and groups > 1
        return MixedConv2d(in_channels, out_channels, list(kernel), stride, dilation, depthwise, bias, same)
    if same and (stride > 1 or dilation * (kernel - 1) % 2):
        return Conv2dSame(in_channels, out_channels, kernel, stride, 0, dilation, groups, bias)
    padding = ((stride - 1) + dilation * (kernel - 1)) // 2
    return nn.Conv2d(in_channels, out_channels, kernel, stride, padding, dilation, groups, bias)


def split_channels(channels: int, parts: int) -> list[int]:
    """timm's ``_split_channels``: equal parts, the remainder to the first."""
    split = [channels // parts] * parts
    split[0] += channels - sum(split)
    return split


class MixedConv2d(nn.ModuleDict):
    """timm's ``MixedConv2d`` (MixNet): the channels split into groups, one kernel size each, outputs concatenated;
    the convs under keys "0", "1"... as timm keeps them."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernels: list[int],
        stride: int = 1,
        dilation: int = 1,
        depthwise: bool = False,
        bias: bool = False,
        same: bool = False,
    ) -> None:
        super().__init__()
        in_splits = split_channels(in_channels, len(kernels))
        out_splits = split_channels(out_channels, len(kernels))
        for index, (kernel, ins, outs) in enumerate(zip(kernels, in_splits, out_splits, strict=True)):
            self[str(index)] = conv2d(ins, outs, kernel, stride, dilation, ins if depthwise else 1, bias, same)
        self.splits = in_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, self.splits, 1)
        return torch.cat([conv(part) for conv, part in zip(self.values(), parts, strict=True)], 1)


def num_groups(group_size: int, channels: int) -> int:
    """timm's group rule: ``group_size`` channels per group (0: one group, a dense conv; 1: depthwise)."""
    if not group_size:
        return 1
    if channels % group_size:
        raise ValueError(f"{channels} channels do not split into groups of {group_size}.")
    return channels // group_size


class BlurPool2d(nn.Module):
    """timm's ``BlurPool2d``: a 3x3 binomial blur (reflect padding) then subsampling. The filter is a constant
    built on each call, so there is no buffer a checkpoint would lack."""

    def __init__(self, channels: int, stride: int = 2) -> None:
        super().__init__()
        self.channels, self.stride = channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        taps = x.new_tensor([0.25, 0.5, 0.25])
        weight = (taps[:, None] * taps[None, :]).expand(self.channels, 1, 3, 3)
        return F.conv2d(F.pad(x, [1, 1, 1, 1], mode="reflect"), weight, stride=self.stride, groups=self.channels)


AA_TYPES = ("avgpool", "blurpool")


def anti_alias(kind: str, channels: int, stride: int) -> nn.Module:
    """The anti-aliased downsampling that replaces a strided conv's stride (timm ``create_aa``)."""
    if kind == "avgpool":
        return nn.AvgPool2d(stride)
    if kind == "blurpool":
        return BlurPool2d(channels, stride)
    raise ValueError(f"Unknown anti-aliasing {kind!r}; expected one of {', '.join(map(repr, AA_TYPES))}.")


def gated(x: torch.Tensor, gate: torch.Tensor, inplace: bool) -> torch.Tensor:
    """``x * gate`` for the channel attentions. Built ``inplace`` by a block that hands them its own norm output
    (never a block's input), they write over it where no graph reads it: one map fewer per block, the same
    products. Built standalone, they leave their input alone."""
    return x.mul_(gate) if inplace and overwritable(x, gate) else x * gate


class SEModule(nn.Module):
    """timm ``SEModule`` (ResNet's SE): channels gated by a two-layer MLP (1x1 convs ``fc1``/``fc2``) over their
    spatial mean."""

    def __init__(self, channels: int, reduced: int, act: str = "relu", inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace
        self.fc1 = nn.Conv2d(channels, reduced, 1)
        self.act = act_layer(act)
        self.fc2 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gated(x, self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True)))).sigmoid(), self.inplace)


class SqueezeExcite(nn.Module):
    """timm's EfficientNet ``SqueezeExcite``: the same gate under its names (``conv_reduce``/``conv_expand``), with
    the block's activation and a sigmoid or hard-sigmoid gate."""

    def __init__(
        self, channels: int, reduced: int, act: str = "relu", gate: str = "sigmoid", inplace: bool = False
    ) -> None:
        super().__init__()
        self.inplace = inplace
        self.conv_reduce = nn.Conv2d(channels, reduced, 1)
        self.act1 = act_layer(act)
        self.conv_expand = nn.Conv2d(reduced, channels, 1)
        self.gate = F.hardsigmoid if gate == "hard_sigmoid" else torch.sigmoid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.gate(self.conv_expand(self.act1(self.conv_reduce(x.mean((2, 3), keepdim=True)))))
        return gated(x, gate, self.inplace)


class EfficientChannelAttention(nn.Module):
    """timm ``EcaModule``: channels gated by a 1D conv across their spatial means (kernel from the channel count,
    unless given: a pruned model keeps its unpruned parent's)."""

    def __init__(self, channels: int, kernel: int | None = None, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace
        if kernel is None:
            t = int(abs(math.log(channels, 2) + 1) / 2)
            kernel = max(t if t % 2 else t + 1, 3)
        self.conv = nn.Conv1d(1, 1, kernel, padding=(kernel - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels = x.shape[:2]  # not -1 in the views: an empty batch leaves it undefined
        gate = self.conv(x.mean((2, 3)).view(batch, 1, channels)).sigmoid()
        return gated(x, gate.view(batch, channels, 1, 1), self.inplace)


def projection_shortcut(
    in_channels: int, out_channels: int, stride: int, norm: nn.Module, kernel: int = 1, avg_down: bool = False
) -> nn.Sequential:
    """The projection on a residual block's shortcut where its shape changes: a strided conv + ``norm``, or
    (``avg_down``, ResNet-D) a 2x2 average pool then a 1x1 conv + ``norm`` (timm ``downsample_conv``/``_avg``)."""
    if avg_down:
        pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity()
        return nn.Sequential(pool, nn.Conv2d(in_channels, out_channels, 1, bias=False), norm)
    kernel = kernel if stride > 1 else 1
    padding = ((stride - 1) + (kernel - 1)) // 2
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, stride, padding, bias=False), norm)


class SkipBlock(GradientCheckpointingLayer):
    """timm's EfficientNet block rule: the block's ``residual`` branch, plus (after drop path) its input where the
    shape allows a skip (stride 1, same width) and the block has one. Each block is a unit of gradient
    checkpointing (and, named in ``_no_split_modules``, of FSDP wrapping and device placement)."""

    def init_skip(self, in_channels: int, out_channels: int, stride: int, skip: bool, drop_path: float) -> None:
        self.has_skip = skip and stride == 1 and in_channels == out_channels
        self.drop_path = DropPath(drop_path)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def add_skip(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``drop_path(out) + x`` where the block skips; written over ``out`` (the branch's own last map) where no
        graph reads it, as timm's ResNet adds in place: the same sums, one map fewer per block."""
        if not self.has_skip:
            return out
        out = self.drop_path(out)
        return out.add_(x) if overwritable(out, x) else out + x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.add_skip(self.residual(x), x)


class DepthwiseSeparableConv(SkipBlock):
    """timm's ``DepthwiseSeparableConv`` (MobileNet/EfficientNet's first blocks): depthwise conv + norm-act, optional
    squeeze-excite, pointwise conv + norm (an activation with ``pw_act``), then the residual where the shape
    allows it. ``se`` is a built gate (or None)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int = 3,
        stride: int = 1,
        act: str = "relu",
        se: nn.Module | None = None,
        pw_act: bool = False,
        skip: bool = True,
        same: bool = False,
        eps: float = 1e-5,
        drop_path: float = 0.0,
        group_size: int = 1,
        pw_kernel: int | list[int] = 1,
    ) -> None:
        super().__init__()
        groups = num_groups(group_size, in_channels)
        self.conv_dw = conv2d(in_channels, in_channels, kernel, stride, groups=groups, same=same)
        self.bn1 = BatchNormAct2d(in_channels, eps, act)
        self.se = se if se is not None else nn.Identity()
        self.conv_pw = conv2d(in_channels, out_channels, pw_kernel, same=same)
        self.bn2 = BatchNormAct2d(out_channels, eps, act if pw_act else None)
        self.init_skip(in_channels, out_channels, stride, skip, drop_path)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_dw(x)
        x = self.bn1(x)
        x = self.se(x)
        x = self.conv_pw(x)
        return self.bn2(x)


class InvertedResidual(SkipBlock):
    """timm's ``InvertedResidual`` (MobileNetV2/V3, EfficientNet's MBConv): pointwise expansion + norm-act,
    depthwise conv + norm-act, optional squeeze-excite, pointwise projection + norm, then the residual where the
    shape allows it."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        mid_channels: int,
        kernel: int = 3,
        stride: int = 1,
        act: str = "relu",
        se: nn.Module | None = None,
        skip: bool = True,
        same: bool = False,
        eps: float = 1e-5,
        drop_path: float = 0.0,
        group_size: int = 1,
        exp_kernel: int | list[int] = 1,
        pw_kernel: int | list[int] = 1,
    ) -> None:
        super().__init__()
        self.conv_pw = conv2d(in_channels, mid_channels, exp_kernel, same=same)
        self.bn1 = BatchNormAct2d(mid_channels, eps, act)
        groups = num_groups(group_size, mid_channels)
        self.conv_dw = conv2d(mid_channels, mid_channels, kernel, stride, groups=groups, same=same)
        self.bn2 = BatchNormAct2d(mid_channels, eps, act)
        self.se = se if se is not None else nn.Identity()
        self.conv_pwl = conv2d(mid_channels, out_channels, pw_kernel, same=same)
        self.bn3 = BatchNormAct2d(out_channels, eps, None)
        self.init_skip(in_channels, out_channels, stride, skip, drop_path)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_pw(x)
        x = self.bn1(x)
        x = self.conv_dw(x)
        x = self.bn2(x)
        x = self.se(x)
        x = self.conv_pwl(x)
        return self.bn3(x)


__all__ = [
    "AA_TYPES",
    "CHANNEL_NORMS",
    "MAP_NORMS",
    "BatchNormAct2d",
    "BlurPool2d",
    "ChannelNorm",
    "Conv2dSame",
    "DepthwiseSeparableConv",
    "EfficientChannelAttention",
    "InvertedResidual",
    "MixedConv2d",
    "SEModule",
    "SkipBlock",
    "SqueezeExcite",
    "act_layer",
    "anti_alias",
    "conv2d",
    "make_divisible",
    "norm2d",
    "num_groups",
    "projection_shortcut",
    "same_padding",
    "split_channels",
]
