"""The ``vitzoo_efficientnet`` family: every model timm's EfficientNet builder makes, as transformers models.

EfficientNet (B0-B8, V2, EdgeTPU, lite, CondConv), MixNet, MNASNet, TinyNet, FBNet, MobileNetV2/V3/V4 (with its
multi-query attention blocks), LCNet: numerically equal to timm (``forward_features``, pre-logits, logits, the stem
and every stage, BatchNorm in train mode) on the same weights, at any input size timm takes; the TF ports keep TF
"SAME" padding per input size. Module names mirror timm's. Ships as Hub remote code: torch, transformers and
sibling files only.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import PreTrainedModel

# Every sibling the family needs is imported here by name: some transformers releases copy only direct imports.
from .attention_layers import attention_function
from .common_compat import BackboneMixin, init
from .common_config import VitzooConfig  # noqa: F401
from .common_heads import ClassifierHead  # noqa: F401
from .common_layers import LayerScale
from .common_modeling import VitzooPreTrainedMixin
from .configuration_efficientnet import VitzooEfficientNetConfig
from .stage_config import StageConfig  # noqa: F401
from .stage_layers import (
    BatchNormAct2d,
    DepthwiseSeparableConv,
    InvertedResidual,
    SkipBlock,
    SqueezeExcite,
    act_layer,
    conv2d,
    num_groups,
    same_padding,
)
from .stage_modeling import (
    StageBackboneMixin,
    StageClassifierMixin,
    StageModelBase,
    init_stage_weights,
    pool_maps,
    run_stages,
    stage_flags,
    stage_output,
)


def builder_drop_rates(config: VitzooEfficientNetConfig) -> list[list[float]]:
    """timm's EfficientNet builder's stochastic depth: block i of n drops at ``rate * i / n`` (not the ``n - 1``
    of the other families), split per stage."""
    total, start, rates = sum(config.depths), 0, []
    for depth in config.depths:
        rates.append([config.drop_path_rate * i / total for i in range(start, start + depth)])
        start += depth
    return rates


def block_act(config: VitzooEfficientNetConfig, spec: dict) -> str:
    return spec["act"] or config.hidden_act


def build_se(config: VitzooEfficientNetConfig, spec: dict, channels: int) -> SqueezeExcite | None:
    """The block's squeeze-excite over ``channels`` (None where the spec has none)."""
    if not spec["se_channels"]:
        return None
    act = spec["se_act"] or block_act(config, spec)
    return SqueezeExcite(channels, spec["se_channels"], act, spec["se_gate"], inplace=True)


class ConvBnAct(SkipBlock):
    """timm's ``ConvBnAct`` ("cn"): one conv + norm-act (LCNet, MobileNetV4's stems of stages)."""

    def __init__(self, config, spec: dict, in_channels: int, stride: int, drop_path: float) -> None:
        super().__init__()
        out = spec["out_channels"]
        groups = num_groups(spec["group_size"], in_channels)
        self.conv = conv2d(in_channels, out, spec["kernel"], stride, groups=groups, same=config.same_padding)
        self.bn1 = BatchNormAct2d(out, config.norm_eps, block_act(config, spec))
        self.init_skip(in_channels, out, stride, spec["skip"], drop_path)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn1(self.conv(x))


class EdgeResidual(SkipBlock):
    """timm's ``EdgeResidual`` ("er", FusedMBConv): a strided expansion conv + norm-act, squeeze-excite, then a
    pointwise projection + norm."""

    def __init__(self, config, spec: dict, in_channels: int, stride: int, drop_path: float) -> None:
        super().__init__()
        mid, out, same = spec["mid_channels"], spec["out_channels"], config.same_padding
        groups = num_groups(spec["group_size"], mid)
        self.conv_exp = conv2d(in_channels, mid, spec["kernel"], stride, groups=groups, same=same)
        self.bn1 = BatchNormAct2d(mid, config.norm_eps, block_act(config, spec))
        se = build_se(config, spec, mid)
        self.se = se if se is not None else nn.Identity()
        self.conv_pwl = conv2d(mid, out, spec["pw_kernel"], same=same)
        self.bn2 = BatchNormAct2d(out, config.norm_eps, None)
        self.init_skip(in_channels, out, stride, spec["skip"], drop_path)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_exp(x)
        x = self.bn1(x)
        x = self.se(x)
        x = self.conv_pwl(x)
        return self.bn2(x)


class CondConv2d(nn.Module):
    """timm's ``CondConv2d``: ``num_experts`` kernels mixed per sample by routing weights, run as one grouped conv
    over the batch. ``weight`` holds each expert's kernel flattened, as timm stores it."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, stride: int, groups: int, experts: int, same: bool
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel, self.stride, self.same = kernel, stride, same and (stride > 1 or (kernel - 1) % 2)
        self.padding = 0 if self.same else ((stride - 1) + (kernel - 1)) // 2
        self.weight_shape = (out_channels, in_channels // groups, kernel, kernel)
        self.weight = nn.Parameter(torch.empty(experts, math.prod(self.weight_shape)))

    def forward(self, x: torch.Tensor, routing: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        weight = torch.matmul(routing, self.weight).view(batch * self.out_channels, *self.weight_shape[1:])
        x = x.reshape(1, batch * channels, height, width)
        if self.same:
            pad_h = same_padding(height, self.kernel, self.stride, 1)
            pad_w = same_padding(width, self.kernel, self.stride, 1)
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        out = F.conv2d(x, weight, None, self.stride, self.padding, 1, self.groups * batch)
        return out.permute(1, 0, 2, 3).view(batch, self.out_channels, out.shape[-2], out.shape[-1])


class CondConvResidual(SkipBlock):
    """timm's ``CondConvResidual``: an inverted residual whose three convs are CondConv, routed by a sigmoid over
    a linear map of the block input's spatial mean."""

    def __init__(self, config, spec: dict, in_channels: int, stride: int, drop_path: float) -> None:
        super().__init__()
        mid, out, experts, same = spec["mid_channels"], spec["out_channels"], spec["num_experts"], config.same_padding
        act = block_act(config, spec)
        self.conv_pw = CondConv2d(in_channels, mid, spec["exp_kernel"], 1, 1, experts, same)
        self.bn1 = BatchNormAct2d(mid, config.norm_eps, act)
        groups = num_groups(spec["group_size"], mid)
        self.conv_dw = CondConv2d(mid, mid, spec["kernel"], stride, groups, experts, same)
        self.bn2 = BatchNormAct2d(mid, config.norm_eps, act)
        se = build_se(config, spec, mid)
        self.se = se if se is not None else nn.Identity()
        self.conv_pwl = CondConv2d(mid, out, spec["pw_kernel"], 1, 1, experts, same)
        self.bn3 = BatchNormAct2d(out, config.norm_eps, None)
        self.routing_fn = nn.Linear(in_channels, experts)
        self.init_skip(in_channels, out, stride, spec["skip"], drop_path)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        routing = torch.sigmoid(self.routing_fn(F.adaptive_avg_pool2d(x, 1).flatten(1)))
        x = self.conv_pw(x, routing)
        x = self.bn1(x)
        x = self.conv_dw(x, routing)
        x = self.bn2(x)
        x = self.se(x)
        x = self.conv_pwl(x, routing)
        return self.bn3(x)


class ConvNormAct(nn.Module):
    """timm's ``ConvNormAct`` (``conv`` then ``bn``, a BatchNorm with an optional activation)."""

    def __init__(
        self, config, in_channels: int, out_channels: int, kernel: int, stride: int, groups: int, act: str | None
    ) -> None:
        super().__init__()
        self.conv = conv2d(in_channels, out_channels, kernel, stride, groups=groups, same=config.same_padding)
        self.bn = BatchNormAct2d(out_channels, config.norm_eps, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class UniversalInvertedResidual(SkipBlock):
    """timm's ``UniversalInvertedResidual`` (MobileNetV4): optional depthwise convs before the expansion, in the
    middle and after the projection (the first present one strided), squeeze-excite, LayerScale."""

    def __init__(self, config, spec: dict, in_channels: int, stride: int, drop_path: float) -> None:
        super().__init__()
        mid, out, act, size = spec["mid_channels"], spec["out_channels"], block_act(config, spec), spec["group_size"]
        start, middle, end = spec["start_kernel"], spec["kernel"], spec["end_kernel"]
        if stride > 1 and not (start or middle or end):
            raise ValueError("A strided 'uir' block needs one of start_kernel, kernel or end_kernel.")
        start_stride = stride if not middle else 1
        self.dw_start = (
            ConvNormAct(config, in_channels, in_channels, start, start_stride, num_groups(size, in_channels), None)
            if start
            else nn.Identity()
        )
        self.pw_exp = ConvNormAct(config, in_channels, mid, 1, 1, 1, act)
        self.dw_mid = (
            ConvNormAct(config, mid, mid, middle, stride, num_groups(size, mid), act) if middle else nn.Identity()
        )
        se = build_se(config, spec, mid)
        self.se = se if se is not None else nn.Identity()
        self.pw_proj = ConvNormAct(config, mid, out, 1, 1, 1, None)
        end_stride = stride if not start and not middle else 1
        self.dw_end = (
            ConvNormAct(config, out, out, end, end_stride, num_groups(size, out), None) if end else nn.Identity()
        )
        scale = spec["layer_scale"]
        self.layer_scale = LayerScale(out, scale, channel_dim=1) if scale is not None else nn.Identity()
        self.init_skip(in_channels, out, stride, spec["skip"], drop_path)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dw_start(x)
        x = self.pw_exp(x)
        x = self.dw_mid(x)
        x = self.se(x)
        x = self.pw_proj(x)
        x = self.dw_end(x)
        return self.layer_scale(x)


class MultiQueryAttention2d(nn.Module):
    """timm's ``MultiQueryAttention2d``: ``num_heads`` query heads over one shared key and value head, computed
    on maps (1x1 conv projections); keys and values optionally downsampled by a strided depthwise conv + norm,
    queries by an average pool (the output upsampled back). The softmax runs through the pass's attention backend
    (eager or sdpa), so the maps can be returned."""

    def __init__(self, config, spec: dict, dim: int, out: int) -> None:
        super().__init__()
        heads, key_dim, value_dim = spec["num_heads"], spec["key_dim"], spec["value_dim"]
        self.num_heads, self.key_dim, self.value_dim = heads, key_dim, value_dim
        self.scaling = key_dim**-0.5
        self.config = config
        self.query_stride, stride = spec["query_stride"], spec["kv_stride"]
        self.query = nn.Sequential()
        if self.query_stride > 1:
            self.query.add_module("down_pool", nn.AvgPool2d(self.query_stride))
            self.query.add_module("norm", nn.BatchNorm2d(dim, eps=config.norm_eps))
        self.query.add_module("proj", nn.Conv2d(dim, heads * key_dim, 1, bias=False))
        for name, width in (("key", key_dim), ("value", value_dim)):
            branch = nn.Sequential()
            if stride > 1:
                down = conv2d(dim, dim, spec["kernel"], stride, groups=dim, same=config.same_padding)
                branch.add_module("down_conv", down)
                branch.add_module("norm", nn.BatchNorm2d(dim, eps=config.norm_eps))
            branch.add_module("proj", nn.Conv2d(dim, width, 1, bias=False))
            setattr(self, name, branch)
        self.output = nn.Sequential()
        if self.query_stride > 1:
            self.output.add_module(
                "upsample", nn.Upsample(scale_factor=self.query_stride, mode="bilinear", align_corners=False)
            )
        self.output.add_module("proj", nn.Conv2d(value_dim * heads, out, 1, bias=False))
        self.output.add_module("drop", nn.Dropout(0.0))

    def forward(self, x: torch.Tensor, attend: Callable) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, _, height, width = x.shape
        query = self.query(x)
        # contiguous where timm makes them so: the attention kernels then see the same layouts (the same rounding)
        query = query.reshape(batch, self.num_heads, self.key_dim, -1).transpose(-1, -2).contiguous()
        key = self.key(x).reshape(batch, self.key_dim, -1).transpose(1, 2).unsqueeze(1).contiguous()
        value = self.value(x).reshape(batch, self.value_dim, -1).transpose(1, 2).unsqueeze(1).contiguous()
        dropout = self.config.attention_dropout if self.training else 0.0
        out, weights = attend(self, query, key, value, None, scaling=self.scaling, dropout=dropout, is_causal=False)
        rows, cols = height // self.query_stride, width // self.query_stride
        out = out.reshape(batch, rows, cols, self.num_heads * self.value_dim).permute(0, 3, 1, 2).contiguous()
        return self.output(out), weights


class MobileAttention(GradientCheckpointingLayer):
    """timm's ``MobileAttention`` ("mqa", MobileNetV4 hybrids): norm, multi-query attention, LayerScale, skip."""

    def __init__(self, config, spec: dict, in_channels: int, stride: int, drop_path: float) -> None:
        super().__init__()
        out = spec["out_channels"]
        self.norm = BatchNormAct2d(in_channels, config.norm_eps, None)
        self.attn = MultiQueryAttention2d(config, spec, in_channels, out)
        scale = spec["layer_scale"]
        self.layer_scale = LayerScale(out, scale, channel_dim=1) if scale is not None else nn.Identity()
        SkipBlock.init_skip(self, in_channels, out, stride, spec["skip"], drop_path)

    def forward(self, x: torch.Tensor, attend: Callable) -> tuple[torch.Tensor, torch.Tensor | None]:
        out, weights = self.attn(self.norm(x), attend)
        out = self.layer_scale(out)
        return SkipBlock.add_skip(self, out, x), weights


def build_block(config, spec: dict, in_channels: int, stride: int, drop_path: float) -> nn.Module:
    """One block of a spec's run (its first is strided)."""
    kind, act, same, eps = spec["type"], block_act(config, spec), config.same_padding, config.norm_eps
    if kind == "ds":
        se = build_se(config, spec, in_channels)
        return DepthwiseSeparableConv(
            in_channels, spec["out_channels"], spec["kernel"], stride, act, se, spec["pw_act"], spec["skip"], same,
            eps, drop_path, spec["group_size"], spec["pw_kernel"],
        )  # fmt: skip
    if kind == "ir" and not spec["num_experts"]:
        se = build_se(config, spec, spec["mid_channels"])
        return InvertedResidual(
            in_channels, spec["out_channels"], spec["mid_channels"], spec["kernel"], stride, act, se, spec["skip"],
            same, eps, drop_path, spec["group_size"], spec["exp_kernel"], spec["pw_kernel"],
        )  # fmt: skip
    blocks = {"ir": CondConvResidual, "cn": ConvBnAct, "er": EdgeResidual, "uir": UniversalInvertedResidual}
    return {**blocks, "mqa": MobileAttention}[kind](config, spec, in_channels, stride, drop_path)


# Every block type build_block makes: the units of checkpointing, FSDP wrapping and device placement.
BLOCK_CLASSES = (
    DepthwiseSeparableConv, InvertedResidual, CondConvResidual, ConvBnAct, EdgeResidual, UniversalInvertedResidual,
    MobileAttention,
)  # fmt: skip


class VitzooEfficientNetStage(nn.Module):
    """A stage's blocks (timm's ``blocks[i]``); the first is strided. Called with the pass's attention backend
    where the model attends, it returns the map and its attention blocks' maps."""

    def __init__(self, config: VitzooEfficientNetConfig, index: int, drop_rates: list[float]) -> None:
        super().__init__()
        widths = [config.stem_width, *config.hidden_sizes]
        in_channels, blocks, rates = widths[index], [], iter(drop_rates)
        for spec in config.block_specs[index]:
            for _ in range(spec["repeats"]):
                stride = spec["stride"] if not blocks else 1
                blocks.append(build_block(config, spec, in_channels, stride, next(rates)))
                in_channels = spec["out_channels"]
        self.blocks = nn.Sequential(*blocks)
        self.attends = [isinstance(block, MobileAttention) for block in blocks]

    def forward(self, x: torch.Tensor, attend: Callable | None = None):
        if attend is None:
            return self.blocks(x)
        weights = []
        for block, attends in zip(self.blocks, self.attends, strict=True):
            if attends:
                x, attention = block(x, attend)
                weights.append(attention)
            else:
                x = block(x)
        return x, tuple(weights)


class VitzooEfficientNetStem(nn.Module):
    """timm's ``conv_stem`` (strided, SAME-padded for the TF ports) and ``bn1`` (BatchNorm + activation)."""

    def __init__(self, config: VitzooEfficientNetConfig) -> None:
        super().__init__()
        self.conv_stem = conv2d(
            config.num_channels, config.stem_width, config.stem_kernel_size, config.stem_stride,
            same=config.same_padding,
        )  # fmt: skip
        self.bn1 = BatchNormAct2d(config.stem_width, config.norm_eps, config.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn1(self.conv_stem(x))


class VitzooEfficientNetPreTrainedModel(VitzooPreTrainedMixin, PreTrainedModel):
    config_class = VitzooEfficientNetConfig
    config: VitzooEfficientNetConfig
    base_model_prefix = "efficientnet"
    _no_split_modules = [block.__name__ for block in BLOCK_CLASSES]
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        """timm's EfficientNet init for convs (normal, std sqrt(2 / fan-out), CondConv per expert); norms at
        identity; linear layers (heads, CondConv routing) truncated normal."""
        init_stage_weights(module, self.config.initializer_range)
        if isinstance(module, nn.Conv2d):
            fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
            init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        elif isinstance(module, CondConv2d):
            out, _, height, width = module.weight_shape
            init.normal_(module.weight, 0.0, math.sqrt(2.0 / (height * width * out // module.groups)))
        elif isinstance(module, nn.Linear) and module.bias is not None:
            init.zeros_(module.bias)


class VitzooEfficientNetModel(StageModelBase, VitzooEfficientNetPreTrainedModel):
    """``last_hidden_state`` = timm ``forward_features`` (with the "efficientnet" head order, after ``conv_head``
    and ``bn2``); ``pooler_output`` = timm pre-logits (with the "mobilenetv3" order, the pooled map through
    ``conv_head`` and its norm or activation); ``hidden_states`` = the stem then each stage."""

    def __init__(self, config: VitzooEfficientNetConfig) -> None:
        super().__init__(config)
        self.stem = VitzooEfficientNetStem(config)
        rates = builder_drop_rates(config)
        self.stages = nn.ModuleList(VitzooEfficientNetStage(config, i, rates[i]) for i in range(len(config.depths)))
        self.stage_attentions = config.has_attention  # read per stage each forward: worked out once
        last, head = config.hidden_sizes[-1], config.head_channels
        if config.head_order == "efficientnet" and head:
            self.conv_head = conv2d(last, head, 1, same=config.same_padding)
            self.bn2 = BatchNormAct2d(head, config.norm_eps, config.hidden_act)
        elif config.head_order == "mobilenetv3":
            bias = config.head_bias and not config.conv_head_norm
            self.conv_head = conv2d(last, head, 1, bias=bias, same=config.same_padding)
            if config.conv_head_norm:
                self.norm_head = BatchNormAct2d(head, config.norm_eps, config.hidden_act)
            else:
                self.act2 = act_layer(config.hidden_act)
        self.post_init()

    def attention_backend(self, output_attentions: bool) -> Callable | None:
        return attention_function(self.config._attn_implementation, output_attentions)

    def forward_stem(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.stem(pixel_values)
        return hidden, hidden

    def features(self, last: torch.Tensor) -> torch.Tensor:
        """The last stage's map -> timm's ``forward_features`` output."""
        if self.config.head_order == "efficientnet" and self.config.head_channels:
            return self.bn2(self.conv_head(last))
        return last

    def pool(self, last_hidden_state: torch.Tensor, kind: str) -> torch.Tensor:
        """timm's pre-logits: the pooled map, then (mobilenetv3 order) conv_head and its norm or activation."""
        pooled = pool_maps(kind, last_hidden_state)
        if self.config.head_order != "mobilenetv3":
            return pooled
        pooled = self.conv_head(pooled[:, :, None, None])
        pooled = self.norm_head(pooled) if self.config.conv_head_norm else self.act2(pooled)
        return pooled.flatten(1)

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        """stem -> stages -> (conv_head); pooled by ``global_pool``. Any input size runs directly;
        ``interpolate_pos_encoding`` (the token families' switch for other sizes) is accepted and changes nothing."""
        flags = stage_flags(self, output_attentions, output_hidden_states, return_dict)
        last, states, attentions = run_stages(self, pixel_values, lambda index: flags.hidden_states, flags.attentions)
        last = self.features(last)
        pool = self.config.global_pool
        return stage_output(flags, last, self.pool(last, pool) if pool else None, states, attentions)


class VitzooEfficientNetForImageClassification(StageClassifierMixin, VitzooEfficientNetPreTrainedModel):
    """A configurable head (linear / MLP / none) over the pre-logits (timm's ``classifier`` is the linear head)."""

    def __init__(self, config: VitzooEfficientNetConfig) -> None:
        super().__init__(config)
        self.efficientnet = VitzooEfficientNetModel(config)
        self.init_head(config, config.head_width)
        self.post_init()


class VitzooEfficientNetBackbone(StageBackboneMixin, BackboneMixin, VitzooEfficientNetPreTrainedModel):
    """NCHW maps of chosen stages (the stem at stride 2, then each stage), equal to timm ``forward_intermediates``
    / ``features_only`` at its ``feature_info`` stages."""

    def __init__(self, config: VitzooEfficientNetConfig) -> None:
        super().__init__(config)
        self.efficientnet = VitzooEfficientNetModel(config)
        self.init_stage_backbone(config)
        self.post_init()


__all__ = [
    "VitzooEfficientNetBackbone",
    "VitzooEfficientNetForImageClassification",
    "VitzooEfficientNetModel",
    "VitzooEfficientNetPreTrainedModel",
]
