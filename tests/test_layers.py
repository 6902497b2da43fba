"""Shared layers: in-place activations, and the in-place inference path of the blocks that use them."""

from __future__ import annotations

import pytest
import torch
from transformers.activations import ACT2FN

from tests.helpers import hooks_of, make_timm, vitzoo_from_timm
from vitzoo_hf.common_layers import INPLACE_ACTIVATIONS, Activation


@pytest.mark.parametrize("name", sorted(INPLACE_ACTIVATIONS))
def test_inplace_activation_is_its_transformers_twin_bit_for_bit(name: str) -> None:
    x = torch.randn(4, 50, 64, generator=torch.Generator().manual_seed(0)) * 4
    expected = ACT2FN[name](x)
    overwritten = x.clone()
    with torch.no_grad():
        result = Activation(name, inplace=True)(overwritten)
    assert result.data_ptr() == overwritten.data_ptr()  # no new buffer
    assert torch.equal(result, expected)


@pytest.mark.parametrize("name", ["gelu", "silu"])
def test_inplace_activation_computes_out_of_place_where_autograd_needs_its_input(name: str) -> None:
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(1), requires_grad=True)
    hidden = x * 2  # a non-leaf temporary, as an fc1 output is
    before = hidden.detach().clone()
    Activation(name, inplace=True)(hidden).sum().backward()
    assert torch.equal(hidden, before)
    reference = x.detach().clone().requires_grad_()
    ACT2FN[name](reference * 2).sum().backward()
    assert torch.equal(x.grad, reference.grad)


@pytest.mark.parametrize(("name", "inplace"), [("quick_gelu", True), ("gelu", False)])
def test_activation_without_a_twin_or_without_inplace_never_overwrites(name: str, inplace: bool) -> None:
    x = torch.randn(2, 5)
    before = x.clone()
    with torch.no_grad():
        result = Activation(name, inplace=inplace)(x)
    assert torch.equal(x, before)
    assert torch.equal(result, ACT2FN[name](before))


@pytest.mark.parametrize(
    "variant",
    [
        "convnext",
        "v2_grn_linear",
        "rmsnorm_conv_mlp",
        "dinov2",
        "dinov2_giant_swiglu",
        "siglip_map",
        "aimv2_rms_swiglu",
        "silu_max_pool",
    ],
)
def test_inference_gives_the_training_graph_numbers_bit_for_bit(variant: str) -> None:
    """The in-place path (no autograd graph) and the out-of-place one compute every output, stage map and hidden
    state to the same bits, and the in-place one leaves the input and every returned map intact."""
    model = vitzoo_from_timm(make_timm(variant))
    side = 32 if hooks_of(variant).size_rule == "interpolate_pos_encoding" else 64  # the token variants' native size
    x = torch.randn(2, 3, side, side)
    pixels = x.clone()
    with torch.no_grad():
        inference = model(x, output_hidden_states=True)
    graph = model(x, output_hidden_states=True)  # parameters require grad: every block computes out of place
    assert graph.last_hidden_state.requires_grad
    assert torch.equal(x, pixels)
    assert torch.equal(inference.last_hidden_state, graph.last_hidden_state)
    assert torch.equal(inference.pooler_output, graph.pooler_output)
    for index, (mine, reference) in enumerate(zip(inference.hidden_states, graph.hidden_states, strict=True)):
        assert torch.equal(mine, reference), f"hidden state {index}"


def test_convnext_block_writes_the_activation_layer_scale_and_residual_into_its_mlp_buffers() -> None:
    """In inference a block makes four buffers (depthwise conv, norm, fc1, fc2): GELU overwrites fc1's output,
    LayerScale and the residual fc2's."""
    model = vitzoo_from_timm(make_timm("convnext"))
    block = model.stages[1].blocks[0]
    pointers = {}
    block.mlp.fc1.register_forward_hook(lambda module, args, out: pointers.__setitem__("fc1", out.data_ptr()))
    block.mlp.act.register_forward_hook(lambda module, args, out: pointers.__setitem__("act", out.data_ptr()))
    block.mlp.fc2.register_forward_hook(lambda module, args, out: pointers.__setitem__("fc2", out.data_ptr()))
    block.register_forward_hook(lambda module, args, out: pointers.__setitem__("block", out.data_ptr()))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert pointers["act"] == pointers["fc1"]
    assert pointers["block"] == pointers["fc2"]
