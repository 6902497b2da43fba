"""What the stage families (convnext, resnet, ...) share: the declared stage contract and the steps of its forwards.

A stage family's base model derives from :class:`StageModelBase` (the contract: ``stem``, ``stages``,
``forward_stem``, ``pool``, the map layout, whether stages compute attention) and writes its own ``forward`` from
``stage_flags``, ``run_stages`` and ``stage_output``; its classifier and backbone take theirs from
:class:`StageClassifierMixin` and :class:`StageBackboneMixin`. Fields read here are ``StageConfig``'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, NamedTuple

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
MAP_LAYOUTS = ("NCHW", "NHWC")


def pool_maps(kind: str, feature_map: torch.Tensor, layout: str = "NCHW") -> torch.Tensor:
    """timm's ``SelectAdaptivePool2d`` (flattened) over (B, C, H, W), or (B, H, W, C) maps: avg, max or their
    mean (avgmax)."""
    dims = (2, 3) if layout == "NCHW" else (1, 2)
    if kind == "avg":
        return feature_map.mean(dim=dims)
    if kind == "max":
        return feature_map.amax(dim=dims)
    if kind == "avgmax":
        return 0.5 * (feature_map.mean(dim=dims) + feature_map.amax(dim=dims))
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


class StageFlags(NamedTuple):
    attentions: bool
    hidden_states: bool
    return_dict: bool


class StageModelBase:
    """The stage contract: what shared code may call on a stage family's base model, declared here.

    A family's model builds ``stem`` and ``stages`` (an ``nn.ModuleList``; each stage maps its input to its output,
    or, with ``stage_attentions``, is called ``stage(hidden, attend)`` and returns ``(hidden, attention maps)``),
    defines ``forward_stem`` (and ``pool`` where pre-logits add a layer), and writes its ``forward`` in its own
    file from the steps below (``stage_flags``, ``run_stages``, ``stage_output``). ``map_layout`` says whether
    its maps are NCHW or NHWC (Swin's); the backbone gives NCHW either way."""

    map_layout: ClassVar[str] = "NCHW"
    stage_attentions: ClassVar[bool] = False

    def forward_stem(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the stem's map: ``hidden_states[0]``, the input of the first stage)."""
        raise NotImplementedError(f"{type(self).__name__} must define forward_stem")

    def pool(self, last_hidden_state: torch.Tensor, kind: str) -> torch.Tensor:
        """The pre-logits vector of the final map (timm ``forward_head(pre_logits=True)``), pooled by ``kind``."""
        return pool_maps(kind, last_hidden_state, self.map_layout)

    def attention_backend(self, output_attentions: bool) -> Callable | None:
        """The attention function handed to every stage of a pass (``stage_attentions`` families define it)."""
        return None

    def get_input_embeddings(self) -> nn.Module:
        return self.stem


def stage_flags(
    model: StageModelBase, output_attentions: bool | None, output_hidden_states: bool | None, return_dict: bool | None
) -> StageFlags:
    """The output flags of this call; attentions are refused where the stages compute none."""
    flags = StageFlags(*output_flags(model.config, output_attentions, output_hidden_states, return_dict))
    if flags.attentions and not model.stage_attentions:
        raise ValueError(NO_ATTENTIONS)
    return flags


def run_stages(
    model: StageModelBase, pixel_values: torch.Tensor, keep: Callable[[int], bool], output_attentions: bool = False
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """The last map, the maps ``keep`` asks for by index (0 = the stem, i = stage i) and the attention maps of
    every stage's blocks. Only the kept maps are held: every map held longer than needed makes the allocator take
    fresh pages (CPU time in page faults)."""
    check_pixel_values(pixel_values, model.config.num_channels)
    # the model's dtype, as the token families' patch embedding casts (fp16 inputs to an fp32 model, and back)
    hidden = pixel_values.to(next(model.stem.parameters()).dtype)
    attend = model.attention_backend(output_attentions)
    attentions: list[torch.Tensor] = []
    try:
        stem_map, hidden = model.forward_stem(hidden)
        kept = [stem_map] if keep(0) else []
        del stem_map  # freed unless kept
        for index, stage in enumerate(model.stages, start=1):
            if model.stage_attentions:
                hidden, weights = stage(hidden, attend)
                attentions.extend(weights)
            else:
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
    return hidden, tuple(kept), tuple(attentions) if output_attentions else ()


def stage_output(
    flags: StageFlags,
    last_hidden_state: torch.Tensor,
    pooled: torch.Tensor | None,
    states: tuple[torch.Tensor, ...],
    attentions: tuple[torch.Tensor, ...] = (),
) -> BaseModelOutputWithPooling | tuple:
    """The base model's output: ``last_hidden_state`` = timm ``forward_features``, ``pooler_output`` = pre-logits,
    ``hidden_states`` = the stem then every stage, ``attentions`` where asked for and computed."""
    output = BaseModelOutputWithPooling(
        last_hidden_state=last_hidden_state,
        pooler_output=pooled,
        hidden_states=states if flags.hidden_states else None,
        attentions=attentions if flags.attentions else None,
    )
    return output if flags.return_dict else output.to_tuple()


class StageClassifierMixin(ImageClassifierMixin):
    """``ForImageClassification`` of a stage family: ``head_pooling`` pools the final map through the base model's
    ``pool``. The family calls ``init_head(config, width)`` with the width ``pool`` gives."""

    def pool_for_head(self, outputs: BaseModelOutputWithPooling, pooling: str) -> torch.Tensor:
        return self.base_model.pool(outputs.last_hidden_state, pooling)


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
        model = self.base_model
        flags = stage_flags(model, output_attentions, output_hidden_states, return_dict)
        wanted = [stage in self.out_features for stage in self.stage_names]
        keep = lambda index: flags.hidden_states or wanted[index]  # noqa: E731
        _, states, attentions = run_stages(model, pixel_values, keep, flags.attentions)
        maps = tuple(states) if not flags.hidden_states else tuple(s for s, w in zip(states, wanted, strict=True) if w)
        if model.map_layout == "NHWC":
            maps = tuple(m.permute(0, 3, 1, 2) for m in maps)
        output = BackboneOutput(
            feature_maps=maps,
            hidden_states=states if flags.hidden_states else None,
            attentions=attentions if flags.attentions else None,
        )
        return output if flags.return_dict else output.to_tuple()


__all__ = [
    "MAP_LAYOUTS",
    "NO_ATTENTIONS",
    "StageBackboneMixin",
    "StageClassifierMixin",
    "StageFlags",
    "StageModelBase",
    "block_drop_rates",
    "init_stage_weights",
    "pool_maps",
    "run_stages",
    "stage_flags",
    "stage_output",
]
