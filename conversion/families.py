"""Which vitzoo family holds a timm model, and that family's mapping and classes."""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from torch import nn

import vitzoo_hf
from conversion import eva, vit
from conversion.common import UnsupportedArchitecture


@dataclass(frozen=True)
class Family:
    name: str
    mapping: ModuleType
    model: type
    classifier: type
    backbone: type


FAMILIES = (
    Family(
        "vit", vit, vitzoo_hf.VitzooViTModel, vitzoo_hf.VitzooViTForImageClassification, vitzoo_hf.VitzooViTBackbone
    ),
    Family(
        "eva", eva, vitzoo_hf.VitzooEvaModel, vitzoo_hf.VitzooEvaForImageClassification, vitzoo_hf.VitzooEvaBackbone
    ),
)


def family_for(model: nn.Module) -> Family:
    name = type(model).__name__
    for family in FAMILIES:
        if name in family.mapping.TIMM_CLASSES:
            return family
    supported = ", ".join(c for f in FAMILIES for c in f.mapping.TIMM_CLASSES)
    module = type(model).__module__
    raise UnsupportedArchitecture(f"timm class {name} ({module}) is not supported yet; supported: {supported}.")
