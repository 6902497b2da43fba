"""Shared test fixtures: tiny timm models of every supported variant, perturbed, and their vitzoo twins."""

from __future__ import annotations

import random
from functools import partial
from pathlib import Path

import timm
import torch
from timm.layers import BlurPool2d, LayerNorm, RmsNorm, SwiGLU, SwiGLUPacked
from timm.models._prune import adapt_model_from_string
from timm.models.vision_transformer import ResPostBlock

from conversion.families import family_for
from vitzoo_hf import VitzooImageProcessor

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=7)
# RoPE needs head_dim % 4 == 0 with room for several bands: 64 wide, 4 heads.
TINY_EVA = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_classes=7)

# name -> (timm entrypoint, constructor overrides); each exercises the flags its pretrained namesake uses.
VIT_VARIANTS: dict[str, tuple[str, dict]] = {
    "vit": ("vit_base_patch16_224", {}),
    "deit_distilled": ("deit_base_distilled_patch16_224", {}),
    "deit3": ("deit3_base_patch16_224", {"no_embed_class": True, "init_values": 1e-6}),
    "dino": ("vit_small_patch16_224", {"qkv_bias": True, "num_classes": 0}),
    "dinov2": ("vit_base_patch14_dinov2", {"init_values": 1e-5}),
    "dinov2_reg": ("vit_base_patch14_reg4_dinov2", {"init_values": 1e-5, "reg_tokens": 4}),
    "dinov2_giant_swiglu": (
        "vit_giant_patch14_dinov2",
        {"init_values": 1e-5, "mlp_layer": SwiGLUPacked, "act_layer": torch.nn.SiLU, "mlp_ratio": 2.6667 * 2},
    ),
    "clip": (
        "vit_base_patch16_clip_224",
        {"pre_norm": True, "norm_layer": partial(LayerNorm, eps=1e-5), "act_layer": "quick_gelu"},
    ),
    "siglip_map": (
        "vit_base_patch16_siglip_224",
        {"class_token": False, "global_pool": "map", "act_layer": "gelu_tanh", "mlp_ratio": 3.7362},
    ),
    "siglip_gap_reg": (
        "vit_betwixt_patch16_reg4_gap_256",
        {"class_token": False, "reg_tokens": 4, "global_pool": "avg", "no_embed_class": True, "init_values": 1e-5},
    ),
    "avg_fc_norm": ("vit_medium_patch16_gap_256", {"class_token": False, "global_pool": "avg", "fc_norm": True}),
    "avgmax_include_prefix": ("vit_base_patch16_224", {"global_pool": "avgmax", "pool_include_prefix": True}),
    "max_pool": ("vit_base_patch16_224", {"global_pool": "max", "reg_tokens": 1}),
    "map_include_prefix": ("vit_base_patch16_224", {"global_pool": "map", "pool_include_prefix": True}),
    "aimv2_rms_swiglu": (
        "aimv2_large_patch14_224",
        {
            "class_token": False,
            "global_pool": "avg",
            "fc_norm": False,
            "qkv_bias": False,
            "proj_bias": False,
            "act_layer": "silu",
            "norm_layer": partial(RmsNorm, eps=1e-5),
            "embed_norm_layer": partial(RmsNorm, eps=1e-5),
            "mlp_layer": SwiGLU,
            "mlp_ratio": 2.75,
        },
    ),
    "beit3_scale_norms": ("vit_base_patch16_224", {"scale_attn_norm": True, "scale_mlp_norm": True}),
    "qk_norm": ("vit_base_patch16_224", {"qk_norm": True, "qkv_bias": False}),
    "res_post": ("vit_base_patch16_224", {"block_fn": ResPostBlock, "init_values": 1e-5, "class_token": True}),
    "no_final_norm_no_pos": ("vit_base_patch16_224", {"final_norm": False, "pos_embed": "none", "reg_tokens": 2}),
    "nonsquare_ratio": ("vit_base_patch16_224", {"img_size": (32, 48), "patch_size": (8, 4), "mlp_ratio": 2.6153}),
}

# Each is a real timm Eva entrypoint (so its flags are timm's own), shrunk by TINY_EVA and the overrides.
EVA_VARIANTS: dict[str, tuple[str, dict]] = {
    "dinov3": ("vit_small_patch16_dinov3", {"global_pool": "token"}),
    "dinov3_qkvb": ("vit_small_patch16_dinov3_qkvb", {"global_pool": "token"}),
    "dinov3_plus_swiglu_aligned": ("vit_small_plus_patch16_dinov3", {"global_pool": "token", "mlp_ratio": 2.7}),
    "dinov3_7b_style": ("vit_7b_patch16_dinov3", {"global_pool": "token"}),
    "eva02_mim": ("eva02_base_patch14_224", {"ref_feat_shape": (2, 2), "patch_size": 8}),
    "eva02_clip_scale_attn": ("eva02_base_patch16_clip_224", {"ref_feat_shape": (3, 3)}),
    "eva02_enormous_post_norm": ("eva02_enormous_patch14_clip_224", {"patch_size": 8}),
    "eva_giant_abs_pos": ("eva_giant_patch14_224", {"patch_size": 8}),
    "rope_mixed": ("vit_small_patch16_rope_mixed_224", {}),
    "rope_ape_xy": ("vit_small_patch16_rope_ape_224", {}),
    "rope_reg_gap": ("vit_base_patch16_rope_reg1_gap_256", {"ref_feat_shape": (2, 2)}),
    "pe_core_map": ("vit_pe_core_base_patch16_224", {"ref_feat_shape": (2, 2), "attn_pool_num_heads": 8}),
    "pe_spatial_no_final_norm": ("vit_pe_spatial_base_patch16_512", {"ref_feat_shape": (3, 3), "num_classes": 0}),
    "sapiens2_gqa_rms": ("vit_base_patch16_sapiens2", {"num_kv_heads": (4, 2), "global_pool": "token"}),
    "lingbot": ("vit_base_patch16_lingbot", {}),
}

# ConvNeXt: timm's own entrypoints (their flags), shrunk to depths (1, 1, 2, 1) and small widths; 7 classes.
TINY_CONVNEXT = dict(depths=(1, 1, 2, 1), dims=(16, 24, 32, 48), num_classes=7)
CONVNEXT_VARIANTS: dict[str, tuple[str, dict]] = {
    "convnext": ("convnext_tiny", {}),
    "ols_tiered_stem": ("convnext_atto_ols", {}),
    "ols_overlap_stem": ("convnext_nano_ols", {}),
    "zepto_simplenorm_act_stem": ("convnext_zepto_rms_ols", {}),
    "rmsnorm_conv_mlp": ("convnext_atto_rms", {}),
    "v2_grn_conv_mlp": ("convnextv2_atto", {}),
    "v2_grn_linear": ("convnextv2_tiny", {}),
    "head_norm_first": ("convnext_tiny_hnf", {}),
    "mlp_head": ("convnext_large_mlp", {"head_hidden_size": 40}),
    "kernels_silu_no_bias": ("test_convnext3", {"conv_bias": False, "dims": (16, 24, 32, 48)}),
    "gelu_tanh_eps": ("test_convnext", {"dims": (16, 24, 32, 48)}),
    "no_layer_scale_max_pool": ("convnext_tiny", {"ls_init_value": None, "global_pool": "max"}),
    "patch2_avgmax": ("convnext_tiny", {"patch_size": 2, "global_pool": "avgmax"}),
    "headless_dinov3": ("convnext_tiny", {"num_classes": 0}),
}

# ResNet: timm's own entrypoints (their flags), shrunk to depths (1, 1, 2, 1) and planes (16, 24, 32, 48); 7 classes.
TINY_RESNET = dict(layers=(1, 1, 2, 1), channels=(16, 24, 32, 48), num_classes=7)
RESNET_VARIANTS: dict[str, tuple[str, dict]] = {
    "resnet18_basic": ("resnet18", {}),
    "resnet50": ("resnet50", {}),
    "resnet50d_deep_avg_down": ("resnet50d", {"drop_rate": 0.1}),
    "resnet26t_tiered": ("resnet26t", {}),
    "resnext_groups": ("resnext50_32x4d", {}),
    "wide": ("wide_resnet50_2", {}),
    "seresnext_se": ("seresnext26d_32x4d", {}),
    "ecaresnetlight_eca": ("ecaresnetlight", {}),
    "resnetrs_se_quarter_stem_conv": ("resnetrs50", {}),
    "senet154_reduce_first_k3": ("senet154", {"channels": (32, 32, 32, 32)}),
    "aa_avgpool": ("resnetaa50d", {}),
    "aa_avgpool_basic": ("resnetaa34d", {}),
    "blurpool": ("resnetblur50", {}),
    "blurpool_stem_conv": ("resnetrs50", {"aa_layer": BlurPool2d}),
    "groupnorm": ("resnet50_gn", {"channels": (32, 32, 32, 32)}),
    "mixed_blocks": ("test_resnet", {"channels": (32, 48, 48, 96)}),
    "silu_max_pool": ("resnet18", {"act_layer": "silu", "global_pool": "max"}),
    "avgmax": ("resnet26d", {"global_pool": "avgmax"}),
    "headless": ("resnet50", {"num_classes": 0}),
    "eca_pruned": ("ecaresnet50d", {}),  # then pruned by timm's own code: see prune_like_timm
}
PRUNED_RESNETS = {"eca_pruned"}


def prune_like_timm(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """A pruned copy of a timm bottleneck ResNet made by timm's own ``adapt_model_from_string`` (as its
    ``*_pruned`` models are built): random widths inside each block's branch, and per stage on the residual path
    (odd, so not multiples of the expansion); the stem and the ECA convs keep the parent's shapes, as in timm's
    pruned files."""
    rng = random.Random(seed)
    shapes, stage_in = {}, model.bn1.num_features
    for stage_index in range(1, 5):
        stage = getattr(model, f"layer{stage_index}")
        # a stage whose first block has no projection keeps its input width (the residual sums must match)
        out = rng.randint(5, stage[0].conv3.out_channels) | 1 if stage[0].downsample is not None else stage_in
        for index, block in enumerate(stage):
            prefix, block_in = f"layer{stage_index}.{index}", stage_in if index == 0 else out
            first, second = (rng.randint(3, conv.out_channels) for conv in (block.conv1, block.conv2))
            layers = {"conv1": (first, block_in), "conv2": (second, first), "conv3": (out, second)}
            if block.downsample is not None:
                layers["downsample.1"] = (out, block_in)
            for conv, (out_channels, in_channels) in layers.items():
                norm = {"conv1": "bn1", "conv2": "bn2", "conv3": "bn3"}.get(conv, "downsample.2")
                kernel = list(block.get_submodule(conv).weight.shape[2:])
                shapes[f"{prefix}.{conv}.weight"] = [out_channels, in_channels, *kernel]
                shapes[f"{prefix}.{norm}.weight"] = [out_channels]
        stage_in = out
    shapes["fc.weight"] = [model.fc.out_features, stage_in]
    for name, module in model.named_modules():  # the stem, as it is
        if isinstance(module, (torch.nn.Conv2d, torch.nn.BatchNorm2d)):
            shapes.setdefault(f"{name}.weight", list(module.weight.shape))
    return adapt_model_from_string(model, "***".join(f"{key}:{shape}" for key, shape in shapes.items()))


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
    """A tiny perturbed timm model of a vit, eva, convnext or resnet variant, in eval mode (``dynamic``: token families
    built to run at any size)."""
    if variant in VIT_VARIANTS:
        name, overrides = VIT_VARIANTS[variant]
        kwargs = {**TINY, **overrides, **extra}
    elif variant in CONVNEXT_VARIANTS:
        name, overrides = CONVNEXT_VARIANTS[variant]
        kwargs = {**TINY_CONVNEXT, **overrides, **extra}
        dynamic = False
    elif variant in RESNET_VARIANTS:
        name, overrides = RESNET_VARIANTS[variant]
        kwargs = {**TINY_RESNET, **overrides, **extra}
        dynamic = False
    else:
        name, overrides = EVA_VARIANTS[variant]
        kwargs = {**TINY_EVA, **overrides, **extra}
    if dynamic:
        kwargs["dynamic_img_size"] = True
    model = timm.create_model(name, pretrained=False, **kwargs)
    if variant in PRUNED_RESNETS:
        model = prune_like_timm(model, seed)
    return perturb(model, seed).eval()


def vitzoo_from_timm(timm_model: torch.nn.Module, role: str = "model", attn: str = "sdpa", **config_overrides):
    """A vitzoo model (``role``: "model", "classifier" or "backbone") holding the timm model's weights.

    Loading is strict: every converted key must exist in our model and every parameter must be covered.
    """
    family = family_for(timm_model)
    if role == "classifier" and not timm_model.num_classes:
        # timm's model(x) without a classifier is the pooled output: our head_type "none", one logit per feature.
        config_overrides = {"head_type": "none", "num_labels": timm_model.num_features, **config_overrides}
    config = family.config_from_timm(timm_model, **config_overrides)
    if family.model._supports_sdpa:  # token families; convolutional ones have no attention to choose
        config._attn_implementation = attn
    model = getattr(family, role)(config)
    with_head = role == "classifier"
    state = family.convert_state_dict(timm_model.state_dict(), with_head=with_head)
    target = model.base_model if role == "backbone" else model
    target.load_state_dict(state, strict=True)
    return model.eval()


def save_tiny_folder(
    variant: str, folder: Path, seed: int = 0, headless: bool = False, **extra
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A saved tiny folder (code files, config, weights, a 32-pixel processor), as a converted folder would be,
    plus the vitzoo model and the timm model (``dynamic_img_size``) it holds. A classifier with 7 named labels, or
    with ``headless`` a foundation model without classifier (``num_labels=0``), as converted DINOv2/DINOv3 are;
    ``extra`` goes to the timm constructor (e.g. ``depth``)."""
    if headless:
        timm_model = make_timm(variant, dynamic=True, seed=seed, num_classes=0, **extra)
        model = vitzoo_from_timm(timm_model, "model")
        model.config.architectures = [type(model).__name__]
        model.save_pretrained(folder)
        VitzooImageProcessor(size={"shortest_edge": 32}, crop_pct=0.9).save_pretrained(folder)
        return model, timm_model
    timm_model = make_timm(variant, dynamic=True, seed=seed, **extra)
    model = vitzoo_from_timm(timm_model, "classifier", id2label={i: f"class_{i}" for i in range(7)})
    model.save_pretrained(folder)
    VitzooImageProcessor(size={"shortest_edge": 32}, crop_pct=0.9).save_pretrained(folder)
    return model, timm_model


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


def check_gradient_checkpointing(variant: str) -> None:
    """The same gradients for every parameter with and without gradient checkpointing (each run from timm's
    weights, so train-mode statistics start alike)."""
    timm_model = make_timm(variant)
    grads = []
    for checkpointing in (False, True):
        model = vitzoo_from_timm(timm_model, "classifier").train()
        if checkpointing:
            model.gradient_checkpointing_enable()
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
