"""Conversion hooks the stage families (convnext, resnet, ...) share: verification inputs, the classifier, pools.

A stage family's hooks derive from :class:`StageHooks` (or, where its stages compute attention, from
:class:`AttentionStageHooks`) and write what differs: which classes, config from timm, keys, block groups; see
``conversion/families.py``.
"""

from __future__ import annotations

import torch
from torch import nn

from conversion.common import UnsupportedArchitecture
from conversion.families import FamilyHooks
from vitzoo_hf.stage_config import STAGE_POOLS

POOLS = (*STAGE_POOLS, "")  # timm's global_pool names a stage family holds; "": no pooling


def pool_type(pool: nn.Module) -> str:
    """timm's ``SelectAdaptivePool2d`` type, refused by name where our map pooling has no twin."""
    kind = pool.pool_type
    if kind not in POOLS:
        raise UnsupportedArchitecture(f"global pool {kind!r} is not supported ({', '.join(map(repr, POOLS))} are).")
    return kind


class StageHooks(FamilyHooks):
    """A family of timm CNNs: a stem then stages of maps, at any size timm accepts with no constructor flag."""

    size_rule = "any"

    def build_config(self, model: nn.Module, fields: dict, overrides: dict):
        """The family's config from the fields read off ``model`` (``overrides`` win), refused by the config's own
        message where the combination cannot be expressed, then held to timm's shapes (``check_shapes``)."""
        try:
            config = self.family.config(**{**fields, **overrides})
        except ValueError as error:  # a combination the config refuses, named in its message
            name = type(model).__name__
            raise UnsupportedArchitecture(f"this {name}'s layout cannot be expressed: {error}") from error
        self.check_shapes(model, config)
        return config

    def check_shapes(self, model: nn.Module, config) -> None:
        """Every weight the config rebuilds has timm's shape, and none is missing: a layout the family's fields
        cannot express (a hand-edited model, per-block widths the fields do not hold) is refused by name."""
        with torch.device("meta"):
            ours = self.family.model(config)
        theirs = {self.convert_key(k, with_head=False): v.shape for k, v in model.state_dict().items()}
        theirs.pop(None, None)
        expected = {k: v.shape for k, v in ours.state_dict().items()}
        wrong = [k for k, shape in theirs.items() if expected.get(k) != shape]
        if wrong or set(expected) - set(theirs):
            example = wrong[0] if wrong else sorted(set(expected) - set(theirs))[0]
            raise UnsupportedArchitecture(
                f"this {type(model).__name__}'s layers do not have the shapes its config rebuilds (e.g. {example}): "
                f"a layout the {self.name} family's fields cannot express (a hand-edited model?) is not supported."
            )

    def size_step(self, reference: nn.Module) -> int:
        """Sizes the model takes differ by multiples of this: its final stride."""
        return reference.feature_info[-1]["reduction"]

    def verification_inputs(self, reference: nn.Module) -> dict[str, tuple[torch.Tensor, dict]]:
        """The native size and another one, a whole number of ``size_step`` away (no call flag)."""
        channels, height, width = self.input_size(reference)
        step = self.size_step(reference)
        generator = torch.Generator().manual_seed(0)
        return {
            "native": (torch.randn(2, channels, height, width, generator=generator), {}),
            "resized": (
                torch.randn(2, channels, height + 2 * step, max(width - step, step), generator=generator),
                {},
            ),
        }


class AttentionStageHooks(StageHooks):
    """Stages that compute attention (hybrids, window attention): besides the stage inputs, the native size runs
    once more with ``output_attentions=True``, which takes the eager path, so both attention paths meet timm. A
    family where only some models attend says which in ``attends``; the others skip the eager input."""

    attention = True

    def verification_inputs(self, reference: nn.Module) -> dict[str, tuple[torch.Tensor, dict]]:
        inputs = super().verification_inputs(reference)
        if not self.attends(self.config_from_timm(reference)):
            return inputs
        pixels, _ = inputs["native"]
        return {**inputs, "eager": (pixels.flip(0), {"output_attentions": True})}
