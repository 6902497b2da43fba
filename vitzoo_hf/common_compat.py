"""The one place where the transformers releases our code files run under differ: 4.57 (the last 4.x) to 5.x.

Every other code file imports what varies from here, so a new release that moves something is fixed once. Imported
first by every configuration file, it also stops an older transformers at once with a message naming both
versions, instead of an AttributeError deep inside loading.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from types import SimpleNamespace

import torch
import transformers
from torch import nn

MINIMUM_TRANSFORMERS = (4, 57)


def _release(version: str) -> tuple[int, int]:
    major, minor = re.match(r"(\d+)\.(\d+)", version).groups()
    return int(major), int(minor)


if _release(transformers.__version__) < MINIMUM_TRANSFORMERS:
    raise ImportError(
        f"This model's code needs transformers >= {'.'.join(map(str, MINIMUM_TRANSFORMERS))} (4.57.x or any 5.x); "
        f"this environment has transformers {transformers.__version__}. Upgrade it: pip install -U 'transformers>=4.57'"
    )

try:  # 5.x from the release that moved them
    from transformers.backbone_utils import BackboneConfigMixin, BackboneMixin
except ImportError:  # 4.57 and the first 5.x releases
    from transformers.utils.backbone_utils import BackboneConfigMixin, BackboneMixin

try:  # 5.x: init functions that leave weights loaded from a checkpoint alone
    from transformers import initialization as init
except ImportError:  # 4.57 calls _init_weights only on modules the checkpoint did not fill: torch's own are safe

    def _copy(tensor: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return tensor.copy_(value)

    init = SimpleNamespace(
        trunc_normal_=nn.init.trunc_normal_,
        normal_=nn.init.normal_,
        zeros_=nn.init.zeros_,
        ones_=nn.init.ones_,
        constant_=nn.init.constant_,
        kaiming_normal_=nn.init.kaiming_normal_,
        kaiming_uniform_=nn.init.kaiming_uniform_,
        copy_=_copy,
    )


def set_backbone_outputs(config, out_features: list[str] | None, out_indices: list[int] | None) -> None:
    """Align ``out_features``/``out_indices`` with ``config.stage_names`` (the API moved into the config in 5.x)."""
    if hasattr(config, "set_output_features_output_indices"):
        config.set_output_features_output_indices(out_features=out_features, out_indices=out_indices)
        return
    from transformers.utils.backbone_utils import get_aligned_output_features_output_indices

    config._out_features, config._out_indices = get_aligned_output_features_output_indices(
        out_features=out_features, out_indices=out_indices, stage_names=config.stage_names
    )


def init_backbone(model: nn.Module, config) -> None:
    """Releases whose BackboneMixin does not set itself up in ``__init__`` need the explicit call."""
    if hasattr(BackboneMixin, "_init_backbone"):
        model._init_backbone(config)


def attention_interface(implementation: str) -> Callable:
    """A registered attention function (flash, flex, custom) by name, through the public registry."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if hasattr(ALL_ATTENTION_FUNCTIONS, "get_interface"):
        return ALL_ATTENTION_FUNCTIONS.get_interface(implementation, None) or _unknown(implementation)
    if implementation not in ALL_ATTENTION_FUNCTIONS:
        _unknown(implementation)
    return ALL_ATTENTION_FUNCTIONS[implementation]


def _unknown(implementation: str):
    raise ValueError(
        f"attn_implementation={implementation!r} is not available in transformers {transformers.__version__}; "
        "use 'sdpa' or 'eager', or a release that offers it."
    )


__all__ = [
    "BackboneConfigMixin",
    "BackboneMixin",
    "attention_interface",
    "init",
    "init_backbone",
    "set_backbone_outputs",
]
