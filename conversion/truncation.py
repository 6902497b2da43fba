"""Building timm models to cut: for partial verification of models too large to check whole, and for the sweep's
fast coverage runs.

A family's ``truncate`` (``FamilyHooks.truncate``) cuts blocks out of a model timm has already built, so it works
however timm made it (constructor keywords, or a builder's ``block_args``/``model_cfg`` that no keyword can
shorten); the config is then read off the cut model by the family's own ``config_from_timm``. ``build_empty``
builds a timm model whose parameters take no memory (accelerate's ``init_empty_weights``) while its buffers are
computed as timm computes them (RoPE tables, relative-position indices), so that a 7B model can be cut and filled
from a checkpoint on a laptop.
"""

from __future__ import annotations

import timm
import torch
from accelerate import init_empty_weights
from torch import nn

# Fields a shallower copy derives again by itself (backbone outputs follow the depth).
DERIVED_FIELDS = frozenset({"stage_names", "out_features", "out_indices"})


def build_empty(model_name: str, **kwargs) -> nn.Module:
    """timm's model with parameters on the meta device and real buffers; fill it with ``load_state_dict(...,
    assign=True)`` or ``materialize``."""
    with init_empty_weights(include_buffers=False):
        return timm.create_model(model_name, pretrained=False, **kwargs)


def meta_tensors(model: nn.Module) -> list[str]:
    """Names of the parameters and buffers still on the meta device (not filled)."""
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    return [name for name, tensor in tensors.items() if tensor.is_meta]


def depth_bound(full: nn.Module, cut: nn.Module) -> list[str]:
    """Tensors whose shape changed with the cut outside the dropped blocks (a per-block table): a folder of the whole
    model cannot be loaded as the cut copy."""
    shapes = {k: v.shape for k, v in full.state_dict().items()}
    return [k for k, v in cut.state_dict().items() if k in shapes and shapes[k] != v.shape]


def config_overrides(full, cut) -> dict:
    """The config fields that differ between a model's config and its truncated copy's: what a folder of the whole
    model is loaded with to rebuild the copy."""
    whole, part = full.to_dict(), cut.to_dict()
    return {k: v for k, v in part.items() if k not in DERIVED_FIELDS and whole.get(k) != v}


@torch.no_grad()
def materialize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights for every parameter still on the meta device: a small normal, then torch's own init for the
    layers that have one (norms at identity, BatchNorm statistics at 0 and 1)."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        direct = [(name, p) for name, p in module.named_parameters(recurse=False) if p.is_meta]
        for name, param in direct:
            filled = torch.empty_like(param, device="cpu").normal_(0.0, 0.02, generator=generator)
            setattr(module, name, nn.Parameter(filled, param.requires_grad))
        if direct and isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d)):
            module.reset_parameters()
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and any(b.is_meta for b in module.buffers(False)):
            # a layer timm made after the build (its pruned models' adapted layers take the meta device along)
            for name, buffer in module.named_buffers(recurse=False):
                module.register_buffer(name, torch.empty_like(buffer, device="cpu"))
            module.reset_running_stats()
    left = meta_tensors(model)
    if left:
        raise ValueError(f"{type(model).__name__}: {left[0]} could not be filled; build it for real.")
    return model
