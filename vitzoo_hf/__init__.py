"""timm's vision backbones as first-class Hugging Face models.

``FAMILIES`` is the one family registry: the package registers each family with AutoConfig, AutoModel,
AutoModelForImageClassification, AutoBackbone and AutoImageProcessor (and marks the classes so that
``save_pretrained`` writes the code files next to the weights); the converter, the sweep, the publisher and the
tests read the same entries. Adding a family is its own files plus one ``register_family`` call here
(docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from transformers import AutoBackbone, AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification

from .common_config import AUTO_CLASS_NAMES, VitzooConfig
from .configuration_convnext import VitzooConvNextConfig
from .configuration_efficientnet import VitzooEfficientNetConfig
from .configuration_eva import VitzooEvaConfig
from .configuration_resnet import VitzooResNetConfig
from .configuration_vit import VitzooViTConfig
from .image_processing_vitzoo import VitzooImageProcessor
from .modeling_convnext import (
    VitzooConvNextBackbone,
    VitzooConvNextForImageClassification,
    VitzooConvNextModel,
    VitzooConvNextPreTrainedModel,
)
from .modeling_efficientnet import (
    VitzooEfficientNetBackbone,
    VitzooEfficientNetForImageClassification,
    VitzooEfficientNetModel,
    VitzooEfficientNetPreTrainedModel,
)
from .modeling_eva import (
    VitzooEvaBackbone,
    VitzooEvaForImageClassification,
    VitzooEvaModel,
    VitzooEvaPreTrainedModel,
)
from .modeling_resnet import (
    VitzooResNetBackbone,
    VitzooResNetForImageClassification,
    VitzooResNetModel,
    VitzooResNetPreTrainedModel,
)
from .modeling_vit import (
    VitzooViTBackbone,
    VitzooViTForImageClassification,
    VitzooViTModel,
    VitzooViTPreTrainedModel,
)

__version__ = "0.2.0"


@dataclass(frozen=True)
class Family:
    """A family: its classes, and where its conversion hooks live (a module importable where timm is, by default
    ``conversion.<name>``, whose ``HOOKS`` class answers them; ``module:NAME`` names another class; see
    ``conversion/families.py``)."""

    name: str
    config: type[VitzooConfig]
    model: type
    classifier: type
    backbone: type
    conversion: str = ""

    @property
    def conversion_module(self) -> str:
        return self.conversion or f"conversion.{self.name}"

    @property
    def auto_classes(self) -> dict[type, type]:
        return {AutoModel: self.model, AutoModelForImageClassification: self.classifier, AutoBackbone: self.backbone}


FAMILIES: dict[str, Family] = {}


def register_image_processor(config: type) -> None:
    """Our processor serves every backend (it never uses torchvision): registered under each where transformers
    names backends (5.x), so asking for its default torchvision backend finds it instead of warning that it is not
    available; 4.57 takes it as the slow class."""
    if "image_processor_classes" in inspect.signature(AutoImageProcessor.register).parameters:
        backends = {"pil": VitzooImageProcessor, "torchvision": VitzooImageProcessor}
        AutoImageProcessor.register(config, image_processor_classes=backends, exist_ok=True)
    else:
        AutoImageProcessor.register(config, slow_image_processor_class=VitzooImageProcessor, exist_ok=True)


def register_family(family: Family) -> Family:
    """Add a family to the registry and to the Auto classes of this process."""
    config = family.config
    if config.model_type != f"vitzoo_{family.name}":
        raise ValueError(f"Family {family.name!r} needs model_type 'vitzoo_{family.name}', not {config.model_type!r}.")
    AutoConfig.register(config.model_type, config, exist_ok=True)
    config.register_for_auto_class()
    register_image_processor(config)
    for auto_class, model_class in family.auto_classes.items():
        auto_class.register(config, model_class, exist_ok=True)
        model_class.register_for_auto_class(auto_class.__name__)
    FAMILIES[family.name] = family
    return family


VitzooImageProcessor.register_for_auto_class("AutoImageProcessor")
register_family(Family("vit", VitzooViTConfig, VitzooViTModel, VitzooViTForImageClassification, VitzooViTBackbone))
register_family(Family("eva", VitzooEvaConfig, VitzooEvaModel, VitzooEvaForImageClassification, VitzooEvaBackbone))
register_family(
    Family(
        "convnext",
        VitzooConvNextConfig,
        VitzooConvNextModel,
        VitzooConvNextForImageClassification,
        VitzooConvNextBackbone,
    )
)
register_family(
    Family("resnet", VitzooResNetConfig, VitzooResNetModel, VitzooResNetForImageClassification, VitzooResNetBackbone)
)
register_family(
    Family(
        "efficientnet",
        VitzooEfficientNetConfig,
        VitzooEfficientNetModel,
        VitzooEfficientNetForImageClassification,
        VitzooEfficientNetBackbone,
    )
)

__all__ = [
    "AUTO_CLASS_NAMES",
    "FAMILIES",
    "Family",
    "VitzooConfig",
    "VitzooConvNextBackbone",
    "VitzooConvNextConfig",
    "VitzooConvNextForImageClassification",
    "VitzooConvNextModel",
    "VitzooConvNextPreTrainedModel",
    "VitzooEfficientNetBackbone",
    "VitzooEfficientNetConfig",
    "VitzooEfficientNetForImageClassification",
    "VitzooEfficientNetModel",
    "VitzooEfficientNetPreTrainedModel",
    "VitzooEvaBackbone",
    "VitzooEvaConfig",
    "VitzooEvaForImageClassification",
    "VitzooEvaModel",
    "VitzooEvaPreTrainedModel",
    "VitzooImageProcessor",
    "VitzooResNetBackbone",
    "VitzooResNetConfig",
    "VitzooResNetForImageClassification",
    "VitzooResNetModel",
    "VitzooResNetPreTrainedModel",
    "VitzooViTBackbone",
    "VitzooViTConfig",
    "VitzooViTForImageClassification",
    "VitzooViTModel",
    "VitzooViTPreTrainedModel",
    "register_family",
]
