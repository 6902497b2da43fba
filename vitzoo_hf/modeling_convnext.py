"""The ``vitzoo_convnext`` family: timm's ConvNeXt line as transformers models.

Numerically equal to timm (``forward_features``, pre-logits, logits, stage outputs) on the same weights, at any
input size timm takes (each stride-2 step floors, as timm's convolutions do). Module names mirror timm's. Ships
as Hub remote code: imports torch, transformers and sibling files only.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import PreTrainedModel

# Every sibling the family needs is imported here by name: some transformers releases copy only direct imports.
from .common_compat import BackboneMixin, init
from .common_config import VitzooConfig  # noqa: F401
from .common_heads import ClassifierHead  # noqa: F401
from .common_layers import Activation, DropPath
from .common_modeling import VitzooPreTrainedMixin
from .configuration_convnext import VitzooConvNextConfig
from .stage_config import StageConfig  # noqa: F401
from .stage_layers import ChannelNorm
from .stage_modeling import (
    StageBackboneMixin,
    StageClassifierMixin,
    StageModelBase,
    block_drop_rates,
    init_stage_weights,
    pool_maps,
    run_stages,
    stage_flags,
    stage_output,
)


class GlobalResponseNorm(nn.Module):
    """ConvNeXt-V2's GRN: channels scaled by their spatial L2 norm relative to the mean over channels."""

    def __init__(self, dim: int, channels_last: bool, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.spatial_dim, self.channel_dim = ((1, 2), -1) if channels_last else ((2, 3), 1)
        self.shape = (1, 1, 1, -1) if channels_last else (1, -1, 1, 1)
        self.weight = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.norm(p=2, dim=self.spatial_dim, keepdim=True)
        scale = norm / (norm.mean(dim=self.channel_dim, keepdim=True) + self.eps)
        return x + torch.addcmul(self.bias.view(self.shape), self.weight.view(self.shape), x * scale)


class ConvNextMlp(nn.Module):
    """fc1 -> act -> (GRN) -> fc2, as Linear layers on channels-last tensors or 1x1 convs on NCHW maps. The block
    runs these layers itself: as a module call of its own, the MLP's input would stay alive to its end (the call
    holds its arguments), where called from the block it is freed once fc1 has read it."""

    def __init__(self, config: VitzooConvNextConfig, dim: int) -> None:
        super().__init__()
        hidden = int(config.mlp_ratio * dim)
        conv = config.conv_mlp
        self.fc1 = nn.Conv2d(dim, hidden, 1) if conv else nn.Linear(dim, hidden)
        self.act = Activation(config.hidden_act, inplace=True)
        self.grn = GlobalResponseNorm(hidden, channels_last=not conv) if config.use_grn else None
        self.fc2 = nn.Conv2d(hidden, dim, 1) if conv else nn.Linear(hidden, dim)


class VitzooConvNextBlock(GradientCheckpointingLayer):
    """Depthwise conv -> norm -> MLP -> LayerScale (``gamma``) -> drop path, plus the residual (timm
    ``ConvNeXtBlock``). The unit of gradient checkpointing, FSDP wrapping and device placement: a stage can hold
    most of a model (ConvNeXt-XXL's third, 68%), a block never does."""

    def __init__(self, config: VitzooConvNextConfig, dim: int, kernel_size: int, drop_path: float) -> None:
        super().__init__()
        self.conv_mlp = config.conv_mlp
        padding = kernel_size // 2
        self.conv_dw = nn.Conv2d(dim, dim, kernel_size, padding=padding, groups=dim, bias=config.conv_bias)
        self.norm = ChannelNorm(config.norm_type, dim, config.layer_norm_eps, channels_last=not config.conv_mlp)
        self.mlp = ConvNextMlp(config, dim)
        scale = config.layer_scale_init_value
        self.gamma = nn.Parameter(torch.full((dim,), float(scale))) if scale is not None else None
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One step per line: each intermediate is freed as soon as the next exists (fewer fresh pages on CPU).
        shortcut = x
        x = self.conv_dw(x)
        if not self.conv_mlp:  # channels-last around the norm and the Linear MLP
            x = x.permute(0, 2, 3, 1)
        x = self.norm(x)
        mlp = self.mlp
        x = mlp.fc1(x)
        x = mlp.act(x)
        if mlp.grn is not None:
            x = mlp.grn(x)
        x = mlp.fc2(x)
        # Where no autograd graph needs them (inference), LayerScale and the residual overwrite fc2's output: two
        # buffers of the block's width fewer per block (see Activation).
        inplace = not x.requires_grad
        if self.gamma is not None:  # LayerScale before permuting back: timm's products, on contiguous memory
            gamma = self.gamma if not self.conv_mlp else self.gamma.reshape(1, -1, 1, 1)
            x = x.mul_(gamma) if inplace else x * gamma
        if not self.conv_mlp:
            x = x.permute(0, 3, 1, 2)
        x = self.drop_path(x)
        return x.add_(shortcut) if inplace else x + shortcut


class VitzooConvNextStage(nn.Module):
    """(norm -> 2x2 stride-2 conv when the stage downsamples or widens) then the stage's blocks."""

    def __init__(self, config: VitzooConvNextConfig, index: int, drop_rates: list[float]) -> None:
        super().__init__()
        widths = [config.hidden_sizes[0], *config.hidden_sizes]
        in_dim, dim, stride = widths[index], widths[index + 1], config.stage_strides[index]
        if stride > 1 or in_dim != dim:
            norm = ChannelNorm(config.norm_type, in_dim, config.layer_norm_eps)
            kernel = 2 if stride > 1 else 1
            self.downsample = nn.Sequential(norm, nn.Conv2d(in_dim, dim, kernel, stride=stride, bias=config.conv_bias))
        else:
            self.downsample = nn.Identity()
        kernel_size = config.kernel_sizes[index]
        self.blocks = nn.Sequential(*(VitzooConvNextBlock(config, dim, kernel_size, rate) for rate in drop_rates))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Blocks called one by one: the downsampled map is freed after the first block reads it (passed to
        # ``self.blocks`` it would be held by that call's arguments through every block).
        x = self.downsample(x)
        for block in self.blocks:
            x = block(x)
        return x


def build_stem(config: VitzooConvNextConfig) -> nn.Sequential:
    """timm's patch stem (one strided conv + norm) or overlapping stem (two 3x3 stride-2 convs, an activation
    between them for ``overlap_act``)."""
    dim, bias = config.hidden_sizes[0], config.conv_bias
    norm = ChannelNorm(config.norm_type, dim, config.layer_norm_eps)
    if config.stem_type == "patch":
        patch = config.patch_size
        return nn.Sequential(nn.Conv2d(config.num_channels, dim, patch, stride=patch, bias=bias), norm)
    mid = config.stem_mid_channels or dim
    layers = [nn.Conv2d(config.num_channels, mid, 3, stride=2, padding=1, bias=bias)]
    if config.stem_type == "overlap_act":
        layers.append(ACT2FN[config.hidden_act])
    layers += [nn.Conv2d(mid, dim, 3, stride=2, padding=1, bias=bias), norm]
    return nn.Sequential(*layers)


class ConvNextPreLogits(nn.Module):
    """timm ``NormMlpClassifierHead`` up to its classifier: norm of the pooled vector, then the MLP if any."""

    def __init__(self, config: VitzooConvNextConfig) -> None:
        super().__init__()
        dim = config.hidden_sizes[-1]
        norm = ChannelNorm(config.norm_type, dim, config.layer_norm_eps, channels_last=True)
        self.norm = nn.Identity() if config.head_norm_first else norm
        hidden = config.head_hidden_size
        self.fc = nn.Linear(dim, hidden) if hidden else None
        self.act = nn.GELU() if hidden else None

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        pooled = self.norm(pooled)
        return self.act(self.fc(pooled)) if self.fc is not None else pooled


class VitzooConvNextPreTrainedModel(VitzooPreTrainedMixin, PreTrainedModel):
    config_class = VitzooConvNextConfig
    config: VitzooConvNextConfig
    base_model_prefix = "convnext"
    _no_split_modules = ["VitzooConvNextBlock"]

    def _init_weights(self, module: nn.Module) -> None:
        init_stage_weights(module, self.config.initializer_range)
        if isinstance(module, ChannelNorm):
            init.ones_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, GlobalResponseNorm):
            init.zeros_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, VitzooConvNextBlock) and module.gamma is not None:
            init.constant_(module.gamma, self.config.layer_scale_init_value)


class VitzooConvNextModel(StageModelBase, VitzooConvNextPreTrainedModel):
    """``last_hidden_state`` = timm ``forward_features`` (NCHW); ``pooler_output`` = timm pre-logits;
    ``hidden_states`` = the stem then each stage."""

    def __init__(self, config: VitzooConvNextConfig) -> None:
        super().__init__(config)
        self.stem = build_stem(config)
        rates = block_drop_rates(config)
        self.stages = nn.ModuleList(VitzooConvNextStage(config, i, rates[i]) for i in range(len(config.depths)))
        last = config.hidden_sizes[-1]
        self.norm = (
            ChannelNorm(config.norm_type, last, config.layer_norm_eps) if config.head_norm_first else nn.Identity()
        )
        self.pre_logits = ConvNextPreLogits(config)
        self.post_init()

    def forward_stem(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.stem(pixel_values)
        return hidden, hidden

    def pool(self, last_hidden_state: torch.Tensor, kind: str) -> torch.Tensor:
        """The pooled map through timm's head norm (and MLP, where the head has one)."""
        return self.pre_logits(pool_maps(kind, last_hidden_state))

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        """stem -> stages -> norm (head-norm-first models) = timm ``forward_features``; pooled, then the head's norm
        and MLP = pre-logits. Any input size runs directly; ``interpolate_pos_encoding`` (the token families' switch
        for other sizes) is accepted and changes nothing."""
        flags = stage_flags(self, output_attentions, output_hidden_states, return_dict)
        last, states, _ = run_stages(self, pixel_values, lambda index: flags.hidden_states)
        last = self.norm(last)
        pool = self.config.global_pool
        return stage_output(flags, last, self.pool(last, pool) if pool else None, states)


class VitzooConvNextForImageClassification(StageClassifierMixin, VitzooConvNextPreTrainedModel):
    """A configurable head (linear / MLP / none) over the pooled pre-logits."""

    def __init__(self, config: VitzooConvNextConfig) -> None:
        super().__init__(config)
        self.convnext = VitzooConvNextModel(config)
        self.init_head(config, config.pooled_width)
        self.post_init()


class VitzooConvNextBackbone(StageBackboneMixin, BackboneMixin, VitzooConvNextPreTrainedModel):
    """NCHW maps of chosen stages (strides 4, 4, 8, 16, 32 for stem, stage1..4), equal to timm
    ``forward_intermediates`` / ``features_only``."""

    def __init__(self, config: VitzooConvNextConfig) -> None:
        super().__init__(config)
        self.convnext = VitzooConvNextModel(config)
        self.init_stage_backbone(config)
        self.post_init()


__all__ = [
    "VitzooConvNextBackbone",
    "VitzooConvNextForImageClassification",
    "VitzooConvNextModel",
    "VitzooConvNextPreTrainedModel",
]
