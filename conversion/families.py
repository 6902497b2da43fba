"""The conversion side of the one family registry (``vitzoo_hf.FAMILIES``): each family's hooks, and which
family holds a timm model.

A family's hooks live in one module (``conversion/<family>.py`` unless its registry entry names another) that
defines every name in ``HOOKS``; ``convert_timm.py`` only orchestrates them. Token families take most hooks from
``conversion/token_families.py``, stage families from ``conversion/stage_families.py``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

import torch
from torch import nn

import vitzoo_hf
from conversion.common import UnsupportedArchitecture

# name -> what it is; every hook module defines all of them.
HOOKS = {
    "TIMM_CLASSES": "timm class names the family holds",
    "TIMM_MODULES": "timm modules whose pretrained tags the sweep converts",
    "CLASSIFIER_WEIGHT": "checkpoint key of the classifier weight (its rows are the classes)",
    "reference_kwargs": "(model_name) -> timm constructor kwargs for the reference",
    "config_from_timm": "(timm_model, **overrides) -> the family's config",
    "convert_key": "(timm_key, with_head) -> our key, or None to drop it",
    "input_size": "(timm_model) -> (channels, height, width) it was built for",
    "verification_inputs": "(reference) -> {name: (pixel_values, model call kwargs)}",
    "reference_at": "(reference, input_name) -> context manager the reference runs in",
    "num_blocks": "(timm_model) -> number of blocks, for partial verification and the sweep",
    "truncated_kwargs": "(timm_model, blocks) -> timm kwargs for a copy with only the first blocks",
    "truncated_overrides": "(config, blocks) -> our config fields for that copy",
}


@dataclass(frozen=True)
class FamilyConversion:
    """A registered family with its conversion hooks: ``conversion.config_from_timm(...)`` calls the hook,
    ``conversion.model`` is the family's class."""

    family: vitzoo_hf.Family
    hooks: ModuleType

    def __getattr__(self, name: str):
        if name in HOOKS:
            return getattr(self.hooks, name)
        if name in ("name", "model", "classifier", "backbone"):
            return getattr(self.family, name)
        raise AttributeError(f"{type(self).__name__} has no {name!r}; hooks: {', '.join(HOOKS)}")

    def convert_state_dict(self, state_dict: dict[str, torch.Tensor], with_head: bool = True) -> dict:
        converted = ((self.hooks.convert_key(k, with_head), v) for k, v in state_dict.items())
        return {k: v for k, v in converted if k is not None}


def load_hooks(family: vitzoo_hf.Family) -> ModuleType:
    """The family's hook module, checked for every hook so that a missing one fails by name at once."""
    module = importlib.import_module(family.conversion_module)
    missing = [name for name in HOOKS if not hasattr(module, name)]
    if missing:
        raise TypeError(f"{module.__name__} (hooks of family {family.name!r}) lacks {', '.join(missing)}.")
    bad = [name for name in HOOKS if name[0].islower() and not callable(getattr(module, name))]
    if bad:
        raise TypeError(f"{module.__name__}: {', '.join(bad)} must be functions.")
    return module


def conversions() -> list[FamilyConversion]:
    """Every registered family with its hooks, in registration order."""
    return [FamilyConversion(family, load_hooks(family)) for family in vitzoo_hf.FAMILIES.values()]


def family_for(model: nn.Module) -> FamilyConversion:
    name = type(model).__name__
    known = conversions()
    for conversion in known:
        if name in conversion.TIMM_CLASSES:
            return conversion
    supported = ", ".join(c for f in known for c in f.TIMM_CLASSES)
    module = type(model).__module__
    raise UnsupportedArchitecture(f"timm class {name} ({module}) is not supported yet; supported: {supported}.")
