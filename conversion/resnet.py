"""timm ``ResNet`` -> ``vitzoo_resnet`` config and weights (ResNet, ResNet-D/-T, ResNeXt, SE/ECA, RS, Wide, AA).

The config is read off a built timm model (on the meta device for real conversions), then every block is checked
against what the config rebuilds, so a layout the family cannot express (dilation, another attention or norm
layer) fails here by name before any weight is read. Pruned models keep their per-block widths.
"""

from __future__ import annotations

import random

from timm.layers import BlurPool2d
from timm.models._prune import adapt_model_from_string
from torch import nn

from conversion.common import UnsupportedArchitecture, activation_name, head_fields, present, square_or_pair
from conversion.stage_families import StageHooks, pool_type
from vitzoo_hf import VitzooResNetConfig, VitzooResNetModel
from vitzoo_hf.configuration_resnet import BLOCK_TYPES
from vitzoo_hf.stage_layers import make_divisible

TIMM_CLASSES = ("ResNet",)
ATTENTIONS = {"SEModule": "se", "EcaModule": "eca"}
SE_RATIOS = (1 / 16, 1 / 8, 1 / 4)  # timm's SE reductions in use; the one that rebuilds every block's width is taken


def _norm_fields(norm: nn.Module) -> dict:
    if type(norm) is nn.BatchNorm2d and norm.affine and norm.track_running_stats:
        return dict(norm_type="batchnorm", norm_eps=float(norm.eps))
    if isinstance(norm, nn.GroupNorm) and norm.affine:
        return dict(norm_type="groupnorm", norm_groups=norm.num_groups, norm_eps=float(norm.eps))
    raise UnsupportedArchitecture(
        f"norm layer {type(norm).__name__} is not supported (affine BatchNorm2d with running statistics, or "
        "GroupNorm, are)."
    )


def _stem_fields(model: nn.Module) -> dict:
    conv = model.conv1
    if isinstance(conv, nn.Conv2d):
        return dict(stem_type="", stem_channels=conv.out_channels)
    convs = [m for m in conv if isinstance(m, nn.Conv2d)]
    first, mid = convs[0].out_channels, convs[1].out_channels
    if first == mid:
        return dict(stem_type="deep", deep_stem_width=mid, stem_channels=convs[2].out_channels)
    return dict(stem_type="deep_tiered", deep_stem_width=mid, stem_channels=convs[2].out_channels)


def _aa_type(model: nn.Module) -> str | None:
    blurs = [m for m in model.modules() if type(m).__name__ == "BlurPool2d"]
    if any(blur.filt_size != 3 or blur.pad_mode != "reflect" for blur in blurs):
        raise UnsupportedArchitecture(
            "BlurPool2d other than timm's default (3x3 filter, reflect padding) is not supported."
        )
    if blurs:
        return "blurpool"
    # Average pools are ResNet-D shortcuts unless the stem pool (or an aa slot) is one.
    stem_pool = model.maxpool
    if isinstance(stem_pool, nn.AvgPool2d) or any(isinstance(b.aa, nn.AvgPool2d) for b in _blocks(model)):
        return "avgpool"
    if isinstance(stem_pool, nn.Sequential) and any(isinstance(m, nn.AvgPool2d) for m in stem_pool):
        return "avgpool"
    return None


def _blocks(model: nn.Module) -> list[nn.Module]:
    return [block for stage in _stages(model) for block in stage]


def _stages(model: nn.Module) -> list[nn.Sequential]:
    return [getattr(model, f"layer{i}") for i in range(1, 5) if hasattr(model, f"layer{i}")]


def _attention_fields(model: nn.Module) -> dict:
    kinds = {type(b.se).__name__ for b in _blocks(model)}
    if kinds == {"NoneType"}:
        return dict(attn_type=None)
    if len(kinds) != 1 or next(iter(kinds)) not in ATTENTIONS:
        raise UnsupportedArchitecture(
            f"block attention {', '.join(sorted(kinds))} is not supported ({', '.join(ATTENTIONS)} or none are)."
        )
    kind = ATTENTIONS[next(iter(kinds))]
    if kind == "eca":
        eca = _blocks(model)[0].se
        if present(getattr(eca, "conv2", None)) or type(eca.gate).__name__ != "Sigmoid":
            raise UnsupportedArchitecture("ECA with an MLP or a gate other than sigmoid is not supported.")
        return dict(attn_type="eca")
    for se in (b.se for b in _blocks(model)):
        if se.add_maxpool or present(se.bn) or type(se.act).__name__ != "ReLU" or type(se.gate).__name__ != "Sigmoid":
            raise UnsupportedArchitecture("SE with max pooling, a norm, or another activation/gate is not supported.")
    for ratio in SE_RATIOS:
        if all(
            b.se.fc1.out_channels == make_divisible(b.se.fc1.in_channels * ratio, round_limit=0.0)
            for b in _blocks(model)
        ):
            return dict(attn_type="se", se_ratio=ratio)
    raise UnsupportedArchitecture("SE reduction widths match none of the ratios 1/16, 1/8, 1/4.")


def _inner_widths(block: nn.Module) -> list[int]:
    """The channels inside a block's branch: out of each conv but the last."""
    if type(block).__name__ == "Bottleneck":
        return [block.conv1.out_channels, block.conv2.out_channels]
    return [block.conv1.out_channels]


def _pruned_fields(stages: list[nn.Sequential], inner: list, attn_type: str | None) -> dict:
    """A pruned ResNet (timm's ``*_pruned``): every block's own widths and, for ECA, the kernels its unpruned
    parent derived (timm prunes convs and norms, not the ECA conv)."""
    fields = dict(block_inner_widths=inner)
    if attn_type == "eca":
        kernels = [{block.se.conv.kernel_size[0] for block in stage} for stage in stages]
        if any(len(k) > 1 for k in kernels):
            raise UnsupportedArchitecture("ECA kernels that differ between the blocks of a stage are not supported.")
        fields["eca_kernel_sizes"] = [k.pop() for k in kernels]
    return fields


def resnet_key(key: str, with_head: bool = True) -> str | None:
    """timm keys -> ours: the stem's convs and norm under ``stem``, ``maxpool`` as ``stem_pool``,
    ``layerN.M`` as ``stages.N-1.blocks.M``; ``fc`` becomes the configurable head."""
    if key.startswith("fc."):
        return "head.layers." + key[len("fc.") :] if with_head else None
    if key.startswith(("conv1.", "bn1.")):
        key = "stem." + key
    elif key.startswith("maxpool."):
        key = "stem_pool." + key[len("maxpool.") :]
    elif key.startswith("layer"):
        stage, rest = key[len("layer") :].split(".", 1)
        block, rest = rest.split(".", 1)
        key = f"stages.{int(stage) - 1}.blocks.{block}.{rest}"
    return f"{VitzooResNetModel.base_model_prefix}.{key}" if with_head else key


def prune_like_timm(model: nn.Module, seed: int = 0) -> nn.Module:
    """A pruned copy of a timm bottleneck ResNet made by timm's own ``adapt_model_from_string`` (as its
    ``*_pruned`` models are built): random widths inside each block's branch, and per stage on the residual path
    (odd, so not multiples of the expansion); the stem and the ECA convs keep the parent's shapes, as in timm's
    pruned files. The tests' pruned variant."""
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
        if isinstance(module, (nn.Conv2d, nn.BatchNorm2d)):
            shapes.setdefault(f"{name}.weight", list(module.weight.shape))
    return adapt_model_from_string(model, "***".join(f"{key}:{shape}" for key, shape in shapes.items()))


class ResNetHooks(StageHooks):
    timm_classes = TIMM_CLASSES
    timm_modules = ("resnet",)
    # timm's own entrypoints (their flags), shrunk to depths (1, 1, 2, 1) and planes (16, 24, 32, 48); 7 classes.
    tiny = dict(layers=(1, 1, 2, 1), channels=(16, 24, 32, 48), num_classes=7)
    variants = {
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
        "eca_pruned": ("ecaresnet50d", {}),  # then pruned by timm's own code: see adapt_variant
    }
    showcase = ("blurpool_stem_conv",)
    suite_configs = [
        # bottleneck blocks, BatchNorm, the 7x7 stem and its max pool, strided-conv shortcuts
        dict(depths=[1, 1, 2, 1], hidden_sizes=[16, 32, 48, 64], stem_channels=8),
        # basic blocks, a tiered deep stem with a conv instead of the pool, ResNet-D shortcuts, SE, blur-pool
        # anti-aliasing, GroupNorm, the stem's map taken after its pool (stride 4)
        dict(
            depths=[1, 1, 2, 1],
            hidden_sizes=[16, 32, 48, 64],
            block_types=["basic"] * 4,
            stem_type="deep_tiered",
            deep_stem_width=8,
            stem_channels=16,
            replace_stem_pool=True,
            avg_down=True,
            attn_type="se",
            se_ratio=0.25,
            aa_type="blurpool",
            norm_type="groupnorm",
            norm_groups=2,
            stem_output="pool",
        ),
    ]

    def adapt_variant(self, variant: str, model: nn.Module, seed: int) -> nn.Module:
        return prune_like_timm(model, seed) if variant == "eca_pruned" else model

    def convert_key(self, key: str, with_head: bool = True) -> str | None:
        return resnet_key(key, with_head)

    def block_groups(self, model: nn.Module) -> list[nn.Sequential]:
        return _stages(model)

    def config_from_timm(self, model: nn.Module, **overrides) -> VitzooResNetConfig:
        """Read a ``VitzooResNetConfig`` off a timm ``ResNet``; ``overrides`` set config fields."""
        if type(model).__name__ not in TIMM_CLASSES:
            raise UnsupportedArchitecture(
                f"{type(model).__name__} is not a timm ResNet; the resnet family cannot hold it."
            )
        stages = _stages(model)
        blocks = _blocks(model)
        reductions = [info["reduction"] for info in model.feature_info]
        dilated = any(m.dilation != (1, 1) for m in model.modules() if isinstance(m, nn.Conv2d))
        if dilated or reductions != [2 ** (i + 1) for i in range(len(reductions))]:
            raise UnsupportedArchitecture("dilated ResNet stages (output_stride 8 or 16) are not supported.")
        if any(present(b.drop_block) for b in blocks):
            raise UnsupportedArchitecture(
                "DropBlock (drop_block_rate > 0) is not supported; build the model without it."
            )
        bottlenecks = [type(stage[0]).__name__ == "Bottleneck" for stage in stages]
        first = next(b for b in blocks if type(b).__name__ == "Bottleneck") if any(bottlenecks) else blocks[0]
        shortcuts = [b.downsample for b in blocks if b.downsample is not None]
        avg_down = bool(shortcuts) and len(shortcuts[0]) == 3
        strided = [s for s in shortcuts if not avg_down and s[0].stride == (2, 2)]
        pool = pool_type(model.global_pool)
        fields = dict(
            image_size=square_or_pair(model.pretrained_cfg["input_size"][1:]),
            num_channels=model.conv1.in_channels if isinstance(model.conv1, nn.Conv2d) else model.conv1[0].in_channels,
            depths=[len(stage) for stage in stages],
            hidden_sizes=[
                stage[-1].conv3.out_channels if b else stage[-1].conv2.out_channels
                for stage, b in zip(stages, bottlenecks, strict=True)
            ],
            block_types=["bottleneck" if b else "basic" for b in bottlenecks],
            **_stem_fields(model),
            replace_stem_pool=isinstance(model.maxpool, nn.Sequential) and isinstance(model.maxpool[0], nn.Conv2d),
            cardinality=first.conv2.groups if any(bottlenecks) else 1,
            down_kernel_size=strided[0][0].kernel_size[0] if strided else 1,
            avg_down=avg_down,
            **_attention_fields(model),
            aa_type=_aa_type(model),
            **_norm_fields(model.bn1),
            hidden_act=activation_name(model.act1),
            global_pool=pool,
            head_dropout=float(model.drop_rate),
            **head_fields(model.fc),
        )
        inner = [[_inner_widths(block) for block in stage] for stage in stages]
        uniform = all(all(w == stage[0] for w in stage) for stage in inner)
        expansions = [BLOCK_TYPES[block_type] for block_type in fields["block_types"]]
        if not uniform or any(h % e for h, e in zip(fields["hidden_sizes"], expansions, strict=True)):
            fields.update(_pruned_fields(stages, inner, fields["attn_type"]))
        elif any(bottlenecks):
            planes = first.conv3.out_channels // 4
            width = first.conv2.out_channels
            fields["base_width"] = width * 64 // (planes * fields["cardinality"])
            fields["block_reduce_first"] = width // first.conv1.out_channels
        else:
            fields["block_reduce_first"] = first.conv2.out_channels // first.conv1.out_channels
        return self.build_config(model, fields, overrides)


HOOKS = ResNetHooks
