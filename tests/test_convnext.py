"""The convnext family against timm: every flag set of timm's ConvNeXt entrypoints, perturbed, at several sizes."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from conversion.convnext import ConvNextHooks
from tests.helpers import (
    check_channels_last,
    check_gradient_checkpointing,
    check_stage_model_calls,
    make_timm,
    stage_outputs_match_timm,
    train_step_matches_timm,
    vitzoo_from_timm,
)
from vitzoo_hf import VitzooConvNextConfig

# The native size, a larger non-square one, and sizes that are not multiples of 32 (each stride-2 step floors).
SIZES = [(64, 64), (96, 64), (72, 40), (33, 47)]
TOL = dict(atol=1e-5, rtol=1e-5)


def timm_stages(timm_model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The stem's output, then each stage's (timm has no single call that returns the stem too)."""
    hidden = timm_model.stem(x)
    states = [hidden]
    for stage in timm_model.stages:
        hidden = stage(hidden)
        states.append(hidden)
    return states


@pytest.mark.parametrize("variant", sorted(ConvNextHooks.variants))
def test_outputs_equal_timm_at_every_size(variant: str) -> None:
    timm_model = make_timm(variant)
    ours = vitzoo_from_timm(timm_model, "classifier")
    for _, base in stage_outputs_match_timm(timm_model, ours, SIZES, timm_stages):
        assert len(base.hidden_states) == len(timm_model.stages) + 1


@pytest.mark.parametrize("variant", ["convnext", "v2_grn_conv_mlp", "head_norm_first", "patch2_avgmax"])
def test_backbone_maps_equal_forward_intermediates_and_features_only(variant: str) -> None:
    timm_model = make_timm(variant)
    stages = ["stage1", "stage2", "stage3", "stage4"]
    backbone = vitzoo_from_timm(timm_model, "backbone", out_features=["stem", *stages])
    x = torch.randn(2, 3, 96, 64)
    features_only = timm.create_model(ConvNextHooks.variants[variant][0], features_only=True, **_kwargs(variant)).eval()
    trunk = [v for k, v in timm_model.state_dict().items() if not k.startswith(("head.", "norm_pre."))]
    features_only.load_state_dict(dict(zip(features_only.state_dict(), trunk, strict=True)))
    with torch.no_grad():
        maps = backbone(x).feature_maps
        intermediates = timm_model.forward_intermediates(x, intermediates_only=True)
        listed = features_only(x)
    assert len(maps) == 5 and backbone.channels == [m.shape[1] for m in maps]
    torch.testing.assert_close(maps[0], timm_model.stem(x), **TOL)
    for mine, theirs, listed_map in zip(maps[1:], intermediates, listed, strict=True):
        torch.testing.assert_close(mine, theirs, **TOL)
        torch.testing.assert_close(mine, listed_map, **TOL)
    reductions = [info["reduction"] for info in timm_model.feature_info]
    assert backbone.strides[1:] == reductions and backbone.strides[0] == timm_model.stem[0].stride[0] * (
        1 if backbone.config.stem_type == "patch" else 2
    )


def _kwargs(variant: str) -> dict:

    return {**ConvNextHooks.tiny, **ConvNextHooks.variants[variant][1]}


@pytest.mark.parametrize("variant", ["convnext", "v2_grn_linear", "mlp_head"])
def test_training_mode_with_drop_path_matches_timm_draw_for_draw(variant: str) -> None:
    """Stochastic depth draws one mask per block in the same order as timm: same seed, same outputs, and the
    gradients of every parameter agree."""
    timm_model, ours = train_step_matches_timm(variant, drop_path_rate=0.4)
    grads = {k: p.grad for k, p in ours.named_parameters()}
    assert grads["convnext.stages.2.blocks.1.mlp.fc1.weight"] is not None
    theirs = timm_model.stages[2].blocks[1].mlp.fc1.weight.grad
    torch.testing.assert_close(grads["convnext.stages.2.blocks.1.mlp.fc1.weight"], theirs, atol=1e-4, rtol=1e-4)


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    check_gradient_checkpointing("v2_grn_conv_mlp")


def test_channels_last_inputs_give_the_same_numbers() -> None:
    check_channels_last("convnext")


def test_calls_refuse_attentions_give_stem_and_stage_maps_and_explain_bad_inputs() -> None:
    check_stage_model_calls(
        "convnext",
        [
            (16, 16, 16),
            (16, 16, 16),
            (24, 8, 8),
            (32, 4, 4),
            (48, 2, 2),
        ],
    )


@pytest.mark.parametrize(
    ("pooling", "reduce"),
    [
        ("avg", lambda m: m.mean((2, 3))),
        ("max", lambda m: m.amax((2, 3))),
        ("avgmax", lambda m: (m.mean((2, 3)) + m.amax((2, 3))) / 2),
    ],
)
def test_head_pooling_pools_the_final_map_then_pre_logits(pooling, reduce) -> None:
    timm_model = make_timm("mlp_head")
    model = vitzoo_from_timm(timm_model, "classifier", head_pooling=pooling)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        pooled = timm_model.head.pre_logits(
            timm_model.head.norm(reduce(timm_model.forward_features(x))[..., None, None]).flatten(1)
        )
        torch.testing.assert_close(model(x).logits, timm_model.head.fc(pooled), **TOL)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"stem_type": "hex"}, "Unknown stem_type 'hex'"),
        ({"norm_type": "batchnorm"}, "Unknown norm_type 'batchnorm'"),
        ({"head_norm_first": True, "head_hidden_size": 64}, "head_hidden_size .* needs head_norm_first=False"),
        ({"kernel_sizes": [7, 7]}, "kernel_sizes lists 2 values; give one per stage"),
        (
            {"depths": [1, 1], "hidden_sizes": [8, 16, 32], "stage_strides": [1, 2], "kernel_sizes": [7, 7]},
            "one value per stage",
        ),
        ({"global_pool": "token"}, "Unknown global_pool 'token'"),
        ({"head_pooling": "token_avg"}, "Unknown head_pooling 'token_avg'"),
    ],
)
def test_bad_config_errors_name_the_problem(overrides, message) -> None:
    with pytest.raises(ValueError, match=message):
        VitzooConvNextConfig(**overrides)
