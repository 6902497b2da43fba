"""What a timm model costs and what it was trained on, without its weights: parameters, GMACs and activations from a
meta-device build and forward (no memory, no compute), and the datasets its pretrained tag names.

The counts follow timm's own model cards (fvcore's conventions): a multiply-add is one MAC, counted by torch's
``FlopCounterMode`` (FLOPs / 2) over convolutions and matrix products, and activations are the elements those
ops output, at the tag's native input size and batch 1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import timm
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

ATEN = torch.ops.aten
# the ops whose outputs fvcore (timm's cards) counts as activations: convolutions and matrix products
ACTIVATION_OPS = frozenset(
    {ATEN.convolution.default, ATEN.mm.default, ATEN.addmm.default, ATEN.bmm.default, ATEN.baddbmm.default}
)

# Tokens of timm's pretrained tags that name a training dataset, as the Hub's dataset ids timm's cards use.
DATASET_TOKENS = {
    "in1k": "imagenet-1k",
    "in12k": "imagenet-12k",
    "in21k": "imagenet-21k",
    "in22k": "imagenet-22k",
    "laion2b": "laion-2b",
    "laion400m": "laion-400m",
    "laion": "laion-2b",
    "openai": "wit-400m",
    "dfn2b": "dfn-2b",
    "dfn5b": "dfn-5b",
    "lvd142m": "lvd-142m",
    "lvd1689m": "lvd-1689m",
    "merged2b": "merged-2b",
    "m38m": "merged-38m",
    "yfcc100m": "yfcc-100m",
    "yfcc15m": "yfcc-15m",
    "ig1b": "instagram-1b",
    "ig3b": "instagram-3.5b",
    "sa1b": "sa-1b",
    "webli": "webli",
    "cc12m": "cc12m",
    "datacompxl": "datacomp-1b",
    "datacomp1b": "datacomp-1b",
    "dfndr2b": "dfn-dr-2b",
    "laiona": "laion-aesthetics",
    "sat493m": "sat-493m",
    "inw21k": "imagenet-w21k",
    "metaclip": "metaclip-2.5b",
    "jft300m": "jft-300m",
    "inat21": "inaturalist-2021",
}


@dataclass(frozen=True)
class Profile:
    """``gmacs``/``activations_m`` are None where the model cannot run on the meta device (a value read in its
    forward)."""

    params: int
    gmacs: float | None
    activations_m: float | None


class _ActivationCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in ACTIVATION_OPS:
            self.count += (out[0] if isinstance(out, tuple) else out).numel()
        return out


def profile(model_name: str, **kwargs) -> Profile:
    """``model_name`` (``arch.tag``) built on the meta device with ``kwargs``, run once at its native size."""
    with torch.device("meta"):
        return profile_model(timm.create_model(model_name, pretrained=False, **kwargs))


def profile_model(model: torch.nn.Module, input_size: tuple[int, int, int] | None = None) -> Profile:
    """A timm model on the meta device, run once at ``input_size`` (default: its pretrained config's)."""
    params = sum(p.numel() for p in model.parameters())
    x = torch.empty(1, *(input_size or model.pretrained_cfg["input_size"]), device="meta")
    flops, activations = FlopCounterMode(display=False), _ActivationCounter()
    try:
        with torch.no_grad(), flops, activations:
            model.eval()(x)
    except Exception:  # any model whose forward reads a value: its size is still known
        return Profile(params, None, None)
    return Profile(params, round(flops.get_total_flops() / 2e9, 3), round(activations.count / 1e6, 2))


def datasets_of(tag: str | None) -> list[str]:
    """The datasets a pretrained tag names (``augreg2_in21k_ft_in1k``: imagenet-21k then imagenet-1k), in order."""
    found: list[str] = []
    for token in re.split(r"[_\-]", tag or ""):
        match = DATASET_TOKENS.get(token)
        if match and match not in found:
            found.append(match)
    return found
