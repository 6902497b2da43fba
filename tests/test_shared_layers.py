"""The shared CNN layer group (``stage_layers.py``) and attention group (``attention_layers.py``) against their timm
twins, on perturbed weights and statistics: what a new family builds from them is timm's computation."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from timm import layers as timm_layers
from timm.models import _efficientnet_blocks as timm_blocks
from torch import nn

from tests.helpers import perturb
from vitzoo_hf import stage_layers
from vitzoo_hf.attention_layers import SelfAttention, attention_function

TOL = dict(atol=1e-6, rtol=1e-6)


def twins(ours: nn.Module, theirs: nn.Module, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """timm's module perturbed, ours holding the same tensors under the same names (strict); both in eval."""
    perturb(theirs, seed)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours.eval(), theirs.eval()


def inputs(channels: int, height: int = 13, width: int = 10) -> torch.Tensor:
    return torch.randn(2, channels, height, width, generator=torch.Generator().manual_seed(3))


def test_make_divisible_is_timms_over_a_range_of_values() -> None:
    for value in [v / 4 for v in range(1, 800)]:
        for divisor, round_limit in ((8, 0.9), (8, 0.0), (4, 0.9)):
            expected = timm_layers.make_divisible(value, divisor, round_limit=round_limit)
            assert stage_layers.make_divisible(value, divisor, round_limit=round_limit) == expected, value


@pytest.mark.parametrize(
    ("kernel", "stride", "size"), [(3, 2, (13, 10)), (5, 2, (16, 9)), (3, 1, (7, 7)), (1, 2, (9, 8))]
)
def test_same_padding_convolution_is_timms_at_odd_and_even_sizes(kernel: int, stride: int, size: tuple) -> None:
    theirs = timm_layers.create_conv2d(6, 8, kernel, stride=stride, padding="same")
    ours, theirs = twins(stage_layers.conv2d(6, 8, kernel, stride, same=True), theirs)
    with torch.no_grad():
        torch.testing.assert_close(ours(inputs(6, *size)), theirs(inputs(6, *size)), **TOL)
    assert isinstance(ours, stage_layers.Conv2dSame) == (stride > 1)


@pytest.mark.parametrize("act", ["relu", "silu", None])
def test_batchnorm_act_is_timms_in_eval_and_train(act: str | None) -> None:
    layer = {"relu": nn.ReLU, "silu": nn.SiLU, None: None}[act]
    theirs = timm_layers.BatchNormAct2d(6, eps=1e-3, act_layer=layer, apply_act=act is not None)
    ours, theirs = twins(stage_layers.BatchNormAct2d(6, eps=1e-3, act=act), theirs)
    x = inputs(6)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), **TOL)
        ours.train(), theirs.train()
        torch.testing.assert_close(ours(x), theirs(x), **TOL)
    torch.testing.assert_close(ours.running_mean, theirs.running_mean, **TOL)


def test_channel_attention_gates_are_timms() -> None:
    x = inputs(16)
    ours, theirs = twins(stage_layers.SEModule(16, 8), timm_layers.SEModule(16, rd_channels=8))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), **TOL)
    for gate, timm_gate in (("sigmoid", nn.Sigmoid), ("hard_sigmoid", nn.Hardsigmoid)):
        theirs = timm_blocks.SqueezeExcite(16, rd_channels=4, act_layer=nn.SiLU, gate_layer=timm_gate)
        ours, theirs = twins(stage_layers.SqueezeExcite(16, 4, act="silu", gate=gate), theirs)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), theirs(x), **TOL)
    ours, theirs = twins(stage_layers.EfficientChannelAttention(16), timm_layers.EcaModule(16))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), **TOL)


GATES = {
    "se_module": (partial(stage_layers.SEModule, 16, 8), partial(timm_layers.SEModule, 16, rd_channels=8)),
    "squeeze_excite": (
        partial(stage_layers.SqueezeExcite, 16, 4, act="silu"),
        partial(timm_blocks.SqueezeExcite, 16, rd_channels=4, act_layer=nn.SiLU),
    ),
    "eca": (partial(stage_layers.EfficientChannelAttention, 16), partial(timm_layers.EcaModule, 16)),
}


@pytest.mark.parametrize("name", GATES)
def test_a_gate_built_inplace_writes_over_its_input_only_where_no_graph_reads_it(name: str) -> None:
    """Blocks build their gates ``inplace`` (the gated map is the block's own norm output): without a graph the
    products land in that map, bit for bit timm's out-of-place ones; with a graph, or built standalone, the
    input is left alone and gradients are timm's."""
    ours_cls, timm_cls = GATES[name]
    ours, theirs = twins(ours_cls(inplace=True), timm_cls())
    x = inputs(16)
    with torch.no_grad():
        expected = theirs(x)
        overwritten = x.clone()
        assert ours(overwritten).data_ptr() == overwritten.data_ptr()
        assert torch.equal(overwritten, expected)
        untouched = x.clone()
        standalone = ours_cls().eval()
        standalone.load_state_dict(ours.state_dict())
        assert torch.equal(standalone(untouched), expected) and torch.equal(untouched, x)
    # a graph reads the input: the gate computes out of place, its gradients timm's
    mine, reference = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours(mine).square().sum().backward()
    theirs(reference).square().sum().backward()
    assert torch.equal(mine, x)
    torch.testing.assert_close(mine.grad, reference.grad, **TOL)
    for (key, grad), timm_grad in zip(
        ((k, p.grad) for k, p in ours.named_parameters()), (p.grad for p in theirs.parameters()), strict=True
    ):
        torch.testing.assert_close(grad, timm_grad, **TOL, msg=key)


def test_overwritable_refuses_graphs_and_mixed_dtypes() -> None:
    """The in-place rule: the same bits as out of place, so never where autograd reads a tensor or where an
    out-of-place op would promote (autocast's bf16 maps against fp32 gates)."""
    from vitzoo_hf.common_layers import overwritable

    plain = torch.ones(2)
    assert overwritable(plain, torch.ones(2))
    assert not overwritable(plain, torch.ones(2, requires_grad=True))
    assert not overwritable(torch.ones(2, requires_grad=True))
    assert not overwritable(plain.bfloat16(), plain)


def test_a_skip_block_adds_its_input_in_place_over_its_own_branch_only() -> None:
    """The residual add lands in the branch's last map where no graph reads it: the block's input, which a caller
    (or a skip of the next block) still holds, is never written; outputs are timm's bit for bit, and training
    (out of place) gives timm's gradients."""
    theirs = timm_blocks.InvertedResidual(16, 16, 3, 1, exp_ratio=4.0, act_layer=nn.SiLU)
    ours = stage_layers.InvertedResidual(16, 16, 64, 3, 1, act="silu")
    ours, theirs = twins(ours, theirs)
    x = inputs(16)
    kept = x.clone()
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))
    assert torch.equal(x, kept)
    mine, reference = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours.train(), theirs.train()
    ours(mine).square().sum().backward()
    theirs(reference).square().sum().backward()
    torch.testing.assert_close(mine.grad, reference.grad, **TOL)


@pytest.mark.parametrize("kind", stage_layers.AA_TYPES)
def test_anti_aliasing_is_timms(kind: str) -> None:
    theirs = timm_layers.create_aa(timm_layers.BlurPool2d if kind == "blurpool" else nn.AvgPool2d, 6, stride=2)
    with torch.no_grad():
        torch.testing.assert_close(stage_layers.anti_alias(kind, 6, 2)(inputs(6, 12, 10)), theirs(inputs(6, 12, 10)))
    with pytest.raises(ValueError, match=r"Unknown anti-aliasing 'lanczos'; expected one of 'avgpool', 'blurpool'"):
        stage_layers.anti_alias("lanczos", 6, 2)


@pytest.mark.parametrize(
    ("stride", "in_channels", "out_channels", "se", "pw_act", "same"),
    [(1, 16, 16, True, False, False), (2, 16, 24, False, True, True), (1, 16, 16, False, False, True)],
)
def test_depthwise_separable_block_is_timms(stride, in_channels, out_channels, se, pw_act, same) -> None:
    timm_se = partial(timm_blocks.SqueezeExcite, rd_ratio=0.25) if se else None
    theirs = timm_blocks.DepthwiseSeparableConv(
        in_channels, out_channels, 3, stride, pad_type="same" if same else "", pw_act=pw_act, act_layer=nn.SiLU,
        se_layer=timm_se,
    )  # fmt: skip
    gate = stage_layers.SqueezeExcite(in_channels, 4, act="silu") if se else None
    ours = stage_layers.DepthwiseSeparableConv(
        in_channels, out_channels, 3, stride, act="silu", se=gate, pw_act=pw_act, same=same
    )
    ours, theirs = twins(ours, theirs)
    x = inputs(in_channels)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), **TOL)
    assert ours.has_skip == theirs.has_skip


@pytest.mark.parametrize(
    ("stride", "kernel", "in_channels", "out_channels", "se", "same"),
    [(1, 3, 16, 16, True, False), (2, 5, 16, 24, True, True), (2, 3, 16, 16, False, False)],
)
def test_inverted_residual_block_is_timms(stride, kernel, in_channels, out_channels, se, same) -> None:
    mid = in_channels * 4
    timm_se = partial(timm_blocks.SqueezeExcite, rd_channels=4) if se else None
    theirs = timm_blocks.InvertedResidual(
        in_channels, out_channels, kernel, stride, pad_type="same" if same else "", exp_ratio=4.0,
        act_layer=nn.SiLU, se_layer=timm_se,
    )  # fmt: skip
    gate = stage_layers.SqueezeExcite(mid, 4, act="silu") if se else None
    ours = stage_layers.InvertedResidual(in_channels, out_channels, mid, kernel, stride, act="silu", se=gate, same=same)
    ours, theirs = twins(ours, theirs)
    x = inputs(in_channels)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), **TOL)
    assert ours.has_skip == theirs.has_skip


def test_projection_shortcut_is_resnets() -> None:
    from timm.models.resnet import downsample_avg, downsample_conv

    for avg_down, timm_fn in ((False, downsample_conv), (True, downsample_avg)):
        theirs = timm_fn(8, 16, kernel_size=3 if not avg_down else 1, stride=2)
        ours = stage_layers.projection_shortcut(8, 16, 2, nn.BatchNorm2d(16), 3 if not avg_down else 1, avg_down)
        ours, theirs = twins(ours, theirs)
        with torch.no_grad():
            torch.testing.assert_close(ours(inputs(8)), theirs(inputs(8)), **TOL)


def test_map_norms_say_what_they_take() -> None:
    assert isinstance(stage_layers.norm2d("groupnorm", 8, groups=2), nn.GroupNorm)
    with pytest.raises(ValueError, match=r"Unknown map norm 'layernorm'; expected one of 'batchnorm', 'groupnorm'"):
        stage_layers.norm2d("layernorm", 8)


class BiasConfig:
    _attn_implementation = "eager"


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_attention_bias_is_added_to_the_logits_before_the_softmax(implementation: str) -> None:
    """The attention group takes any config (no token fields) and an additive bias, as relative-position families
    need: equal to the softmax computed by hand, on both paths."""
    attention = SelfAttention(BiasConfig(), 16, 2, qkv_bias=True, proj_bias=True).eval()
    perturb(attention)
    x = torch.randn(2, 9, 16, generator=torch.Generator().manual_seed(5))
    bias = torch.randn(2, 9, 9, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        out, weights = attention(x, attend=attention_function(implementation, False), attn_bias=bias)
        q, k, v = attention.qkv(x).reshape(2, 9, 3, 2, 8).permute(2, 0, 3, 1, 4)
        probs = ((q * 8**-0.5) @ k.transpose(-2, -1) + bias).softmax(-1)
        expected = attention.proj((probs @ v).transpose(1, 2).reshape(2, 9, 16))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    if implementation == "eager":
        torch.testing.assert_close(weights, probs, atol=1e-6, rtol=1e-6)
