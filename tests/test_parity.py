"""Numerical parity with timm for every variant of every family, on perturbed weights (contract 4, tiny: 1e-5)."""

from __future__ import annotations

import pytest
import torch

from conversion.families import conversions
from tests.helpers import make_timm, vitzoo_from_timm

TOL = dict(atol=1e-5, rtol=1e-5)
# Every variant of every token family in the registry (stage families: their own test files and test_stage_parity).
VARIANTS = sorted(v for h in conversions() if h.size_rule == "interpolate_pos_encoding" for v in h.variants)


def _inputs(timm_model, size: tuple[int, int] | None = None, batch: int = 2) -> torch.Tensor:
    height, width = size or timm_model.patch_embed.img_size
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(1))


def _other_sizes(timm_model) -> list[tuple[int, int]]:
    """A larger and a non-square size, both multiples of the patch (timm asserts that too)."""
    ph, pw = timm_model.patch_embed.patch_size
    height, width = timm_model.patch_embed.img_size
    return [(height + 2 * ph, width + 2 * pw), (height - ph, width + 3 * pw)]


def _timm_hidden_states(timm_model, x: torch.Tensor) -> list[torch.Tensor]:
    """Embedding output then every block output, prefix tokens first (as our hidden_states)."""
    embed = timm_model._pos_embed(timm_model.patch_embed(x))
    if isinstance(embed, tuple):  # Eva returns (tokens, rope)
        embed = embed[0]
    embed = timm_model.norm_pre(embed)
    blocks = timm_model.forward_intermediates(
        x, indices=None, norm=False, output_fmt="NLC", intermediates_only=True, return_prefix_tokens=True
    )
    if timm_model.num_prefix_tokens:
        blocks = [torch.cat([prefix, patches], dim=1) for patches, prefix in blocks]
    return [embed, *blocks]


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_native_size_parity(variant: str, attn: str) -> None:
    timm_model = make_timm(variant)
    model = vitzoo_from_timm(timm_model, "model", attn=attn)
    classifier = vitzoo_from_timm(timm_model, "classifier", attn=attn)
    x = _inputs(timm_model)
    with torch.no_grad():
        features = timm_model.forward_features(x)
        pre_logits = timm_model.forward_head(features, pre_logits=True)
        expected_logits = timm_model(x)
        expected_states = _timm_hidden_states(timm_model, x)
        out = model(x, output_hidden_states=True)
        logits = classifier(x).logits
    torch.testing.assert_close(out.last_hidden_state, features, **TOL)
    torch.testing.assert_close(out.pooler_output, pre_logits, **TOL)
    torch.testing.assert_close(logits, expected_logits, **TOL)
    assert len(out.hidden_states) == len(expected_states) == timm_model.blocks.__len__() + 1
    for ours, theirs in zip(out.hidden_states, expected_states, strict=True):
        torch.testing.assert_close(ours, theirs, **TOL)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_interpolated_sizes_parity(variant: str, attn: str) -> None:
    """interpolate_pos_encoding=True equals timm with dynamic_img_size=True (antialiased bicubic resampling)."""
    timm_model = make_timm(variant, dynamic=True)
    classifier = vitzoo_from_timm(timm_model, "classifier", attn=attn)
    for size in _other_sizes(timm_model):
        x = _inputs(timm_model, size)
        with torch.no_grad():
            features = timm_model.forward_features(x)
            expected_states = _timm_hidden_states(timm_model, x)
            logits = classifier(x, interpolate_pos_encoding=True).logits
            base = classifier.base_model(x, interpolate_pos_encoding=True, output_hidden_states=True)
            expected_logits = timm_model(x)
        torch.testing.assert_close(base.last_hidden_state, features, **TOL)
        torch.testing.assert_close(base.pooler_output, timm_model.forward_head(features, pre_logits=True), **TOL)
        torch.testing.assert_close(logits, expected_logits, **TOL)
        for ours, theirs in zip(base.hidden_states, expected_states, strict=True):
            torch.testing.assert_close(ours, theirs, **TOL)


@pytest.mark.parametrize("variant", VARIANTS)
def test_backbone_parity(variant: str) -> None:
    """Feature maps equal timm forward_intermediates (NCHW, with and without the final norm, two sizes)."""
    timm_model = make_timm(variant, dynamic=True)
    for apply_norm in (True, False):
        backbone = vitzoo_from_timm(
            timm_model, "backbone", out_features=["stage1", "stage2"], apply_layernorm=apply_norm
        )
        assert backbone.channels == [timm_model.embed_dim] * 2
        for size in [None, _other_sizes(timm_model)[1]]:
            x = _inputs(timm_model, size)
            with torch.no_grad():
                expected = timm_model.forward_intermediates(x, indices=[0, 1], norm=apply_norm, intermediates_only=True)
                maps = backbone(x, interpolate_pos_encoding=size is not None).feature_maps
            assert len(maps) == 2
            for ours, theirs in zip(maps, expected, strict=True):
                assert ours.shape == theirs.shape
                torch.testing.assert_close(ours, theirs, **TOL)


@pytest.mark.parametrize("variant", ["dinov2_reg", "siglip_map", "deit_distilled", "dinov3", "sapiens2_gqa_rms"])
def test_eager_attentions_are_softmax_rows_and_match_sdpa(variant: str) -> None:
    """output_attentions returns real probabilities from the eager path, even on an sdpa model."""
    timm_model = make_timm(variant)
    model = vitzoo_from_timm(timm_model, "model", attn="sdpa")
    x = _inputs(timm_model)
    with torch.no_grad():
        with_attn = model(x, output_attentions=True)
        plain = model(x)
    seq = x.shape[-1] // 8 * x.shape[-2] // 8 + timm_model.num_prefix_tokens
    assert len(with_attn.attentions) == 2
    for weights in with_attn.attentions:
        assert weights.shape == (2, 4, seq, seq)
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, seq))
    torch.testing.assert_close(with_attn.last_hidden_state, plain.last_hidden_state, **TOL)


@pytest.mark.parametrize("variant", ["dinov2_reg", "dinov3"])
def test_half_precision_runs_close_to_fp32(variant: str) -> None:
    timm_model = make_timm(variant)
    model = vitzoo_from_timm(timm_model, "model")
    x = _inputs(timm_model)
    with torch.no_grad():
        reference = model(x).last_hidden_state
        half = model.to(torch.bfloat16)(x.to(torch.bfloat16)).last_hidden_state
    assert half.dtype == torch.bfloat16
    relative = (half.float() - reference).norm() / reference.norm()
    assert relative < 2e-2, f"bf16 relative error {relative:.3e}"


@pytest.mark.parametrize("variant", ["dinov2_reg", "siglip_map", "deit_distilled", "dinov3", "rope_mixed"])
def test_flex_attention_parity(variant: str) -> None:
    timm_model = make_timm(variant)
    classifier = vitzoo_from_timm(timm_model, "classifier", attn="flex_attention")
    x = _inputs(timm_model)
    with torch.no_grad():
        torch.testing.assert_close(classifier(x).logits, timm_model(x), **TOL)


def test_rope_training_augmentation_matches_timm() -> None:
    """Sapiens2 trains with DINOv3's RoPE rescale augmentation: same seed, same random transform as timm;
    eval stays deterministic."""
    timm_model = make_timm("sapiens2_gqa_rms", dynamic=True)
    model = vitzoo_from_timm(timm_model, "model", attn="eager")
    assert model.rope.rescale == 2.0
    x = _inputs(timm_model)
    timm_model.train()
    model.train()
    with torch.no_grad():
        torch.manual_seed(7)
        expected = timm_model.forward_features(x)
        torch.manual_seed(7)
        augmented = model(x).last_hidden_state
        torch.manual_seed(8)
        other_draw = model(x).last_hidden_state
        model.eval()
        plain = model(x).last_hidden_state
    torch.testing.assert_close(augmented, expected, **TOL)
    assert not torch.allclose(augmented, other_draw) and not torch.allclose(augmented, plain)


@pytest.mark.parametrize("variant", ["siglip_map", "dinov2_reg", "eva02_mim"])  # DINOv3 is dynamic-size in timm
def test_native_size_with_a_pixel_remainder_drops_it_like_timm(variant: str) -> None:
    """36 = 4 patches of 8 + 4 pixels, as SigLIP so400m/14 at 384 = 27 patches + 6: timm's conv drops the rest."""
    timm_model = make_timm(variant, img_size=36)
    model = vitzoo_from_timm(timm_model, "model")
    classifier = vitzoo_from_timm(timm_model, "classifier")
    x = _inputs(timm_model)
    with torch.no_grad():
        features = timm_model.forward_features(x)
        out = model(x)
        torch.testing.assert_close(out.last_hidden_state, features, **TOL)
        torch.testing.assert_close(out.pooler_output, timm_model.forward_head(features, pre_logits=True), **TOL)
        torch.testing.assert_close(classifier(x).logits, timm_model(x), **TOL)
    assert features.shape[1] == timm_model.num_prefix_tokens + 16
    with pytest.raises(ValueError, match="not divisible by the patch size 8x8"):
        model(torch.randn(1, 3, 44, 44), interpolate_pos_encoding=True)
