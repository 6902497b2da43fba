"""The resnet family against timm: every flag set of timm's ResNet entrypoints, perturbed, at several sizes."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from conversion.common import UnsupportedArchitecture
from conversion.families import family_for
from conversion.resnet import ResNetHooks
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
from vitzoo_hf import VitzooResNetConfig, VitzooResNetModel

# The native size, larger non-square ones, and sizes that are not multiples of 32 (each stride-2 step rounds up,
# as timm's padded convolutions do); average-pool anti-aliasing takes multiples of 32 only, as in timm.
SIZES = [(64, 64), (96, 64), (64, 160), (72, 40), (33, 47)]
EVEN_SIZES = [(64, 64), (96, 64), (64, 160)]
TOL = dict(atol=1e-5, rtol=1e-5)


def timm_stages(timm_model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The stem's map (after act1, stride 2), then each stage's: timm's ``features_only`` order."""
    return timm_model.forward_intermediates(x, intermediates_only=True)


def sizes_for(ours: nn.Module) -> list[tuple[int, int]]:
    return EVEN_SIZES if ours.config.aa_type == "avgpool" else SIZES


@pytest.mark.parametrize("variant", sorted(ResNetHooks.variants))
def test_outputs_equal_timm_at_every_size(variant: str) -> None:
    timm_model = make_timm(variant)
    ours = vitzoo_from_timm(timm_model, "classifier")
    for _, base in stage_outputs_match_timm(timm_model, ours, sizes_for(ours), timm_stages):
        assert len(base.hidden_states) == 5


def test_flags_are_read_off_timm() -> None:
    """The config fields each variant needs come from the timm model itself, not from defaults."""
    expect = {
        "resnet50d_deep_avg_down": dict(stem_type="deep", avg_down=True, head_dropout=0.1),
        "resnet26t_tiered": dict(stem_type="deep_tiered", deep_stem_width=32, stem_channels=64),
        "resnext_groups": dict(cardinality=32, base_width=4),
        "wide": dict(base_width=128),
        "seresnext_se": dict(attn_type="se", se_ratio=1 / 16),
        "resnetrs_se_quarter_stem_conv": dict(attn_type="se", se_ratio=0.25, replace_stem_pool=True),
        "senet154_reduce_first_k3": dict(block_reduce_first=2, down_kernel_size=3, cardinality=64),
        "ecaresnetlight_eca": dict(attn_type="eca", stem_type="", avg_down=True),
        "aa_avgpool": dict(aa_type="avgpool"),
        "blurpool_stem_conv": dict(aa_type="blurpool", replace_stem_pool=True),
        "groupnorm": dict(norm_type="groupnorm", norm_groups=32),
        "mixed_blocks": dict(block_types=["basic", "basic", "bottleneck", "basic"]),
        "silu_max_pool": dict(hidden_act="silu", global_pool="max"),
    }
    for variant, fields in expect.items():
        config = family_for(make_timm(variant)).config_from_timm(make_timm(variant))
        assert {k: getattr(config, k) for k in fields} == fields, variant


@pytest.mark.parametrize("variant", ["resnet50", "resnet18_basic", "resnetrs_se_quarter_stem_conv", "blurpool"])
def test_backbone_maps_equal_forward_intermediates_and_features_only(variant: str) -> None:
    timm_model = make_timm(variant)
    names = ["stem", "stage1", "stage2", "stage3", "stage4"]
    backbone = vitzoo_from_timm(timm_model, "backbone", out_features=names)
    x = torch.randn(2, 3, 96, 64)
    entrypoint, overrides = ResNetHooks.variants[variant]
    features_only = timm.create_model(entrypoint, features_only=True, **{**ResNetHooks.tiny, **overrides}).eval()
    trunk = {k: v for k, v in timm_model.state_dict().items() if not k.startswith("fc.")}
    features_only.load_state_dict(trunk)
    with torch.no_grad():
        maps = backbone(x).feature_maps
        intermediates = timm_model.forward_intermediates(x, intermediates_only=True)
        listed = features_only(x)
    assert len(maps) == 5 and backbone.channels == [m.shape[1] for m in maps]
    for mine, theirs, listed_map in zip(maps, intermediates, listed, strict=True):
        torch.testing.assert_close(mine, theirs, **TOL)
        torch.testing.assert_close(mine, listed_map, **TOL)
    assert backbone.strides == [info["reduction"] for info in features_only.feature_info] == [2, 4, 8, 16, 32]
    assert backbone.channels == features_only.feature_info.channels()


@pytest.mark.parametrize("variant", ["resnet50", "resnetrs_se_quarter_stem_conv", "blurpool", "aa_avgpool"])
def test_pooled_stem_map_is_taken_after_the_stem_pool_at_stride_4(variant: str) -> None:
    """``stem_output="pool"``: the stem's map after its pool (max pool, ResNet-RS's strided conv, or the
    anti-aliased pools), as transformers' ResNetBackbone names "stem"; the stages' maps are unchanged."""
    timm_model = make_timm(variant)
    names = ["stem", "stage1", "stage2", "stage3", "stage4"]
    backbone = vitzoo_from_timm(timm_model, "backbone", out_features=names, stem_output="pool")
    model = vitzoo_from_timm(timm_model, "model", stem_output="pool")
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        maps = backbone(x).feature_maps
        hidden_states = model(x, output_hidden_states=True).hidden_states
        theirs = timm_model.forward_intermediates(x, intermediates_only=True)
        pooled_stem = timm_model.maxpool(theirs[0])
    assert pooled_stem.shape[-2:] == (24, 16)
    for mine in (maps, hidden_states):
        torch.testing.assert_close(mine[0], pooled_stem, **TOL)
        for index in range(1, 5):
            torch.testing.assert_close(mine[index], theirs[index], **TOL)
    assert backbone.strides == [4, 4, 8, 16, 32]
    assert backbone.channels == [m.shape[1] for m in maps]
    with pytest.raises(ValueError, match="Unknown stem_output 'maxpool'"):
        VitzooResNetConfig(stem_output="maxpool")


@pytest.mark.parametrize("variant", ["resnet50", "groupnorm", "seresnext_se"])
def test_training_mode_batchnorm_and_drop_path_match_timm_draw_for_draw(variant: str) -> None:
    """In train mode BatchNorm normalises by batch statistics and updates its running ones; stochastic depth draws
    one mask per block in timm's order. Same seed: same outputs, same statistics after, same gradients."""
    timm_model, ours = train_step_matches_timm(variant, drop_path_rate=0.3)
    mapped = family_for(timm_model).convert_state_dict(timm_model.state_dict())
    after = ours.state_dict()
    for key, value in mapped.items():  # running_mean / running_var / num_batches_tracked moved alike
        torch.testing.assert_close(after[key], value, **TOL, msg=key)
    if variant != "groupnorm":
        assert int(after["resnet.stem.bn1.num_batches_tracked"]) == 1 + int(
            make_timm(variant).state_dict()["bn1.num_batches_tracked"]
        )
    mine = dict(ours.named_parameters())["resnet.stages.2.blocks.1.conv2.weight"].grad
    torch.testing.assert_close(mine, timm_model.layer3[1].conv2.weight.grad, atol=1e-4, rtol=1e-4)


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    check_gradient_checkpointing("seresnext_se")


def test_channels_last_inputs_give_the_same_numbers() -> None:
    check_channels_last("seresnext_se")


def test_new_model_starts_as_timm_does() -> None:
    """From scratch (no checkpoint): each block's last norm starts at zero (``zero_init_last``), so every block
    starts as its shortcut; convs are Kaiming-normal with fan-out, norms at identity."""
    config = VitzooResNetConfig(depths=[1, 1, 1, 1], hidden_sizes=[64, 128, 256, 512], num_labels=3)
    model = VitzooResNetModel(config)
    for stage in model.stages:
        for block in stage.blocks:
            assert torch.count_nonzero(block.bn3.weight) == 0
            assert torch.all(block.bn1.weight == 1) and torch.all(block.bn1.running_var == 1)
    conv = model.stages[3].blocks[0].conv2.weight  # fan out = 128 * 9
    assert abs(conv.std().item() - (2 / (128 * 9)) ** 0.5) < 0.2 * (2 / (128 * 9)) ** 0.5
    kept = VitzooResNetModel(VitzooResNetConfig(depths=[1, 1, 1, 1], zero_init_last=False))
    assert torch.all(kept.stages[0].blocks[0].bn3.weight == 1)


def test_calls_refuse_attentions_give_stem_and_stage_maps_and_explain_bad_inputs() -> None:
    check_stage_model_calls(
        "resnet50",
        [
            (64, 32, 32),
            (64, 16, 16),
            (96, 8, 8),
            (128, 4, 4),
            (192, 2, 2),
        ],
    )


def test_avgpool_anti_aliasing_names_the_sizes_it_takes() -> None:
    timm_model = make_timm("aa_avgpool")
    ours = vitzoo_from_timm(timm_model, "classifier")
    x = torch.randn(1, 3, 72, 40)
    with pytest.raises(RuntimeError):  # timm's own model fails on the residual sum
        timm_model(x)
    with pytest.raises(ValueError, match=r"A 72x40 input leaves an odd-sized map .* e\.g\. 64x32"):
        ours(x)
    ours(torch.randn(1, 3, 33, 63))  # odd at the input, even at every stage: fine, as in timm
    timm_model(torch.randn(1, 3, 33, 63))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(aa_layer=timm.layers.BlurPool2d, block_args=dict(attn_layer="cbam")), "block attention CbamModule"),
        (dict(output_stride=16), "dilated ResNet stages"),
        (dict(drop_block_rate=0.1), "DropBlock"),
        (dict(norm_layer="layernorm2d"), "norm layer LayerNorm2d is not supported"),
        (dict(block_args=dict(attn_layer="gc")), "block attention GlobalContext"),
    ],
)
def test_unsupported_timm_options_are_refused_by_name(kwargs, message) -> None:
    timm_model = perturb(timm.create_model("resnet50", **{**ResNetHooks.tiny, **kwargs})).eval()
    with pytest.raises(UnsupportedArchitecture, match=message):
        family_for(timm_model).config_from_timm(timm_model)


@pytest.mark.parametrize("name", ["ecaresnet50d_pruned", "ecaresnet101d_pruned"])
def test_timm_pruned_models_keep_every_blocks_widths_and_their_parents_eca_kernels(name: str) -> None:
    """timm's real pruned layouts (its ``_pruned/*.txt``), built on the meta device: the config reads every
    block's widths and the parent's ECA kernels, and the model it rebuilds has every one of timm's shapes."""
    with torch.device("meta"):
        pruned = timm.create_model(name)
        config = family_for(pruned).config_from_timm(pruned)  # checks every weight shape against timm's
    stages = [getattr(pruned, f"layer{i}") for i in range(1, 5)]
    assert config.block_inner_widths == [[[b.conv1.out_channels, b.conv2.out_channels] for b in s] for s in stages]
    assert config.hidden_sizes == [s[0].conv3.out_channels for s in stages]
    assert config.eca_kernel_sizes == [s[0].se.conv.kernel_size[0] for s in stages] == [5, 5, 5, 7]
    assert any(width % 4 for width in config.hidden_sizes)  # the residual widths are pruned too


TWO_STAGES = dict(depths=[1, 2], block_types=["bottleneck"] * 2, hidden_sizes=[7, 9])  # pruned: odd widths


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"stem_type": "hex"}, "Unknown stem_type 'hex'"),
        ({"block_types": ["basic"] * 4, "hidden_sizes": [64, 128, 256, 512], "cardinality": 32}, "basic blocks"),
        ({"block_types": ["bottleneck"] * 4, "hidden_sizes": [66, 128, 256, 512]}, "66 is not a multiple"),
        ({"block_types": ["basic"] * 3}, "block_types lists 3 values; give one per stage"),
        ({"stage_strides": [1, 2, 2, 2]}, "every ResNet stage halves the map"),
        ({"attn_type": "cbam"}, "Unknown attn_type 'cbam'"),
        ({"aa_type": "blur"}, "Unknown aa_type 'blur'"),
        ({"norm_type": "layernorm"}, "Unknown norm_type 'layernorm'"),
        ({"global_pool": "token"}, "Unknown global_pool 'token'"),
        ({**TWO_STAGES, "block_inner_widths": [[[3, 4]]]}, "block_inner_widths lists 1 stages; give one per stage"),
        ({**TWO_STAGES, "block_inner_widths": [[[3, 4]], [[3, 4], [5]]]}, r"\[1\] is \[\[3, 4\], \[5\]\]: give 2"),
        ({**TWO_STAGES, "block_inner_widths": [[[4, 8]], [[4, 6], [4, 4]]], "cardinality": 4}, "must divide by 4"),
        ({"eca_kernel_sizes": [3, 3, 3, 5]}, "eca_kernel_sizes .* needs attn_type='eca'"),
    ],
)
def test_bad_config_errors_name_the_problem(overrides, message) -> None:
    with pytest.raises(ValueError, match=message):
        VitzooResNetConfig(**overrides)
