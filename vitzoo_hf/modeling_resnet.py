"""The ``vitzoo_resnet`` family: timm's ResNet line as transformers models.

Numerically equal to timm (``forward_features``, pre-logits, logits, stem and stage outputs, BatchNorm in train
mode) on the same weights, at any input size timm takes. Module names mirror timm's, so timm's BatchNorm
statistics load as they are. Ships as Hub remote code: imports torch, transformers and sibling files only.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import PreTrainedModel

# Every sibling the family needs is imported here by name: some transformers releases copy only direct imports.
from .common_compat import BackboneMixin, init
from .common_config import VitzooConfig  # noqa: F401
from .common_heads import ClassifierHead  # noqa: F401
from .common_layers import DropPath
from .common_modeling import VitzooPreTrainedMixin
from .configuration_resnet import BLOCK_TYPES, VitzooResNetConfig
from .stage_config import StageConfig  # noqa: F401
from .stage_layers import (
    BlurPool2d,
    EfficientChannelAttention,
    SEModule,
    act_layer,
    anti_alias,
    make_divisible,
    norm2d,
    projection_shortcut,
)
from .stage_modeling import (
    StageBackboneMixin,
    StageClassifierMixin,
    StageModelBase,
    block_drop_rates,
    init_stage_weights,
    run_stages,
    stage_flags,
    stage_output,
)


def map_norm(config: VitzooResNetConfig, channels: int) -> nn.Module:
    """The configured BatchNorm or GroupNorm over a map's channels."""
    return norm2d(config.norm_type, channels, config.norm_eps, config.norm_groups)


def build_attention(config: VitzooResNetConfig, channels: int, eca_kernel: int | None) -> nn.Module | None:
    """The block's channel attention after its last norm: SE (timm's ``SEModule``), ECA, or none."""
    if config.attn_type == "se":
        return SEModule(channels, make_divisible(channels * config.se_ratio, round_limit=0.0), inplace=True)
    if config.attn_type == "eca":
        return EfficientChannelAttention(channels, eca_kernel, inplace=True)
    return None


def build_shortcut(config: VitzooResNetConfig, in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    norm = map_norm(config, out_channels)
    return projection_shortcut(in_channels, out_channels, stride, norm, config.down_kernel_size, config.avg_down)


class ResNetBlock(GradientCheckpointingLayer):
    """A residual block: the block type's branch (``residual``), then attention (SE/ECA), drop path, the shortcut
    (projected where the shape changes) and the final activation; the unit of gradient checkpointing, FSDP wrapping
    and device placement (``_no_split_modules``), as timm checkpoints per block. Each intermediate is dropped as
    soon as the next one exists, as in timm: one step per line, since a nested call keeps the previous line's
    tensor bound (and alive) through the whole expression; holding one longer makes the allocator take fresh pages
    (CPU time).

    A block type builds its branch in ``build_branch`` (timm's module order: the branch, then attention and the
    shortcut), marking its last norm ``last_in_block`` (``zero_init_last`` starts it at zero); ``inner`` gives the
    branch's own widths (pruned models; None derives them from the config), ``eca_kernel`` ECA's kernel where it
    is not derived from the width."""

    def __init__(
        self,
        config: VitzooResNetConfig,
        in_channels: int,
        out_channels: int,
        stride: int,
        drop_path: float,
        inner: list[int] | None = None,
        eca_kernel: int | None = None,
    ) -> None:
        super().__init__()
        self.build_branch(config, in_channels, out_channels, stride, inner)
        self.se = build_attention(config, out_channels, eca_kernel)
        changes = stride != 1 or in_channels != out_channels
        self.downsample = build_shortcut(config, in_channels, out_channels, stride) if changes else None
        self.drop_path = DropPath(drop_path)
        self.act_out = act_layer(config.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.residual(x)
        if self.se is not None:
            x = self.se(x)
        x = self.drop_path(x)
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        x += shortcut  # in place, as timm: the branch's last tensor is not read again
        return self.act_out(x)


class BasicBlock(ResNetBlock):
    """Two 3x3 convs (ResNet-18/34); anti-aliasing replaces the first conv's stride."""

    def build_branch(
        self, config: VitzooResNetConfig, in_channels: int, out_channels: int, stride: int, inner: list[int] | None
    ) -> None:
        first = out_channels // config.block_reduce_first if inner is None else inner[0]
        use_aa = config.aa_type is not None and stride == 2
        self.conv1 = nn.Conv2d(in_channels, first, 3, 1 if use_aa else stride, 1, bias=False)
        self.bn1 = map_norm(config, first)
        self.act1 = act_layer(config.hidden_act)
        self.aa = anti_alias(config.aa_type, first, stride) if use_aa else nn.Identity()
        self.conv2 = nn.Conv2d(first, out_channels, 3, padding=1, bias=False)
        self.bn2 = map_norm(config, out_channels)
        self.bn2.last_in_block = True

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.act1(x)
        x = self.aa(x)
        x = self.conv2(x)
        return self.bn2(x)


class Bottleneck(ResNetBlock):
    """1x1 reduce -> 3x3 (grouped for ResNeXt, strided or anti-aliased) -> 1x1 expand (ResNet-50 and up)."""

    def build_branch(
        self, config: VitzooResNetConfig, in_channels: int, out_channels: int, stride: int, inner: list[int] | None
    ) -> None:
        if inner is None:
            planes = out_channels // BLOCK_TYPES["bottleneck"]
            width = int(math.floor(planes * (config.base_width / 64)) * config.cardinality)
            first = width // config.block_reduce_first
        else:
            first, width = inner
        use_aa = config.aa_type is not None and stride == 2
        self.conv1 = nn.Conv2d(in_channels, first, 1, bias=False)
        self.bn1 = map_norm(config, first)
        self.act1 = act_layer(config.hidden_act)
        conv_stride = 1 if use_aa else stride
        self.conv2 = nn.Conv2d(first, width, 3, conv_stride, 1, groups=config.cardinality, bias=False)
        self.bn2 = map_norm(config, width)
        self.act2 = act_layer(config.hidden_act)
        self.aa = anti_alias(config.aa_type, width, stride) if use_aa else nn.Identity()
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = map_norm(config, out_channels)
        self.bn3.last_in_block = True

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.act1(x)
        x = self.conv2(x)
        x = self.bn2(x)
        x = self.act2(x)
        x = self.aa(x)
        x = self.conv3(x)
        return self.bn3(x)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class VitzooResNetStem(nn.Module):
    """One 7x7 stride-2 conv, or three 3x3 convs (deep stems), then norm and activation: the stride-2 map timm's
    ``features_only`` returns first. (The stem's pool, ``stem_pool``, follows it.)"""

    def __init__(self, config: VitzooResNetConfig) -> None:
        super().__init__()
        out = config.stem_width
        if config.stem_type:
            mid = config.deep_stem_width
            first = 3 * (mid // 4) if config.stem_type == "deep_tiered" else mid
            self.conv1 = nn.Sequential(
                nn.Conv2d(config.num_channels, first, 3, 2, 1, bias=False),
                map_norm(config, first),
                act_layer(config.hidden_act),
                nn.Conv2d(first, mid, 3, 1, 1, bias=False),
                map_norm(config, mid),
                act_layer(config.hidden_act),
                nn.Conv2d(mid, out, 3, 1, 1, bias=False),
            )
        else:
            self.conv1 = nn.Conv2d(config.num_channels, out, 7, 2, 3, bias=False)
        self.bn1 = map_norm(config, out)
        self.act1 = act_layer(config.hidden_act)
        self.avgpool_aa = config.aa_type == "avgpool"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.avgpool_aa:
            check_even_stage_inputs(x.shape[-2], x.shape[-1])
        return self.act1(self.bn1(self.conv1(x)))


def check_even_stage_inputs(height: int, width: int) -> None:
    """Average-pool anti-aliasing floors odd sizes where the ResNet-D shortcut rounds up, so every stage needs an
    even input; say so before the residual sum fails on mismatched shapes (timm's model fails there)."""
    after_pool = [(size + 1) // 2 // 2 for size in (height, width)]
    if any(size % 8 for size in after_pool):
        fit = [max(32, round(size / 32) * 32) for size in (height, width)]
        raise ValueError(
            f"A {height}x{width} input leaves an odd-sized map at some stage, which average-pool anti-aliasing "
            f"(aa_type='avgpool') cannot downsample to the shortcut's size. Use a multiple of 32, e.g. "
            f"{fit[0]}x{fit[1]}."
        )


def build_stem_pool(config: VitzooResNetConfig) -> nn.Module:
    """timm's ``maxpool``: a 3x3 stride-2 max pool; with anti-aliasing a 2x2 average pool or a stride-1 max pool
    then a blur; with ``replace_stem_pool`` a (anti-aliased) strided 3x3 conv + norm + activation."""
    channels = config.stem_width
    if config.replace_stem_pool:
        conv = nn.Conv2d(channels, channels, 3, 1 if config.aa_type else 2, 1, bias=False)
        aa = [anti_alias(config.aa_type, channels, 2)] if config.aa_type else []
        return nn.Sequential(conv, *aa, map_norm(config, channels), act_layer(config.hidden_act))
    if config.aa_type == "avgpool":
        return nn.AvgPool2d(2)
    if config.aa_type == "blurpool":
        return nn.Sequential(nn.MaxPool2d(3, 1, 1), BlurPool2d(channels, 2))
    return nn.MaxPool2d(3, 2, 1)


class VitzooResNetStage(nn.Module):
    """A stage's blocks; the first block is strided in every stage after the first."""

    def __init__(self, config: VitzooResNetConfig, index: int, drop_rates: list[float]) -> None:
        super().__init__()
        widths = [config.stem_width, *config.hidden_sizes]
        in_channels, out_channels = widths[index], widths[index + 1]
        block = BLOCKS[config.block_types[index]]
        stride = 1 if index == 0 else 2
        inner = config.block_inner_widths[index] if config.block_inner_widths else [None] * len(drop_rates)
        eca_kernel = config.eca_kernel_sizes[index] if config.eca_kernel_sizes else None
        self.blocks = nn.Sequential(
            *(
                block(
                    config,
                    in_channels if i == 0 else out_channels,
                    out_channels,
                    stride if i == 0 else 1,
                    rate,
                    inner[i],
                    eca_kernel,
                )
                for i, rate in enumerate(drop_rates)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class VitzooResNetPreTrainedModel(VitzooPreTrainedMixin, PreTrainedModel):
    config_class = VitzooResNetConfig
    config: VitzooResNetConfig
    base_model_prefix = "resnet"
    _no_split_modules = [block.__name__ for block in BLOCKS.values()]

    def _init_weights(self, module: nn.Module) -> None:
        """timm's init: convs Kaiming-normal (fan out), norms at identity, and (``zero_init_last``) each block's
        last norm at zero so that a new network starts as its shortcuts."""
        init_stage_weights(module, self.config.initializer_range)
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.Conv1d):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))  # torch's default, as timm leaves it
        elif getattr(module, "last_in_block", False) and self.config.zero_init_last:
            init.zeros_(module.weight)


class VitzooResNetModel(StageModelBase, VitzooResNetPreTrainedModel):
    """``last_hidden_state`` = timm ``forward_features`` (NCHW, stride 32); ``pooler_output`` = the pooled map
    (timm pre-logits); ``hidden_states`` = the stem (stride 2, or 4: ``stem_output``) then each stage."""

    def __init__(self, config: VitzooResNetConfig) -> None:
        super().__init__(config)
        self.stem = VitzooResNetStem(config)
        self.stem_pool = build_stem_pool(config)
        rates = block_drop_rates(config)
        self.stages = nn.ModuleList(VitzooResNetStage(config, i, rates[i]) for i in range(len(config.depths)))
        self.post_init()

    def forward_stem(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The stem's map is taken before its pool (timm ``features_only``) or, with ``stem_output="pool"``, after."""
        hidden = self.stem(pixel_values)
        if self.config.stem_output == "pool":
            hidden = self.stem_pool(hidden)
            return hidden, hidden
        return hidden, self.stem_pool(hidden)

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        """stem -> stem pool -> stages; the final map pooled by ``global_pool``. Any input size runs directly;
        ``interpolate_pos_encoding`` (the token families' switch for other sizes) is accepted and changes nothing."""
        flags = stage_flags(self, output_attentions, output_hidden_states, return_dict)
        last, states, _ = run_stages(self, pixel_values, lambda index: flags.hidden_states)
        pool = self.config.global_pool
        return stage_output(flags, last, self.pool(last, pool) if pool else None, states)


class VitzooResNetForImageClassification(StageClassifierMixin, VitzooResNetPreTrainedModel):
    """A configurable head (linear / MLP / none) over the pooled map (timm's ``fc`` is the linear head)."""

    def __init__(self, config: VitzooResNetConfig) -> None:
        super().__init__(config)
        self.resnet = VitzooResNetModel(config)
        self.init_head(config, config.hidden_sizes[-1])
        self.post_init()


class VitzooResNetBackbone(StageBackboneMixin, BackboneMixin, VitzooResNetPreTrainedModel):
    """NCHW maps of chosen stages (strides 2, 4, 8, 16, 32 for stem, stage1..4), equal to timm
    ``forward_intermediates`` / ``features_only``; the stem at stride 4 with ``stem_output="pool"``."""

    def __init__(self, config: VitzooResNetConfig) -> None:
        super().__init__(config)
        self.resnet = VitzooResNetModel(config)
        self.init_stage_backbone(config)
        self.post_init()


__all__ = [
    "VitzooResNetBackbone",
    "VitzooResNetForImageClassification",
    "VitzooResNetModel",
    "VitzooResNetPreTrainedModel",
]
