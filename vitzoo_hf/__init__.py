"""timm's vision backbones as first-class Hugging Face models.

Importing the package registers every family with AutoConfig, AutoModel, AutoModelForImageClassification
and AutoBackbone, and marks the classes so that ``save_pretrained`` writes the code files next to the
weights (the folder then loads anywhere with ``trust_remote_code=True``).
"""

from transformers import AutoBackbone, AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification

from .configuration_eva import VitzooEvaConfig
from .configuration_vit import VitzooViTConfig
from .image_processing_vitzoo import VitzooImageProcessor
from .modeling_eva import (
    VitzooEvaBackbone,
    VitzooEvaForImageClassification,
    VitzooEvaModel,
    VitzooEvaPreTrainedModel,
)
from .modeling_vit import (
    VitzooViTBackbone,
    VitzooViTForImageClassification,
    VitzooViTModel,
    VitzooViTPreTrainedModel,
)

__version__ = "0.1.0"

FAMILIES = {
    VitzooViTConfig: {
        AutoModel: VitzooViTModel,
        AutoModelForImageClassification: VitzooViTForImageClassification,
        AutoBackbone: VitzooViTBackbone,
    },
    VitzooEvaConfig: {
        AutoModel: VitzooEvaModel,
        AutoModelForImageClassification: VitzooEvaForImageClassification,
        AutoBackbone: VitzooEvaBackbone,
    },
}


def _register() -> None:
    for config_class, models in FAMILIES.items():
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        config_class.register_for_auto_class()
        AutoImageProcessor.register(config_class, slow_image_processor_class=VitzooImageProcessor, exist_ok=True)
        for auto_class, model_class in models.items():
            auto_class.register(config_class, model_class, exist_ok=True)
            model_class.register_for_auto_class(auto_class.__name__)
    VitzooImageProcessor.register_for_auto_class("AutoImageProcessor")


_register()

__all__ = [
    "FAMILIES",
    "VitzooEvaBackbone",
    "VitzooEvaConfig",
    "VitzooEvaForImageClassification",
    "VitzooEvaModel",
    "VitzooEvaPreTrainedModel",
    "VitzooImageProcessor",
    "VitzooViTBackbone",
    "VitzooViTConfig",
    "VitzooViTForImageClassification",
    "VitzooViTModel",
    "VitzooViTPreTrainedModel",
]
