"""Shared test fixtures: tiny timm models of every supported variant, perturbed, and their vitzoo twins."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

import vitzoo_hf
from conversion.families import FamilyHooks, conversions, family_for
from conversion.remote_code import sibling_closure
from vitzoo_hf import VitzooImageProcessor


def variants(family: str | None = None) -> dict[str, str]:
    """Every tiny variant the registered families declare (``FamilyHooks.variants``): name -> family."""
    return {name: hooks.name for hooks in conversions() if family in (None, hooks.name) for name in hooks.variants}


def code_files(family: vitzoo_hf.Family) -> list[str]:
    """The code files a folder of the family carries: the sibling closure of the modules its auto_map names (what
    the converter copies; transformers' own save copies the same, which test_remote_code holds it to)."""
    modules = (family.config, family.model, family.classifier, family.backbone, VitzooImageProcessor)
    return sorted(path.name for path in sibling_closure([Path(sys.modules[c.__module__].__file__) for c in modules]))


def hooks_of(variant: str) -> FamilyHooks:
    return next(hooks for hooks in conversions() if variant in hooks.variants)


@torch.no_grad()
def perturb(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Add noise to every parameter and persistent buffer: timm's init hides mapping bugs (zero biases,
    LayerScale 1e-5). Non-persistent buffers (RoPE tables, EVA's zero key bias) are derived constants that no
    checkpoint carries, so perturbing them would describe a model no weights can express."""
    generator = torch.Generator().manual_seed(seed)
    for tensor in model.state_dict(keep_vars=True).values():
        if tensor.is_floating_point():
            tensor.add_(torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype) * 0.1)
    return model


def make_timm(variant: str, dynamic: bool = False, seed: int = 0, **extra) -> torch.nn.Module:
    """A tiny perturbed timm model of a variant some family declares, in eval mode (``dynamic``: families whose
    other sizes need it built so, the token families, get their reference constructor arguments)."""
    hooks = hooks_of(variant)
    name, overrides = hooks.variants[variant]
    kwargs = {**overrides, **extra, **(hooks.reference_kwargs(name) if dynamic else {})}
    model = hooks.adapt_variant(variant, hooks.build_tiny(name, **kwargs), seed)
    return perturb(model, seed).eval()


def vitzoo_from_timm(timm_model: torch.nn.Module, role: str = "model", attn: str = "sdpa", **config_overrides):
    """A vitzoo model (``role``: "model", "classifier" or "backbone") holding the timm model's weights.

    Loading is strict: every converted key must exist in our model and every parameter must be covered.
    """
    hooks = family_for(timm_model)
    if role == "classifier" and not timm_model.num_classes:
        # timm's model(x) without a classifier is the pooled output: our head_type "none", one logit per feature.
        width = getattr(timm_model, "head_hidden_size", None) or timm_model.num_features  # MobileNetV3's differ
        config_overrides = {"head_type": "none", "num_labels": width, **config_overrides}
    config = hooks.config_from_timm(timm_model, **config_overrides)
    if hooks.attention:  # families without attention have no implementation to choose
        config._attn_implementation = attn
    model = getattr(hooks.family, role)(config)
    with_head = role == "classifier"
    state = hooks.convert_state_dict(timm_model.state_dict(), with_head=with_head)
    target = model.base_model if role == "backbone" else model
    target.load_state_dict(state, strict=True)
    return model.eval()


@torch.no_grad()
def calibrate_batchnorm(model: torch.nn.Module, size: int = 64, batches: int = 4) -> torch.nn.Module:
    """BatchNorm statistics measured on random images (a cumulative average over a few train-mode batches), as a
    trained network's match its activations. Perturbed statistics that match nothing make a deep random CNN
    (EfficientNet: ~50 BatchNorms) map every image to nearly the same features in eval mode, which no
    fine-tuning test can start from; parity tests keep the perturbed statistics."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    model.train()
    generator = torch.Generator().manual_seed(0)
    for _ in range(batches):
        model(torch.randn(8, 3, size, size, generator=generator))
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    return model.eval()


def save_tiny_folder(
    variant: str, folder: Path, seed: int = 0, headless: bool = False, **extra
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A saved tiny folder (code files, config, weights, a 32-pixel processor), as a converted folder would be,
    plus the vitzoo model and the timm model (``dynamic_img_size``) it holds. A classifier with 7 named labels, or
    with ``headless`` a foundation model without classifier (``num_labels=0``), as converted DINOv2/DINOv3 are;
    ``extra`` goes to the timm constructor (e.g. ``depth``)."""
    if headless:
        timm_model = calibrate_batchnorm(make_timm(variant, dynamic=True, seed=seed, num_classes=0, **extra))
        model = vitzoo_from_timm(timm_model, "model")
        model.config.architectures = [type(model).__name__]
        model.save_pretrained(folder)
        VitzooImageProcessor(size={"shortest_edge": 32}, crop_pct=0.9).save_pretrained(folder)
        return model, timm_model
    timm_model = calibrate_batchnorm(make_timm(variant, dynamic=True, seed=seed, **extra))
    model = vitzoo_from_timm(timm_model, "classifier", id2label={i: f"class_{i}" for i in range(7)})
    model.save_pretrained(folder)
    VitzooImageProcessor(size={"shortest_edge": 32}, crop_pct=0.9).save_pretrained(folder)
    return model, timm_model


def stage_outputs_match_timm(
    timm_model: torch.nn.Module,
    ours: torch.nn.Module,
    sizes: list[tuple[int, int]],
    timm_maps: Callable[[torch.nn.Module, torch.Tensor], list[torch.Tensor]],
) -> Iterator[tuple[torch.Tensor, Any]]:
    """A stage family's classifier against timm at each (height, width): ``last_hidden_state`` = timm's
    ``forward_features``, pre-logits, logits, and the hidden states = ``timm_maps`` (the stem's map, then each
    stage's), within 1e-5. Yields each input and the base model's output for the family's own checks; a headless
    timm model must give a config without a head."""
    base_model = getattr(ours, ours.base_model_prefix)
    tol = dict(atol=1e-5, rtol=1e-5)
    for height, width in sizes:
        x = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(height * width))
        with torch.no_grad():
            base = base_model(x, output_hidden_states=True)
            features = timm_model.forward_features(x)
            torch.testing.assert_close(base.last_hidden_state, features, **tol)
            torch.testing.assert_close(base.pooler_output, timm_model.forward_head(features, pre_logits=True), **tol)
            torch.testing.assert_close(ours(x).logits, timm_model(x), **tol)
            theirs = timm_maps(timm_model, x)
            assert len(base.hidden_states) == len(theirs)
            for index, (mine, their) in enumerate(zip(base.hidden_states, theirs, strict=True)):
                torch.testing.assert_close(mine, their, **tol, msg=f"hidden state {index} at {height}x{width}")
            yield x, base
    assert (not timm_model.num_classes) == (ours.config.head_type == "none")


def check_stage_model_calls(variant: str, hidden_shapes: list[tuple[int, int, int]]) -> None:
    """What every stage family's models do on a call, on a tiny 64-pixel input: attentions refused by message
    (classifier and backbone), hidden states = the stem's map then each stage's (``hidden_shapes``: C, H, W), and
    wrong channels or raw-image dtypes explained."""
    import pytest

    model = vitzoo_from_timm(make_timm(variant), "classifier")
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(ValueError, match="no attention maps, so output_attentions=True cannot be honoured"):
        model(x, output_attentions=True)
    with pytest.raises(ValueError, match="no attention maps"):
        vitzoo_from_timm(make_timm(variant), "backbone")(x, output_attentions=True)
    out = model(x, output_hidden_states=True)
    assert [tuple(h.shape[1:]) for h in out.hidden_states] == hidden_shapes
    assert out.attentions is None
    with pytest.raises(ValueError, match="has 1 channels but the model expects 3"):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(TypeError, match=r"dtype torch\.uint8"):
        model(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))


def train_step_matches_timm(variant: str, drop_path_rate: float) -> tuple[torch.nn.Module, torch.nn.Module]:
    """One train-mode forward of the timm model and of ours from the same seed (stochastic depth draws one mask
    per block in timm's order): equal outputs; then both backward through the same loss. Returns (timm, ours)
    for the family's own checks of statistics and gradients."""
    timm_model = make_timm(variant, drop_path_rate=drop_path_rate)
    ours = vitzoo_from_timm(timm_model, "classifier", drop_path_rate=drop_path_rate)
    timm_model.train()
    ours.train()
    x = torch.randn(4, 3, 64, 64)
    torch.manual_seed(7)
    expected = timm_model(x)
    torch.manual_seed(7)
    got = ours(x).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    expected.square().sum().backward()
    got.square().sum().backward()
    return timm_model, ours


def enable_checkpointing(model: torch.nn.Module) -> None:
    """transformers 5.24 renamed ``gradient_checkpointing_enable`` (now a deprecated alias) to
    ``activation_checkpointing_enable``; older releases have only the first."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()


def check_gradient_checkpointing(variant: str) -> None:
    """The same gradients for every parameter with and without gradient checkpointing (each run from timm's
    weights, so train-mode statistics start alike); the checkpointed units are the blocks (``_no_split_modules``),
    never a whole stage."""
    timm_model = make_timm(variant)
    grads = []
    for checkpointing in (False, True):
        model = vitzoo_from_timm(timm_model, "classifier").train()
        if checkpointing:
            enable_checkpointing(model)
            units = [m for m in model.modules() if getattr(m, "gradient_checkpointing", False)]
            assert units and all(type(m).__name__ in model._no_split_modules for m in units)  # the blocks
            assert not any(hasattr(stage, "gradient_checkpointing") for stage in model.base_model.stages)
        x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        model(x, labels=torch.tensor([1, 2])).loss.backward()
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for key in grads[0]:
        torch.testing.assert_close(grads[0][key], grads[1][key], atol=1e-5, rtol=1e-5, msg=key)


def check_channels_last(variant: str) -> None:
    """channels_last inputs, and a model moved to channels_last, give the contiguous model's logits."""
    ours = vitzoo_from_timm(make_timm(variant), "classifier")
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        reference = ours(x).logits  # before the move: ``to(memory_format=...)`` changes the model in place
        torch.testing.assert_close(
            ours(x.to(memory_format=torch.channels_last)).logits, reference, atol=1e-6, rtol=1e-6
        )
        ours.to(memory_format=torch.channels_last)
        torch.testing.assert_close(ours(x).logits, reference, atol=1e-6, rtol=1e-6)


def convert_perturbed(model_name: str, work: Path) -> Path:
    """A real converter output for a timm name.tag: its architecture's weights perturbed, saved as the checkpoint."""
    import timm
    from safetensors.torch import save_file

    from conversion.convert_timm import convert

    checkpoint = work / f"{model_name.split('.')[0]}.safetensors"
    save_file(perturb(timm.create_model(model_name.split(".")[0])).state_dict(), checkpoint)
    return convert(model_name, work / model_name, checkpoint=checkpoint).output_dir
