"""timm ``ResNet`` -> ``vitzoo_resnet`` config and weights (ResNet, ResNet-D/-T, ResNeXt, SE/ECA, RS, Wide, AA).

The config is read off a built timm model (on the meta device for real conversions), then every block is checked
against what the config rebuilds, so a layout the family cannot express (dilation, another attention or norm
layer) fails here by name before any weight is read. Pruned models keep their per-block widths.
"""

from __future__ import annotations

import torch
from torch import nn

from conversion.common import UnsupportedArchitecture, activation_name, head_fields, present, square_or_pair
from conversion.stage_families import (  # noqa: F401  (hooks this family takes as they are)
    input_size,
    reference_at,
    reference_kwargs,
    verification_inputs,
)
from vitzoo_hf import VitzooResNetConfig, VitzooResNetModel
from vitzoo_hf.configuration_resnet import BLOCK_TYPES
from vitzoo_hf.modeling_resnet import make_divisible

TIMM_CLASSES = ("ResNet",)
TIMM_MODULES = ("resnet",)
CLASSIFIER_WEIGHT = "fc.weight"
POOLS = ("avg", "max", "avgmax", "")
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
        if all(b.se.fc1.out_channels == make_divisible(b.se.fc1.in_channels * ratio) for b in _blocks(model)):
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


def config_from_timm(model: nn.Module, **overrides) -> VitzooResNetConfig:
    """Read a ``VitzooResNetConfig`` off a timm ``ResNet``; ``overrides`` set config fields."""
    if type(model).__name__ not in TIMM_CLASSES:
        raise UnsupportedArchitecture(f"{type(model).__name__} is not a timm ResNet; the resnet family cannot hold it.")
    stages = _stages(model)
    blocks = _blocks(model)
    reductions = [info["reduction"] for info in model.feature_info]
    dilated = any(m.dilation != (1, 1) for m in model.modules() if isinstance(m, nn.Conv2d))
    if dilated or reductions != [2 ** (i + 1) for i in range(len(reductions))]:
        raise UnsupportedArchitecture("dilated ResNet stages (output_stride 8 or 16) are not supported.")
    if any(present(b.drop_block) for b in blocks):
        raise UnsupportedArchitecture("DropBlock (drop_block_rate > 0) is not supported; build the model without it.")
    bottlenecks = [type(stage[0]).__name__ == "Bottleneck" for stage in stages]
    first = next(b for b in blocks if type(b).__name__ == "Bottleneck") if any(bottlenecks) else blocks[0]
    shortcuts = [b.downsample for b in blocks if b.downsample is not None]
    avg_down = bool(shortcuts) and len(shortcuts[0]) == 3
    strided = [s for s in shortcuts if not avg_down and s[0].stride == (2, 2)]
    pool = model.global_pool.pool_type
    if pool not in POOLS:
        raise UnsupportedArchitecture(f"global pool {pool!r} is not supported ({', '.join(map(repr, POOLS))} are).")
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
    fields.update(overrides)
    try:
        config = VitzooResNetConfig(**fields)
    except ValueError as error:  # a combination the config refuses, named in its message
        raise UnsupportedArchitecture(f"this ResNet's layout cannot be expressed: {error}") from error
    _check_shapes(model, config)
    return config


def _check_shapes(model: nn.Module, config: VitzooResNetConfig) -> None:
    """Every weight the config rebuilds has timm's shape (a hand-edited layout the fields cannot express does not)."""
    with torch.device("meta"):
        ours = VitzooResNetModel(config)
    theirs = {k: v.shape for k, v in model.state_dict().items() if not k.startswith("fc.")}
    mine = {convert_key(k, with_head=False): shape for k, shape in theirs.items()}
    expected = {k: v.shape for k, v in ours.state_dict().items()}
    wrong = [k for k, shape in mine.items() if expected.get(k) != shape]
    if wrong or set(expected) - set(mine):
        example = wrong[0] if wrong else sorted(set(expected) - set(mine))[0]
        raise UnsupportedArchitecture(
            f"this ResNet's layers do not have the shapes its config rebuilds (e.g. {example}): a hand-edited "
            "layout (widths that differ between a block's shortcut and branch, per-block attention widths...) "
            "is not supported."
        )


def convert_key(key: str, with_head: bool = True) -> str | None:
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


def num_blocks(model: nn.Module) -> int:
    """The deepest stage's block count: truncation keeps up to that many blocks per stage."""
    return max(len(stage) for stage in _stages(model))


def truncated_kwargs(model: nn.Module, blocks: int) -> dict:
    """Each stage keeps its first ``blocks`` blocks (every stage still downsamples)."""
    return {"layers": tuple(min(len(stage), blocks) for stage in _stages(model))}


def truncated_overrides(config, blocks: int) -> dict:
    overrides = {"depths": [min(depth, blocks) for depth in config.depths]}
    if config.block_inner_widths:
        overrides["block_inner_widths"] = [stage[:blocks] for stage in config.block_inner_widths]
    return overrides
