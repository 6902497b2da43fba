"""The efficientnet family against timm: every flag set of timm's EfficientNet builder models, perturbed, at
several sizes (odd ones too: the TF ports pad per input size)."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
from torch import nn

from conversion.common import UnsupportedArchitecture
from conversion.efficientnet import EfficientNetHooks
from conversion.families import family_for
from conversion.truncation import build_empty, materialize, meta_tensors
from tests.helpers import (
    check_channels_last,
    check_gradient_checkpointing,
    check_stage_model_calls,
    make_timm,
    perturb,
    stage_outputs_match_timm,
    train_step_matches_timm,
    vitzoo_from_timm,
)
from vitzoo_hf import VitzooEfficientNetConfig, VitzooEfficientNetForImageClassification

SIZES = [(64, 64), (96, 64), (72, 40), (33, 47)]
TOL = dict(atol=1e-5, rtol=1e-5)
HOOKS = family_for(make_timm("efficientnet_b0"))


def timm_stage_maps(timm_model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The stem's map, then every stage's, computed with timm's own modules."""
    maps = [timm_model.bn1(timm_model.conv_stem(x))]
    for stage in timm_model.blocks:
        maps.append(stage(maps[-1]))
    return maps


@pytest.mark.parametrize("variant", sorted(EfficientNetHooks.variants))
def test_outputs_equal_timm_at_every_size(variant: str) -> None:
    timm_model = make_timm(variant)
    ours = vitzoo_from_timm(timm_model, "classifier")
    for x, base in stage_outputs_match_timm(timm_model, ours, SIZES, timm_stage_maps):
        assert len(base.hidden_states) == len(timm_model.blocks) + 1
        with torch.no_grad():
            intermediates = timm_model.forward_intermediates(x, intermediates_only=True)
        for info, their in zip(timm_model.feature_info, intermediates, strict=True):
            torch.testing.assert_close(base.hidden_states[info["stage"]], their, **TOL)


def test_flags_are_read_off_timm() -> None:
    """The config fields each variant needs come from the timm model itself, not from defaults."""
    expect = {
        "efficientnet_b0": dict(same_padding=False, norm_eps=1e-5, hidden_act="silu", head_order="efficientnet"),
        "tf_efficientnet_b0_same": dict(same_padding=True, norm_eps=1e-3),
        "efficientnet_lite0_relu6": dict(hidden_act="relu6"),
        "mobilenetv3_large_100": dict(hidden_act="hardswish", head_order="mobilenetv3", conv_head_norm=False),
        "mobilenetv4_conv_small": dict(hidden_act="relu", head_order="mobilenetv3", conv_head_norm=True),
        "efficientnet_max_pool": dict(global_pool="max"),
    }
    for variant, fields in expect.items():
        config = HOOKS.config_from_timm(make_timm(variant))
        assert {k: getattr(config, k) for k in fields} == fields, variant
    specs = {v: HOOKS.config_from_timm(make_timm(v)).block_specs for v in ("mixnet_s_mixed", "mobilenetv3_large_100")}
    mixed = [s for stage in specs["mixnet_s_mixed"] for s in stage if isinstance(s["kernel"], list)]
    assert mixed and any(isinstance(s["exp_kernel"], list) for s in mixed)
    gated = [s for stage in specs["mobilenetv3_large_100"] for s in stage if s.get("se_channels")]
    # MobileNetV3's squeeze-excite runs ReLU in every block, also in the hard-swish ones (stored where it differs)
    assert gated and all(s["se_gate"] == "hard_sigmoid" and (s["se_act"] or s["act"]) == "relu" for s in gated)
    condconv = HOOKS.config_from_timm(make_timm("efficientnet_cc_condconv")).block_specs
    assert {s["num_experts"] for stage in condconv for s in stage if s["type"] == "ir"} == {0, 4}
    hybrid = HOOKS.config_from_timm(make_timm("mobilenetv4_hybrid_medium")).block_specs
    attention = [s for stage in hybrid for s in stage if s["type"] == "mqa"]
    assert {s["kv_stride"] for s in attention} == {1, 2} and all(s["layer_scale"] == 1e-5 for s in attention)
    assert {s["type"] for stage in hybrid for s in stage} == {"cn", "er", "uir", "mqa"}


def test_block_specs_fold_equal_blocks_into_runs() -> None:
    """Runs of equal blocks are one spec with ``repeats`` (a stage's first block differs from the rest by its
    stride and its input, hence expanded, width); the stages' depths and widths are timm's."""
    timm_model = make_timm("efficientnet_b0")
    config = HOOKS.config_from_timm(timm_model)
    assert config.depths == [len(stage) for stage in timm_model.blocks] == [1, 2, 2, 3, 3, 4, 1]
    assert max(len(stage) for stage in config.block_specs) == 2 and sum(map(len, config.block_specs)) < sum(
        config.depths
    )
    for stage in config.block_specs:  # folding is maximal: neighbouring runs differ in more than stride and count
        for first, second in pairwise(stage):
            assert {**second, "stride": first["stride"], "repeats": first["repeats"]} != first
    with torch.no_grad():
        maps = timm_stage_maps(timm_model, torch.randn(1, 3, 32, 32))
    assert config.hidden_sizes == [m.shape[1] for m in maps[1:]]
    reloaded = VitzooEfficientNetConfig.from_dict(config.to_dict())
    assert reloaded.block_specs == config.block_specs


@pytest.mark.parametrize("variant", ["efficientnet_b0", "tf_mobilenetv3_small_100_same", "mobilenetv4_hybrid_medium"])
def test_backbone_maps_equal_features_only(variant: str) -> None:
    timm_model = make_timm(variant)
    entrypoint, overrides = EfficientNetHooks.variants[variant]
    features_only = HOOKS.build_tiny(entrypoint, features_only=True, **overrides).eval()
    head = ("conv_head.", "bn2.", "norm_head.", "classifier.")
    features_only.load_state_dict({k: v for k, v in timm_model.state_dict().items() if not k.startswith(head)})
    names = [f"stage{info['stage']}" if info["stage"] else "stem" for info in features_only.feature_info.info]
    backbone = vitzoo_from_timm(timm_model, "backbone", out_features=names)
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        maps = backbone(x).feature_maps
        listed = features_only(x)
    assert len(maps) == len(listed) == 5
    for mine, theirs in zip(maps, listed, strict=True):
        torch.testing.assert_close(mine, theirs, **TOL)
    assert [backbone.strides[backbone.stage_names.index(n)] for n in names] == [2, 4, 8, 16, 32]
    assert backbone.channels == features_only.feature_info.channels()


def test_stage_model_calls() -> None:
    timm_model = make_timm("efficientnet_b0")
    with torch.no_grad():
        shapes = [tuple(m.shape[1:]) for m in timm_stage_maps(timm_model, torch.randn(1, 3, 64, 64))]
    check_stage_model_calls("efficientnet_b0", shapes)


@pytest.mark.parametrize("variant", ["efficientnet_b0", "mobilenetv4_hybrid_medium", "efficientnet_cc_condconv"])
def test_train_mode_matches_timm(variant: str) -> None:
    """Stochastic depth per block (timm's draws), BatchNorm statistics and gradients in train mode."""
    timm_model, ours = train_step_matches_timm(variant, drop_path_rate=0.2)
    theirs = {k: v for k, v in timm_model.named_buffers() if "running_mean" in k}
    mine = dict(ours.named_buffers())
    for key, value in theirs.items():
        torch.testing.assert_close(mine[HOOKS.convert_key(key)], value, **TOL)
    grads = {HOOKS.convert_key(k): p.grad for k, p in timm_model.named_parameters()}
    for key, param in ours.named_parameters():
        torch.testing.assert_close(param.grad, grads[key], atol=1e-4, rtol=1e-4, msg=key)


def test_gradient_checkpointing_and_channels_last() -> None:
    check_gradient_checkpointing("mobilenetv4_hybrid_medium")
    check_channels_last("tf_efficientnet_b0_same")


def test_hybrid_returns_attention_maps_on_both_paths() -> None:
    """MobileNetV4 hybrids: ``output_attentions`` gives each attention block's (B, heads, queries, keys) maps, on
    the eager path, with outputs equal to sdpa's; the conv models refuse the flag."""
    timm_model = make_timm("mobilenetv4_hybrid_medium")
    eager = vitzoo_from_timm(timm_model, "classifier", attn="eager")
    sdpa = vitzoo_from_timm(timm_model, "classifier", attn="sdpa")
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        out = eager(x, output_attentions=True)
        torch.testing.assert_close(out.logits, sdpa(x).logits, **TOL)
        torch.testing.assert_close(out.logits, timm_model(x), **TOL)
    specs = [s for stage in eager.config.block_specs for s in stage for _ in range(s["repeats"]) if s["type"] == "mqa"]
    assert len(out.attentions) == len(specs) > 0
    for maps, spec in zip(out.attentions, specs, strict=True):
        assert maps.shape[:2] == (2, spec["num_heads"])
        torch.testing.assert_close(maps.sum(-1), torch.ones(maps.shape[:-1]), **TOL)
    with pytest.raises(ValueError, match="no attention maps"):
        vitzoo_from_timm(make_timm("efficientnet_b0"), "classifier")(x, output_attentions=True)


def test_verification_takes_the_eager_path_only_for_models_that_attend() -> None:
    """A conversion checks the eager attention path against timm where a model has attention blocks, and only
    there (a conv model has no eager path; the flag would be refused)."""
    hybrid, conv = make_timm("mobilenetv4_hybrid_medium"), make_timm("efficientnet_b0")
    assert sorted(HOOKS.verification_inputs(hybrid)) == ["eager", "native", "resized"]
    assert HOOKS.verification_inputs(hybrid)["eager"][1] == {"output_attentions": True}
    assert sorted(HOOKS.verification_inputs(conv)) == ["native", "resized"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(output_stride=16), "dilated or non-square"),
        (dict(aa_layer="avg"), "anti-aliasing"),
    ],
)
def test_unsupported_options_are_refused_by_name(kwargs: dict, message: str) -> None:
    timm_model = HOOKS.build_tiny("efficientnet_b0", **kwargs)
    with pytest.raises(UnsupportedArchitecture, match=message):
        HOOKS.config_from_timm(timm_model)


def test_bad_block_specs_get_a_clear_error() -> None:
    with pytest.raises(ValueError, match="block type 'xx' is not supported; expected one of 'cn'"):
        VitzooEfficientNetConfig(block_specs=[[{"type": "xx", "out_channels": 8}]])
    with pytest.raises(ValueError, match=r"a 'ds' block has no field\(s\) mid_channels"):
        VitzooEfficientNetConfig(block_specs=[[{"type": "ds", "out_channels": 8, "mid_channels": 4}]])
    with pytest.raises(ValueError, match="needs mid_channels"):
        VitzooEfficientNetConfig(block_specs=[[{"type": "ir", "out_channels": 8}]])
    with pytest.raises(ValueError, match="repeats=0 must be a whole number"):
        VitzooEfficientNetConfig(block_specs=[[{"type": "cn", "out_channels": 8, "repeats": 0}]])
    with pytest.raises(ValueError, match="Only a stage's first block spec may be strided"):
        specs = [[{"type": "cn", "out_channels": 8}, {"type": "cn", "out_channels": 8, "stride": 2}]]
        VitzooEfficientNetConfig(block_specs=specs)
    model = VitzooEfficientNetForImageClassification(VitzooEfficientNetConfig(stem_channels=8, head_channels=16)).eval()
    assert model(torch.randn(1, 3, 32, 32)).logits.shape == (1, 2)


def test_truncation_keeps_every_run_of_a_stage() -> None:
    """``truncate`` cuts each run of equal blocks, not each stage: FBNetV3's stages change width between runs, so
    keeping a stage's first blocks would feed the next stage the wrong width. The cut model runs and converts."""
    timm_model = HOOKS.build_tiny("fbnetv3_b").eval()
    widths = [[b.conv_pwl.out_channels for b in stage if hasattr(b, "conv_pwl")] for stage in timm_model.blocks]
    assert any(len(set(w)) > 1 for w in widths)  # a stage with runs of two widths
    blocks = sum(len(stage) for stage in timm_model.blocks)
    cut = perturb(HOOKS.truncate(timm_model, 1)).eval()
    assert sum(len(stage) for stage in cut.blocks) < blocks
    ours = vitzoo_from_timm(cut, "classifier")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x).logits, cut(x), **TOL)
    assert HOOKS.num_blocks(HOOKS.build_tiny("fbnetv3_b")) > 1 == HOOKS.num_blocks(cut)


def test_pruned_models_build_empty_and_fill() -> None:
    """timm's ``*_pruned`` EfficientNets adapt their layers after the build, on the meta device: filling them
    gives every BatchNorm real statistics, and the config reads off them."""
    model = materialize(build_empty("efficientnet_b1_pruned"))
    assert not meta_tensors(model)
    config = HOOKS.config_from_timm(model)
    assert config.hidden_sizes[-1] == model.blocks[-1][-1].conv_pwl.out_channels
