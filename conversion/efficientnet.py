"""timm ``EfficientNet`` / ``MobileNetV3`` (its EfficientNet builder) -> ``vitzoo_efficientnet`` config and weights.

The config is read off a built timm model (on the meta device for real conversions): every block's module is
decoded into a readable spec (type, widths, kernels, stride, squeeze-excite, activation, the type's options), runs
of equal blocks are folded into ``repeats``, and what the family cannot express (space-to-depth, anti-aliasing,
dilation, conditional position encoding, multi-head attention blocks, norms other than BatchNorm) is refused by
name before any weight is read. Then every weight the config rebuilds is checked against timm's shape.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import timm
import timm.models.efficientnet as timm_efficientnet
import timm.models.mobilenetv3 as timm_mobilenetv3
from timm.models._efficientnet_builder import round_channels
from torch import nn

from conversion.common import UnsupportedArchitecture, activation_name, head_fields, present, square_or_pair
from conversion.stage_families import AttentionStageHooks, pool_type
from vitzoo_hf import VitzooEfficientNetConfig

TIMM_CLASSES = ("EfficientNet", "MobileNetV3")
BLOCK_TYPES = {
    "ConvBnAct": "cn",
    "DepthwiseSeparableConv": "ds",
    "InvertedResidual": "ir",
    "CondConvResidual": "ir",
    "EdgeResidual": "er",
    "UniversalInvertedResidual": "uir",
    "MobileAttention": "mqa",
}
GATES = {"Sigmoid": "sigmoid", "Hardsigmoid": "hard_sigmoid"}
# timm's LayerScale2d keeps no record of its init value; its builder's default (the trained weights replace it)
LAYER_SCALE_INIT = 1e-5


def _act(module: nn.Module) -> str | None:
    """The activation of a timm BatchNormAct2d (None where it applies none)."""
    act = getattr(module, "act", None)
    return activation_name(act) if present(act) else None


def _convs(conv: nn.Module) -> list[nn.Conv2d]:
    return list(conv.values()) if type(conv).__name__ == "MixedConv2d" else [conv]


def _kernel(conv: nn.Module) -> int | list[int]:
    """A conv's kernel (a list for a mixed conv), refused where it is not square or dilated."""
    if type(conv).__name__ == "CondConv2d":
        kernels, dilations = [conv.kernel_size], [conv.dilation]
    else:
        kernels = [c.kernel_size for c in _convs(conv)]
        dilations = [c.dilation for c in _convs(conv)]
    if any(k[0] != k[1] for k in kernels) or any(d != (1, 1) for d in dilations):
        raise UnsupportedArchitecture("dilated or non-square convolutions (output_stride < 32) are not supported.")
    sizes = [int(k[0]) for k in kernels]
    return sizes[0] if type(conv).__name__ != "MixedConv2d" else sizes


def _stride(conv: nn.Module) -> int:
    stride = conv.stride if type(conv).__name__ == "CondConv2d" else _convs(conv)[0].stride
    return int(stride[0])


def _group_size(conv: nn.Module, channels: int) -> int:
    """timm's ``group_size`` of a spatial conv: 1 depthwise, 0 dense, else channels per group."""
    if type(conv).__name__ == "MixedConv2d":
        return 1 if all(c.groups == c.in_channels > 1 for c in conv.values()) else 0
    if conv.groups == 1:
        return 0
    return 1 if conv.groups == channels else channels // conv.groups


def _width(conv: nn.Module) -> int:
    return int(conv.out_channels) if type(conv).__name__ == "CondConv2d" else sum(c.out_channels for c in _convs(conv))


def _se_fields(se: nn.Module, act: str) -> dict:
    if not present(se):
        return {}
    if type(se).__name__ != "SqueezeExcite" or type(se.gate).__name__ not in GATES:
        raise UnsupportedArchitecture(
            f"squeeze-excite {type(se).__name__} with gate {type(getattr(se, 'gate', None)).__name__} is not "
            "supported (timm's EfficientNet SqueezeExcite with a sigmoid or hard-sigmoid gate is)."
        )
    se_act = activation_name(se.act1)
    return dict(
        se_channels=int(se.conv_reduce.out_channels),
        se_act=None if se_act == act else se_act,
        se_gate=GATES[type(se.gate).__name__],
    )


def _refuse_options(block: nn.Module) -> None:
    name = type(block).__name__
    if getattr(block, "conv_s2d", None) is not None:
        raise UnsupportedArchitecture(f"{name} with space-to-depth (s2d) is not supported.")
    if present(getattr(block, "aa", None)):
        raise UnsupportedArchitecture(f"{name} with anti-aliasing (aa_layer) is not supported.")
    for module in block.modules():
        if isinstance(module, nn.BatchNorm2d) and not (module.affine and module.track_running_stats):
            raise UnsupportedArchitecture("BatchNorm without affine weights or running statistics is not supported.")
        kind = type(module).__name__
        if isinstance(module, (nn.GroupNorm, nn.LayerNorm)) or kind in ("Attention2d", "EvoNorm2dS0"):
            raise UnsupportedArchitecture(f"{kind} inside {name} blocks is not supported (BatchNorm blocks are).")


def _uir_fields(block: nn.Module, act: str) -> dict:
    convs = {name: getattr(block, name) for name in ("dw_start", "dw_mid", "dw_end")}
    present_convs = {name: m.conv for name, m in convs.items() if present(m)}
    first = next(iter(present_convs.values()), None)
    channels = first.in_channels if first is not None else block.pw_exp.conv.in_channels
    return dict(
        start_kernel=_kernel(present_convs["dw_start"]) if "dw_start" in present_convs else 0,
        kernel=_kernel(present_convs["dw_mid"]) if "dw_mid" in present_convs else 0,
        end_kernel=_kernel(present_convs["dw_end"]) if "dw_end" in present_convs else 0,
        group_size=_group_size(first, channels) if first is not None else 1,
        mid_channels=int(block.pw_exp.conv.out_channels),
        layer_scale=LAYER_SCALE_INIT if present(block.layer_scale) else None,
        stride=max([_stride(c) for c in present_convs.values()], default=1),
        out_channels=int(block.pw_proj.conv.out_channels),
        act=_act(block.pw_exp.bn),
        **_se_fields(block.se, act),
    )


def _mqa_fields(block: nn.Module) -> dict:
    attn = block.attn
    if getattr(block, "conv_cpe_dw", None) is not None:
        raise UnsupportedArchitecture(
            "MobileAttention with a conditional position encoding (use_cpe) is not supported."
        )
    if type(attn).__name__ != "MultiQueryAttention2d":
        raise UnsupportedArchitecture(
            f"MobileAttention with {type(attn).__name__} ('mha' blocks) is not supported; multi-query ('mqa') is."
        )
    rows, cols = attn.query_strides
    if rows != cols or (rows > 1 and not isinstance(attn.query.down_pool, nn.AvgPool2d)):
        raise UnsupportedArchitecture(
            "multi-query attention with non-square or SAME-padded query strides is not supported."
        )
    if any(
        conv.bias is not None for conv in attn.modules() if isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1)
    ):
        raise UnsupportedArchitecture("multi-query attention with biased projections is not supported.")
    kernel = _kernel(attn.key.down_conv) if attn.kv_stride > 1 else 3
    return dict(
        kernel=kernel,
        num_heads=int(attn.num_heads),
        key_dim=int(attn.key_dim),
        value_dim=int(attn.value_dim),
        kv_stride=int(attn.kv_stride),
        query_stride=int(rows),
        layer_scale=LAYER_SCALE_INIT if present(block.layer_scale) else None,
        stride=1,
        out_channels=int(attn.output.proj.out_channels),
    )


def _out_width(block: nn.Module) -> int:
    """A block's output channels (its last conv's), for telling runs of equal blocks apart."""
    kind = BLOCK_TYPES.get(type(block).__name__)
    if kind is None:
        raise UnsupportedArchitecture(f"block {type(block).__name__} is not supported ({', '.join(BLOCK_TYPES)} are).")
    if kind == "mqa":
        return int(block.attn.output.proj.out_channels)
    last = {"cn": "conv", "ds": "conv_pw", "ir": "conv_pwl", "er": "conv_pwl"}
    return _width(block.pw_proj.conv if kind == "uir" else getattr(block, last[kind]))


def block_spec(block: nn.Module, model_act: str) -> tuple[dict, int]:
    """One timm block as a spec (without ``repeats``; ``act`` None where it is the model's) and its input width."""
    name = type(block).__name__
    if name not in BLOCK_TYPES:
        raise UnsupportedArchitecture(f"block {name} is not supported ({', '.join(BLOCK_TYPES)} are).")
    _refuse_options(block)
    kind = BLOCK_TYPES[name]
    if kind == "cn":
        act = _act(block.bn1)
        in_channels = block.conv.in_channels
        spec = dict(
            kernel=_kernel(block.conv), stride=_stride(block.conv), group_size=_group_size(block.conv, in_channels)
        )
        spec.update(out_channels=block.conv.out_channels, act=act)
    elif kind == "ds":
        act, in_channels = _act(block.bn1), _width(block.conv_dw)
        spec = dict(
            kernel=_kernel(block.conv_dw), stride=_stride(block.conv_dw),
            group_size=_group_size(block.conv_dw, in_channels), pw_kernel=_kernel(block.conv_pw),
            pw_act=bool(block.has_pw_act), out_channels=_width(block.conv_pw), act=act, **_se_fields(block.se, act),
        )  # fmt: skip
    elif kind == "ir":
        act, mid = _act(block.bn1), _width(block.conv_pw)
        in_channels = (
            block.conv_pw.in_channels
            if name == "CondConvResidual"
            else sum(c.in_channels for c in _convs(block.conv_pw))
        )
        spec = dict(
            kernel=_kernel(block.conv_dw), stride=_stride(block.conv_dw), group_size=_group_size(block.conv_dw, mid),
            exp_kernel=_kernel(block.conv_pw), pw_kernel=_kernel(block.conv_pwl), mid_channels=mid,
            num_experts=int(getattr(block, "num_experts", 0)), out_channels=_width(block.conv_pwl), act=act,
            **_se_fields(block.se, act),
        )  # fmt: skip
    elif kind == "er":
        act, mid = _act(block.bn1), _width(block.conv_exp)
        in_channels = sum(c.in_channels for c in _convs(block.conv_exp))
        spec = dict(
            kernel=_kernel(block.conv_exp), stride=_stride(block.conv_exp),
            group_size=_group_size(block.conv_exp, mid), pw_kernel=_kernel(block.conv_pwl), mid_channels=mid,
            out_channels=_width(block.conv_pwl), act=act, **_se_fields(block.se, act),
        )  # fmt: skip
    elif kind == "uir":
        act = _act(block.pw_exp.bn)
        in_channels = block.pw_exp.conv.in_channels
        spec = _uir_fields(block, act)
    else:
        in_channels = block.norm.num_features
        spec = _mqa_fields(block)
        spec["act"] = None
    if kind != "mqa" and spec["act"] is None:
        raise UnsupportedArchitecture(f"{name} without an activation after its first conv is not supported.")
    if spec.get("se_act") == model_act:
        spec["se_act"] = None
    if spec["act"] == model_act:
        spec["act"] = None
    shape_allows = spec["stride"] == 1 and in_channels == spec["out_channels"]
    spec["skip"] = bool(block.has_skip) or not shape_allows
    return {"type": kind, **spec}, int(in_channels)


def stage_specs(stage: nn.Sequential, model_act: str) -> list[dict]:
    """A stage's blocks as runs of equal specs (``repeats``; a run's stride is its first block's)."""
    runs: list[dict] = []
    for index, block in enumerate(stage):
        spec, _ = block_spec(block, model_act)
        if index and spec["stride"] != 1:
            raise UnsupportedArchitecture("a stage strided after its first block is not supported.")
        if runs and {**spec, "stride": runs[-1]["stride"]} == {k: v for k, v in runs[-1].items() if k != "repeats"}:
            runs[-1]["repeats"] += 1
        else:
            runs.append({**spec, "repeats": 1})
    return runs


def _bn_eps(model: nn.Module) -> float:
    eps = {float(m.eps) for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    if len(eps) != 1:
        raise UnsupportedArchitecture(
            f"BatchNorm epsilons that differ between layers ({sorted(eps)}) are not supported."
        )
    return eps.pop()


def _same_padding(model: nn.Module) -> bool:
    """TF "SAME" padding: timm builds the strided (and even-kernel) convs of ``pad_type='same'`` models padded per
    input size; the rest of such a model pads as PyTorch does."""
    kinds = {type(m).__name__ for m in model.modules()}
    dynamic = any(getattr(m, "dynamic_padding", False) for m in model.modules())
    return "Conv2dSame" in kinds or dynamic


def _head_fields(model: nn.Module, act: str) -> dict:
    if type(model).__name__ == "EfficientNet":
        if not present(model.conv_head):
            return dict(head_order="efficientnet", head_channels=0)
        if _act(model.bn2) != act:
            raise UnsupportedArchitecture("a head activation other than the stem's is not supported.")
        return dict(head_order="efficientnet", head_channels=int(model.conv_head.out_channels))
    norm = present(model.norm_head)
    head_act = _act(model.norm_head) if norm else activation_name(model.act2) if present(model.act2) else None
    if head_act != act:
        raise UnsupportedArchitecture("a head activation other than the stem's is not supported.")
    return dict(
        head_order="mobilenetv3",
        head_channels=int(model.conv_head.out_channels),
        head_bias=model.conv_head.bias is not None,
        conv_head_norm=norm,
    )


def efficientnet_key(key: str, with_head: bool = True) -> str | None:
    """timm keys -> ours: ``conv_stem``/``bn1`` under ``stem``, ``blocks.i.j`` as ``stages.i.blocks.j``; the head
    convs keep their names; ``classifier`` becomes the configurable head."""
    if key.startswith("classifier."):
        return "head.layers." + key[len("classifier.") :] if with_head else None
    if key.startswith(("conv_stem.", "bn1.")):
        key = "stem." + key
    elif key.startswith("blocks."):
        stage, block, rest = key[len("blocks.") :].split(".", 2)
        key = f"stages.{stage}.blocks.{block}.{rest}"
    return f"efficientnet.{key}" if with_head else key


@contextmanager
def narrowed(width: float) -> Iterator[None]:
    """timm's EfficientNet and MobileNetV3 entrypoints fix their channel multipliers, so no constructor keyword
    narrows them: for the calls inside, the model creators round every width (and the head's) at ``width`` of
    timm's, as the entrypoints' own multipliers do. The tests' tiny models; the built models are timm's."""
    originals = {module: getattr(module, name) for module, name in CREATORS}

    def narrow(create):
        def build(variant: str, pretrained: bool = False, **kwargs):
            base = kwargs.get("round_chs_fn", round_channels)
            kwargs["round_chs_fn"] = lambda channels: base(channels * width)
            features = kwargs.get("num_features", 1280)  # both model classes' default
            kwargs["num_features"] = round_channels(features * width) if features else 0
            return create(variant, pretrained, **kwargs)

        return build

    try:
        for module, name in CREATORS:
            setattr(module, name, narrow(originals[module]))
        yield
    finally:
        for module, name in CREATORS:
            setattr(module, name, originals[module])


CREATORS = ((timm_efficientnet, "_create_effnet"), (timm_mobilenetv3, "_create_mnv3"))


def _run_positions(stage: nn.Sequential) -> list[int]:
    """Each block's 1-based place in its run of equal blocks (same type and output width), the unit timm's
    block specs repeat and ``truncate`` cuts."""
    positions, previous = [], None
    for block in stage:
        key = (type(block).__name__, _out_width(block))
        positions.append(positions[-1] + 1 if key == previous else 1)
        previous = key
    return positions


class EfficientNetHooks(AttentionStageHooks):
    timm_classes = TIMM_CLASSES
    timm_modules = ("efficientnet", "mobilenetv3")
    # attention: the MobileNetV4 hybrids only; ``attends`` says which models
    tiny_width = 0.25  # of timm's widths (see ``build_tiny``)
    tiny = dict(num_classes=7)
    variants = {
        "efficientnet_b0": ("efficientnet_b0", {}),
        "efficientnet_b0_short": ("efficientnet_b0", {}),  # cut to one block per run: see adapt_variant
        "tf_efficientnet_b0_same": ("tf_efficientnet_b0", {}),
        "efficientnet_lite0_relu6": ("efficientnet_lite0", {}),
        "efficientnet_es_edge": ("efficientnet_es", {}),
        "tf_efficientnetv2_b0_fused": ("tf_efficientnetv2_b0", {}),
        "efficientnet_cc_condconv": ("efficientnet_cc_b0_4e", {}),
        "tf_efficientnet_cc_condconv_same": ("tf_efficientnet_cc_b0_4e", {}),
        "mixnet_s_mixed": ("mixnet_s", {}),
        "tf_mixnet_s_mixed_same": ("tf_mixnet_s", {}),
        "mnasnet_100": ("mnasnet_100", {}),
        "mobilenetv2_100": ("mobilenetv2_100", {}),
        "mobilenetv3_large_100": ("mobilenetv3_large_100", {}),
        "tf_mobilenetv3_small_100_same": ("tf_mobilenetv3_small_100", {}),
        "lcnet_050": ("lcnet_050", {}),
        "mobilenetv4_conv_small": ("mobilenetv4_conv_small", {}),
        "mobilenetv4_hybrid_medium": ("mobilenetv4_hybrid_medium", {}),
        "efficientnet_max_pool": ("efficientnet_b0", {"global_pool": "max"}),
        "efficientnet_headless": ("efficientnet_b0", {"num_classes": 0}),
        "mobilenetv3_headless": ("mobilenetv3_large_100", {"num_classes": 0}),
    }
    # The folder-level tests (engines, compile, ONNX, clients) run B0's every block type and option at 7 blocks
    # instead of 16: the full depth is in the parity tests, and each of those runs took twice as long with it.
    showcase = ("efficientnet_b0_short", "mobilenetv4_hybrid_medium")
    # Measured: from a random init, these deep BatchNorm stacks (about 50 norms, stride-32 maps of 1x1 at the
    # examples' 32 px) do not learn the toy colours in 3 epochs at lr 1e-3, timm's own models neither (loss ~1.1
    # throughout); at 64 px and 10 epochs they reach 0.7-0.9 validation accuracy, not reliably.
    learns_toy_task = False
    suite_configs = [
        # ds + ir blocks with squeeze-excite, the efficientnet head order
        dict(
            block_specs=[
                [{"type": "ds", "out_channels": 8, "se_channels": 4}],
                [{"type": "ir", "repeats": 2, "out_channels": 16, "stride": 2, "mid_channels": 32, "kernel": 5}],
                [{"type": "er", "out_channels": 24, "stride": 2, "mid_channels": 48}],
            ],
            stem_channels=8,
            head_channels=32,
        ),
        # MobileNetV3/V4-style: cn, mixed kernels, uir with LayerScale, mobilenetv3 head order, TF padding
        dict(
            block_specs=[
                [{"type": "cn", "out_channels": 8, "stride": 2, "act": "relu"}],
                [
                    {
                        "type": "ir",
                        "out_channels": 16,
                        "stride": 2,
                        "mid_channels": 32,
                        "kernel": [3, 5],
                        "se_channels": 8,
                        "se_gate": "hard_sigmoid",
                        "se_act": "relu",
                    }
                ],
                [
                    {
                        "type": "uir",
                        "repeats": 2,
                        "out_channels": 16,
                        "mid_channels": 32,
                        "start_kernel": 3,
                        "layer_scale": 1e-5,
                    }
                ],
            ],
            stem_channels=8,
            hidden_act="hardswish",
            head_order="mobilenetv3",
            head_channels=32,
            same_padding=True,
        ),
    ]

    def build_tiny(self, entrypoint: str, **kwargs) -> nn.Module:
        """timm's own entrypoint at ``tiny_width`` of its widths (every block, squeeze-excite and head narrowed as
        timm's channel multiplier narrows them)."""
        with narrowed(self.tiny_width):
            return timm.create_model(entrypoint, pretrained=False, **{**self.tiny, **kwargs})

    def adapt_variant(self, variant: str, model: nn.Module, seed: int) -> nn.Module:
        return self.truncate(model, 1) if variant == "efficientnet_b0_short" else model

    def attends(self, config: VitzooEfficientNetConfig) -> bool:
        return config.has_attention

    def truncate(self, model: nn.Module, blocks: int) -> nn.Module:
        """The first ``blocks`` blocks of each run of equal blocks in every stage (not of the stage: a stage whose
        runs change width, as FBNetV3's and MobileNetV4's do, would lose the width its next stage takes)."""
        if blocks < 1:
            raise ValueError(f"A truncated copy keeps at least one block per group, not {blocks}.")
        for stage in model.blocks:
            for index, position in reversed(list(enumerate(_run_positions(stage)))):
                if position > blocks:
                    del stage[index]
        return model

    def num_blocks(self, model: nn.Module) -> int:
        """The longest run of equal blocks (what ``truncate`` cuts)."""
        return max(max(_run_positions(stage), default=1) for stage in model.blocks)

    def convert_key(self, key: str, with_head: bool = True) -> str | None:
        return efficientnet_key(key, with_head)

    def block_groups(self, model: nn.Module) -> list[nn.Sequential]:
        return list(model.blocks)

    def config_from_timm(self, model: nn.Module, **overrides) -> VitzooEfficientNetConfig:
        """Read a ``VitzooEfficientNetConfig`` off a timm EfficientNet or MobileNetV3; ``overrides`` set fields."""
        if type(model).__name__ not in TIMM_CLASSES:
            raise UnsupportedArchitecture(
                f"{type(model).__name__} is not a timm EfficientNet or MobileNetV3; the efficientnet family cannot "
                "hold it."
            )
        if type(model.bn1).__name__ != "BatchNormAct2d":
            raise UnsupportedArchitecture(f"norm layer {type(model.bn1).__name__} is not supported (BatchNorm is).")
        act = _act(model.bn1)
        if act is None:
            raise UnsupportedArchitecture("a stem without an activation is not supported.")
        stem = model.conv_stem
        fields = dict(
            image_size=square_or_pair(model.pretrained_cfg["input_size"][1:]),
            num_channels=int(stem.in_channels),
            block_specs=[stage_specs(stage, act) for stage in model.blocks],
            stem_channels=int(stem.out_channels),
            stem_kernel_size=_kernel(stem),
            stem_stride=_stride(stem),
            same_padding=_same_padding(model),
            hidden_act=act,
            norm_eps=_bn_eps(model),
            **_head_fields(model, act),
            global_pool=pool_type(model.global_pool),
            head_dropout=float(model.drop_rate),
            **head_fields(model.classifier),
        )
        return self.build_config(model, fields, overrides)


HOOKS = EfficientNetHooks
