"""The conversion side of the one family registry (``vitzoo_hf.FAMILIES``): each family's hooks, and which
family holds a timm model.

A family's hooks are one small class, ``HOOKS`` in its module (``conversion/<family>.py`` unless its registry
entry names another), derived from the class of its group: :class:`conversion.token_families.TokenHooks`,
:class:`conversion.stage_families.StageHooks` or :class:`conversion.stage_families.AttentionStageHooks`. The
group answers everything its families share; a family writes what differs, at least ``config_from_timm``,
``convert_key`` and ``block_groups``. ``convert_timm.py`` and ``verify.py`` only call these methods.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

import timm
import torch
from torch import nn

import vitzoo_hf
from conversion.common import UnsupportedArchitecture

# How a family's models run at sizes other than the one they were trained at (the card and the docs say so).
SIZE_RULES = ("interpolate_pos_encoding", "any")


class FamilyHooks:
    """What every family answers, with the defaults that hold for all; see the group classes for the rest.

    Declared, not guessed: ``size_rule`` (one of ``SIZE_RULES``), ``attention`` (whether the models compute
    attention, so that eager and sdpa are both exercised and ``output_attentions`` is honoured). Test support,
    beside the hooks: ``tiny`` (timm constructor arguments that shrink every variant), ``variants`` (name ->
    (timm entrypoint, constructor overrides), one per flag set the family supports), ``showcase`` (the variants
    the folder-level tests save, load and run through the stock clients: the richest flag sets; default the first
    variant) and ``suite_configs`` (config fields of tiny models for transformers' common suite, two flag sets at
    least), ``learns_toy_task``."""

    timm_classes: ClassVar[tuple[str, ...]] = ()
    timm_modules: ClassVar[tuple[str, ...]] = ()
    size_rule: ClassVar[str] = "any"
    attention: ClassVar[bool] = False
    tiny: ClassVar[dict] = {}
    variants: ClassVar[dict[str, tuple[str, dict]]] = {}
    showcase: ClassVar[tuple[str, ...]] = ()
    suite_configs: ClassVar[list[dict]] = []
    # Whether the family's tiny random models learn the examples' toy task in their default 3 epochs (the
    # examples tests then assert the learning too; otherwise every other outcome of the run).
    learns_toy_task: ClassVar[bool] = True

    def __init__(self, family: vitzoo_hf.Family) -> None:
        self.family = family

    @property
    def name(self) -> str:
        return self.family.name

    @property
    def showcase_variants(self) -> tuple[str, ...]:
        return self.showcase or tuple(self.variants)[:1]

    # -- what the family must write

    def config_from_timm(self, model: nn.Module, **overrides):
        """The family's config read off a timm model (built bare, usually on the meta device)."""
        raise NotImplementedError(f"{type(self).__name__} must define config_from_timm")

    def convert_key(self, key: str, with_head: bool = True) -> str | None:
        """timm key -> key of our ForImageClassification (``with_head``) or base model; None drops it."""
        raise NotImplementedError(f"{type(self).__name__} must define convert_key")

    def block_groups(self, model: nn.Module) -> list[nn.Sequential | nn.ModuleList]:
        """The containers of the model's repeated blocks, in forward order (a transformer: one; a CNN: one per
        stage): ``truncate`` keeps the first blocks of each."""
        raise NotImplementedError(f"{type(self).__name__} must define block_groups")

    # -- what holds for every family unless it says otherwise

    def classifier_key(self, model: nn.Module) -> str:
        """The checkpoint key of the classifier weight (its rows are the classes), from timm's pretrained config
        (the first classifier where a model has two, as distilled DeiT)."""
        names = model.pretrained_cfg.get("classifier")
        if not names:
            raise UnsupportedArchitecture(f"{type(model).__name__}'s pretrained config names no classifier.")
        return f"{names if isinstance(names, str) else names[0]}.weight"

    def reference_kwargs(self, model_name: str) -> dict:
        """timm constructor arguments that make the reference run at every verification size."""
        return {}

    def input_size(self, model: nn.Module) -> tuple[int, int, int]:
        """The pretrained input size timm's config names for the model."""
        channels, height, width = model.pretrained_cfg["input_size"]
        return int(channels), int(height), int(width)

    def verification_inputs(self, reference: nn.Module) -> dict[str, tuple[torch.Tensor, dict]]:
        """name -> (pixel values, model call arguments): the native size and at least one other."""
        raise NotImplementedError(f"{type(self).__name__} must define verification_inputs")

    @contextmanager
    def reference_at(self, reference: nn.Module, input_name: str) -> Iterator[None]:
        """The state timm runs each verification input in (default: as built)."""
        yield

    def truncate(self, model: nn.Module, blocks: int) -> nn.Module:
        """``model``, built by timm (however: constructor keywords or a builder's block specs), with only the first
        ``blocks`` blocks of each block group; in place, returned. A family whose model holds per-block tensors
        outside its blocks (RoPE-Mixed's frequency table) cuts those too."""
        if blocks < 1:
            raise ValueError(f"A truncated copy keeps at least one block per group, not {blocks}.")
        for group in self.block_groups(model):
            del group[blocks:]
        return model

    def num_blocks(self, model: nn.Module) -> int:
        """The longest block group: partial verification and the sweep keep up to that many per group."""
        return max(len(group) for group in self.block_groups(model))

    def attends(self, config) -> bool:
        """Whether models of this config compute attention (a family where only some do says which)."""
        return self.attention

    def build_tiny(self, entrypoint: str, **kwargs) -> nn.Module:
        """A tiny timm model of an entrypoint: built with ``tiny`` (a family whose entrypoints take no shrinking
        keyword builds them its own way)."""
        return timm.create_model(entrypoint, pretrained=False, **{**self.tiny, **kwargs})

    def adapt_variant(self, variant: str, model: nn.Module, seed: int) -> nn.Module:
        """A tiny variant as built, or made from it (ResNet prunes one, as timm builds its ``*_pruned`` models)."""
        return model

    def convert_state_dict(self, state_dict: dict[str, torch.Tensor], with_head: bool = True) -> dict:
        converted = ((self.convert_key(k, with_head), v) for k, v in state_dict.items())
        return {k: v for k, v in converted if k is not None}


def load_hooks(family: vitzoo_hf.Family) -> FamilyHooks:
    """The family's hooks (``module`` or ``module:NAME``; the name defaults to ``HOOKS``), checked for the
    declarations every caller relies on, so that a mistake fails by name."""
    module_name, _, attribute = family.conversion_module.partition(":")
    module = importlib.import_module(module_name)
    hooks = getattr(module, attribute or "HOOKS", None)
    if not (isinstance(hooks, type) and issubclass(hooks, FamilyHooks)):
        raise TypeError(
            f"{family.conversion_module} (family {family.name!r}) must name a FamilyHooks subclass (HOOKS by default)."
        )
    if not hooks.timm_classes or hooks.size_rule not in SIZE_RULES:
        raise TypeError(f"{hooks.__name__} must declare timm_classes and a size_rule in {SIZE_RULES}.")
    missing = [
        name
        for name in ("config_from_timm", "convert_key", "block_groups", "verification_inputs")
        if getattr(hooks, name) is getattr(FamilyHooks, name)
    ]
    if missing:
        raise TypeError(f"{hooks.__name__} (family {family.name!r}) does not define {', '.join(missing)}.")
    return hooks(family)


def conversions() -> list[FamilyHooks]:
    """Every registered family's hooks, in registration order."""
    return [load_hooks(family) for family in vitzoo_hf.FAMILIES.values()]


def family_for(model: nn.Module) -> FamilyHooks:
    name = type(model).__name__
    known = conversions()
    for hooks in known:
        if name in hooks.timm_classes:
            return hooks
    supported = ", ".join(c for f in known for c in f.timm_classes)
    module = type(model).__module__
    raise UnsupportedArchitecture(f"timm class {name} ({module}) is not supported yet; supported: {supported}.")
