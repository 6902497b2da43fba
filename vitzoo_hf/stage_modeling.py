"""What the stage families (convnext, resnet, ...) share: the forwards over a stem and stages of NCHW maps.

A stage family's modeling file builds ``stem``, optionally ``stem_pool`` (a downsampling after the stem's map is
taken, ResNet's max pool; with ``config.stem_output == "pool"`` the map is taken after it), ``stages`` (one
module per stage), ``norm`` (on the final map: timm ``forward_features``) and ``pre_logits`` (on the pooled
vector: timm ``forward_head(pre_logits=True)``), and inherits the three forwards from :class:`StageModelMixin`,
:class:`StageClassifierMixin` and :class:`StageBackboneMixin`. Fields read here are ``StageConfig``'s.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers.modeling_outputs import BackboneOutput, BaseModelOutputWithPooling

from .common_compat import init
from .common_heads import ImageClassifierMixin
from .common_layers import LayerScale, check_pixel_values, drop_path_rates, init_trunc_normal, output_flags
from .common_modeling import VitzooBackboneMixin

NO_ATTENTIONS = (
    "This is a convolutional model: it has no attention maps, so output_attentions=True cannot be honoured. "
    "Leave output_attentions unset (or False); output_hidden_states=True gives the stem and every stage's map."
)


def pool_maps(kind: str, feature_map: torch.Tensor) -> torch.Tensor:
    """timm's ``SelectAdaptivePool2d`` (flattened) over (B, C, H, W): avg, max or their mean (avgmax)."""
    if kind == "avg":
        return feature_map.mean(dim=(2, 3))
    if kind == "max":
        return feature_map.amax(dim=(2, 3))
    if kind == "avgmax":
        return 0.5 * (feature_map.mean(dim=(2, 3)) + feature_map.amax(dim=(2, 3)))
    raise ValueError(f"Unknown pooling {kind!r} for a feature map; expected 'avg', 'max' or 'avgmax'.")


def block_drop_rates(config) -> list[list[float]]:
    """timm's linear stochastic-depth rule over all blocks, split per stage."""
    rates = drop_path_rates(config.drop_path_rate, sum(config.depths))
    split, start = [], 0
    for depth in config.depths:
        split.append(rates[start : start + depth])
        start += depth
    return split


@torch.no_grad()
def init_stage_weights(module: nn.Module, std: float) -> None:
    """Every parameter and statistic of common CNN layers, through transformers' guarded init functions (weights
    loaded from a checkpoint are left alone); a family initialises its own special modules after this."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        init_trunc_normal(init, module.weight, std)
        if module.bias is not None:
            init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
        if module.weight is not None:
            init.ones_(module.weight)
            init.zeros_(module.bias)
        if getattr(module, "running_mean", None) is not None:
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)
    elif isinstance(module, LayerScale):
        init.constant_(module.gamma, module.init_value)


def stage_flags(
    config, output_attentions: bool | None, output_hidden_states: bool | None, return_dict: bool | None
) -> tuple[bool, bool]:
    """``output_hidden_states`` and ``return_dict`` for this call; asking for attentions is refused."""
    output_attentions, output_hidden_states, return_dict = output_flags(
        config, output_attentions, output_hidden_states, return_dict
    )
    if output_attentions:
        raise ValueError(NO_ATTENTIONS)
    return output_hidden_states, return_dict


def run_stages(
    model: nn.Module, pixel_values: torch.Tensor, keep: Callable[[int], bool]
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """The last map, and the maps ``keep`` asks for by index (0 = the stem, i = stage i). Only those are held:
    every map held longer than needed makes the allocator take fresh pages (CPU time in page faults)."""
    check_pixel_values(pixel_values, model.config.num_channels)
    # the model's dtype, as the token families' patch embedding casts (fp16 inputs to an fp32 model, and back)
    hidden = pixel_values.to(next(model.stem.parameters()).dtype)
    try:
        hidden = model.stem(hidden)
        stem_pool = getattr(model, "stem_pool", None)
        pooled_stem_map = stem_pool is not None and model.config.stem_output == "pool"
        if pooled_stem_map:
            hidden = stem_pool(hidden)
        kept = [hidden] if keep(0) else []
        if stem_pool is not None and not pooled_stem_map:  # reassigned at once: the stem's map is freed unless kept
            hidden = stem_pool(hidden)
        for index, stage in enumerate(model.stages, start=1):
            hidden = stage(hidden)
            if keep(index):
                kept.append(hidden)
    except RuntimeError as error:
        if "Kernel size can't be greater than actual input size" not in str(error):
            raise
        height, width = pixel_values.shape[-2:]
        raise ValueError(
            f"A {height}x{width} input is too small for this model: a downsampling layer's map shrank below its "
            f"kernel. Use at least {model.config.strides[-1]} pixels a side (the model's total stride)."
        ) from error
    return hidden, tuple(kept)


class StageModelMixin:
    """Forward of a stage family's base model: ``last_hidden_state`` = timm ``forward_features`` (the final
    map, NCHW), ``pooler_output`` = timm pre-logits, ``hidden_states`` = the stem then every stage."""

    def get_input_embeddings(self) -> nn.Module:
        return self.stem

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        """Any input size runs directly; ``interpolate_pos_encoding`` (the token families' switch for other sizes)
        is accepted and changes nothing, so code written for every family runs here."""
        output_hidden_states, return_dict = stage_flags(
            self.config, output_attentions, output_hidden_states, return_dict
        )
        last, states = run_stages(self, pixel_values, lambda index: output_hidden_states)
        last_hidden_state = self.norm(last)
        pool = self.config.global_pool
        output = BaseModelOutputWithPooling(
            last_hidden_state=last_hidden_state,
            pooler_output=self.pre_logits(pool_maps(pool, last_hidden_state)) if pool else None,
            hidden_states=states if output_hidden_states else None,
        )
        return output if return_dict else output.to_tuple()


class StageClassifierMixin(ImageClassifierMixin):
    """``ForImageClassification`` of a stage family: ``head_pooling`` pools the final map, then ``pre_logits``.
    The family calls ``init_head(config, width)`` with the width ``pre_logits`` gives."""

    def pool_for_head(self, outputs: BaseModelOutputWithPooling, pooling: str) -> torch.Tensor:
        return self.base_model.pre_logits(pool_maps(pooling, outputs.last_hidden_state))


class StageBackboneMixin(VitzooBackboneMixin):
    """NCHW maps of chosen stages (``stem``, ``stage1``..), with their own channels and strides, equal to timm
    ``forward_intermediates`` / ``features_only``. The base model sits at ``base_model_prefix``."""

    def init_stage_backbone(self, config) -> None:
        self.init_backbone(config, [config.stem_width, *config.hidden_sizes])
        self.strides = config.strides

    def get_input_embeddings(self) -> nn.Module:
        return self.base_model.stem

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        interpolate_pos_encoding: bool | None = None,
        **kwargs,
    ) -> BackboneOutput | tuple:
        """``interpolate_pos_encoding`` is accepted and changes nothing, as in the base model."""
        output_hidden_states, return_dict = stage_flags(
            self.config, output_attentions, output_hidden_states, return_dict
        )
        wanted = [stage in self.out_features for stage in self.stage_names]
        _, states = run_stages(self.base_model, pixel_values, lambda index: output_hidden_states or wanted[index])
        maps = tuple(states) if not output_hidden_states else tuple(s for s, w in zip(states, wanted, strict=True) if w)
        output = BackboneOutput(feature_maps=maps, hidden_states=states if output_hidden_states else None)
        return output if return_dict else output.to_tuple()


__all__ = [
    "NO_ATTENTIONS",
    "StageBackboneMixin",
    "StageClassifierMixin",
    "StageModelMixin",
    "block_drop_rates",
    "init_stage_weights",
    "pool_maps",
    "run_stages",
    "stage_flags",
]
