"""The same timm weights in transformers' native ports (ViT, DINOv2, DINOv3, ConvNeXt(-V2), DINOv3 ConvNeXt,
ResNet, EfficientNet, MobileNetV2).

Each builder returns a native model holding a timm model's weights; the benchmark checks its outputs against
timm before timing anything.
"""

from __future__ import annotations

import torch
from transformers import (
    ConvNextConfig,
    ConvNextModel,
    ConvNextV2Config,
    ConvNextV2Model,
    Dinov2Config,
    Dinov2Model,
    DINOv3ConvNextConfig,
    DINOv3ConvNextModel,
    DINOv3ViTConfig,
    DINOv3ViTModel,
    EfficientNetConfig,
    EfficientNetModel,
    MobileNetV2Config,
    MobileNetV2Model,
    ResNetConfig,
    ResNetModel,
    ViTConfig,
    ViTModel,
)


def _split_qkv(state: dict, prefix: str, out: dict, target: str) -> None:
    for kind in ("weight", "bias"):
        key = f"{prefix}.attn.qkv.{kind}"
        if key in state:
            q, k, v = state[key].chunk(3, dim=0)
            out[f"{target}.attention.q_proj.{kind}"] = q
            out[f"{target}.attention.k_proj.{kind}"] = k
            out[f"{target}.attention.v_proj.{kind}"] = v
    for kind in ("weight", "bias"):
        out[f"{target}.attention.o_proj.{kind}"] = state[f"{prefix}.attn.proj.{kind}"]


def _common(timm_model) -> dict:
    block = timm_model.blocks[0]
    return dict(
        hidden_size=timm_model.embed_dim,
        num_hidden_layers=len(timm_model.blocks),
        num_attention_heads=block.attn.num_heads,
        intermediate_size=block.mlp.fc1.out_features,
        image_size=timm_model.patch_embed.img_size[0],
        patch_size=timm_model.patch_embed.patch_size[0],
        layer_norm_eps=block.norm1.eps,
    )


def vit(timm_model, attn: str) -> ViTModel:
    """timm ``vit_*_patch16_224`` -> transformers ViTModel (no pooler)."""
    config = ViTConfig(**_common(timm_model), qkv_bias=True, attn_implementation=attn)
    model = ViTModel(config, add_pooling_layer=False)
    state, out = timm_model.state_dict(), {}
    out["embeddings.cls_token"] = state["cls_token"]
    out["embeddings.position_embeddings"] = state["pos_embed"]
    for kind in ("weight", "bias"):
        out[f"embeddings.patch_embeddings.projection.{kind}"] = state[f"patch_embed.proj.{kind}"]
        out[f"layernorm.{kind}"] = state[f"norm.{kind}"]
    for i in range(len(timm_model.blocks)):
        p, t = f"blocks.{i}", f"layers.{i}"
        _split_qkv(state, p, out, t)
        for kind in ("weight", "bias"):
            out[f"{t}.layernorm_before.{kind}"] = state[f"{p}.norm1.{kind}"]
            out[f"{t}.layernorm_after.{kind}"] = state[f"{p}.norm2.{kind}"]
            out[f"{t}.mlp.fc1.{kind}"] = state[f"{p}.mlp.fc1.{kind}"]
            out[f"{t}.mlp.fc2.{kind}"] = state[f"{p}.mlp.fc2.{kind}"]
    model.load_state_dict(out, strict=True)
    return model.eval()


def dinov2(timm_model, attn: str) -> Dinov2Model:
    """timm ``vit_*_patch14_dinov2`` -> transformers Dinov2Model."""
    config = Dinov2Config(**_common(timm_model), mlp_ratio=4, attn_implementation=attn)
    model = Dinov2Model(config)
    state, out = timm_model.state_dict(), {}
    out["embeddings.cls_token"] = state["cls_token"]
    out["embeddings.mask_token"] = model.state_dict()["embeddings.mask_token"]
    out["embeddings.position_embeddings"] = state["pos_embed"]
    for kind in ("weight", "bias"):
        out[f"embeddings.patch_embeddings.projection.{kind}"] = state[f"patch_embed.proj.{kind}"]
        out[f"layernorm.{kind}"] = state[f"norm.{kind}"]
    for i in range(len(timm_model.blocks)):
        p, t = f"blocks.{i}", f"encoder.layer.{i}"
        _split_qkv(state, p, out, t)
        out[f"{t}.layer_scale1.lambda1"] = state[f"{p}.ls1.gamma"]
        out[f"{t}.layer_scale2.lambda1"] = state[f"{p}.ls2.gamma"]
        for kind in ("weight", "bias"):
            out[f"{t}.norm1.{kind}"] = state[f"{p}.norm1.{kind}"]
            out[f"{t}.norm2.{kind}"] = state[f"{p}.norm2.{kind}"]
            out[f"{t}.mlp.fc1.{kind}"] = state[f"{p}.mlp.fc1.{kind}"]
            out[f"{t}.mlp.fc2.{kind}"] = state[f"{p}.mlp.fc2.{kind}"]
    model.load_state_dict(out, strict=True)
    return model.eval()


def dinov3(timm_model, attn: str) -> DINOv3ViTModel:
    """timm ``vit_*_patch16_dinov3`` (no qkv bias) -> transformers DINOv3ViTModel."""
    common = _common(timm_model)
    config = DINOv3ViTConfig(
        **common,
        num_register_tokens=timm_model.reg_token.shape[1],
        query_bias=False,
        key_bias=False,
        value_bias=False,
        layerscale_value=1.0,
        rope_theta=float(timm_model.rope.temperature),
        attn_implementation=attn,
    )
    model = DINOv3ViTModel(config)
    state, out = timm_model.state_dict(), {}
    out["embeddings.cls_token"] = state["cls_token"]
    out["embeddings.mask_token"] = model.state_dict()["embeddings.mask_token"]
    out["embeddings.register_tokens"] = state["reg_token"]
    for kind in ("weight", "bias"):
        out[f"embeddings.patch_embeddings.{kind}"] = state[f"patch_embed.proj.{kind}"]
        out[f"norm.{kind}"] = state[f"norm.{kind}"]
    for i in range(len(timm_model.blocks)):
        p, t = f"blocks.{i}", f"model.layer.{i}"
        _split_qkv(state, p, out, t)
        out[f"{t}.layer_scale1.lambda1"] = state[f"{p}.gamma_1"]
        out[f"{t}.layer_scale2.lambda1"] = state[f"{p}.gamma_2"]
        for kind in ("weight", "bias"):
            out[f"{t}.norm1.{kind}"] = state[f"{p}.norm1.{kind}"]
            out[f"{t}.norm2.{kind}"] = state[f"{p}.norm2.{kind}"]
            out[f"{t}.mlp.up_proj.{kind}"] = state[f"{p}.mlp.fc1.{kind}"]
            out[f"{t}.mlp.down_proj.{kind}"] = state[f"{p}.mlp.fc2.{kind}"]
    model.load_state_dict(out, strict=True)
    return model.eval()


PORTS = {"vit": vit, "dinov2": dinov2, "dinov3": dinov3}


@torch.no_grad()
def native_features(model, pixel_values: torch.Tensor) -> torch.Tensor:
    return model(pixel_values=pixel_values).last_hidden_state


def _convnext_state(timm_model, stage_prefix: str, names: dict[str, str], stem_in_stage0: bool) -> dict:
    """timm ConvNeXt weights in the naming of transformers' ConvNeXt ports (``names``: our module -> theirs)."""
    state, out = timm_model.state_dict(), {}
    for key, value in state.items():
        if key.startswith("head.fc."):
            continue
        parts = key.split(".")
        if parts[0] == "stem":
            target = (
                f"{stage_prefix}.0.downsample_layers.{parts[1]}.{parts[2]}"
                if stem_in_stage0
                else f"embeddings.{'patch_embeddings' if parts[1] == '0' else 'layernorm'}.{parts[2]}"
            )
        elif parts[0] == "stages" and parts[2] == "downsample":
            target = f"{stage_prefix}.{parts[1]}.{names['downsample']}.{parts[3]}.{parts[4]}"
        elif parts[0] == "stages":
            leaf = ".".join(parts[4:])
            for ours, theirs in names.items():
                leaf = leaf.replace(ours, theirs) if leaf.startswith(ours) else leaf
            target = f"{stage_prefix}.{parts[1]}.layers.{parts[3]}.{leaf}"
        elif parts[0] == "head" and parts[1] == "norm":
            target = f"{names['final_norm']}.{parts[2]}"
        else:
            raise KeyError(f"no native name for {key}")
        out[target] = value.reshape(1, 1, 1, -1) if target.endswith(("grn.weight", "grn.bias")) else value
    return out


CONVNEXT_NAMES = {
    "downsample": "downsampling_layer",
    "conv_dw": "dwconv",
    "norm": "layernorm",
    "mlp.fc1": "pwconv1",
    "mlp.fc2": "pwconv2",
    "mlp.grn": "grn",
    "gamma": "layer_scale_parameter",
    "final_norm": "layernorm",
}


def convnext(timm_model, attn: str | None = None):
    """timm ``convnext_*`` / ``convnextv2_*`` (channels-last Linear MLPs) -> transformers ConvNextModel or
    ConvNextV2Model (GRN)."""
    stages = timm_model.stages
    kwargs = dict(
        depths=[len(s.blocks) for s in stages],
        hidden_sizes=[s.blocks[0].conv_dw.out_channels for s in stages],
        layer_norm_eps=stages[0].blocks[0].norm.eps,
    )
    grn = hasattr(stages[0].blocks[0].mlp, "grn")
    model = ConvNextV2Model(ConvNextV2Config(**kwargs)) if grn else ConvNextModel(ConvNextConfig(**kwargs))
    names = {k: v for k, v in CONVNEXT_NAMES.items() if not (grn and k == "gamma")}
    model.load_state_dict(_convnext_state(timm_model, "encoder.stages", names, False), strict=True)
    return model.eval()


def dinov3_convnext(timm_model, attn: str | None = None) -> DINOv3ConvNextModel:
    """timm ``convnext_*.dinov3_lvd1689m`` -> transformers DINOv3ConvNextModel."""
    stages = timm_model.stages
    config = DINOv3ConvNextConfig(
        depths=[len(s.blocks) for s in stages],
        hidden_sizes=[s.blocks[0].conv_dw.out_channels for s in stages],
        layer_norm_eps=stages[0].blocks[0].norm.eps,
    )
    model = DINOv3ConvNextModel(config)
    names = {
        "downsample": "downsample_layers",
        "conv_dw": "depthwise_conv",
        "norm": "layer_norm",
        "mlp.fc1": "pointwise_conv1",
        "mlp.fc2": "pointwise_conv2",
        "gamma": "gamma",
        "final_norm": "layer_norm",
    }
    model.load_state_dict(_convnext_state(timm_model, "model.stages", names, True), strict=True)
    return model.eval()


def resnet(timm_model, attn: str | None = None) -> ResNetModel:
    """timm ``resnet18`` / ``resnet50`` (torchvision layout: 7x7 stem, max pool, stride in the 3x3 conv) ->
    transformers ResNetModel."""
    stages = [getattr(timm_model, f"layer{i}") for i in range(1, 5)]
    bottleneck = type(stages[0][0]).__name__ == "Bottleneck"
    last_conv = "conv3" if bottleneck else "conv2"
    config = ResNetConfig(
        embedding_size=timm_model.conv1.out_channels,
        hidden_sizes=[getattr(stage[0], last_conv).out_channels for stage in stages],
        depths=[len(stage) for stage in stages],
        layer_type="bottleneck" if bottleneck else "basic",
        downsample_in_first_stage=False,
        downsample_in_bottleneck=False,
    )
    state, out = timm_model.state_dict(), {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] in ("conv1", "bn1"):
            kind = "convolution" if parts[0] == "conv1" else "normalization"
            out[f"embedder.embedder.{kind}.{parts[1]}"] = value
        elif parts[0].startswith("layer"):
            prefix = f"encoder.stages.{int(parts[0][5:]) - 1}.layers.{parts[1]}"
            if parts[2] == "downsample":
                kind = "convolution" if parts[3] == "0" else "normalization"
                out[f"{prefix}.shortcut.{kind}.{parts[4]}"] = value
            else:
                kind = "convolution" if parts[2].startswith("conv") else "normalization"
                out[f"{prefix}.layer.{int(parts[2][-1]) - 1}.{kind}.{parts[3]}"] = value
        elif parts[0] != "fc":
            raise KeyError(f"no native name for {key}")
    model = ResNetModel(config)
    model.load_state_dict(out, strict=True)
    return model.eval()


# timm's EfficientNet/MobileNet block parts -> transformers' names: (block type, timm module) -> native module
_MBCONV = {
    ("ds", "conv_dw"): "depthwise_conv.depthwise_conv", ("ds", "bn1"): "depthwise_conv.depthwise_norm",
    ("ds", "conv_pw"): "projection.project_conv", ("ds", "bn2"): "projection.project_bn",
    ("ir", "conv_pw"): "expansion.expand_conv", ("ir", "bn1"): "expansion.expand_bn",
    ("ir", "conv_dw"): "depthwise_conv.depthwise_conv", ("ir", "bn2"): "depthwise_conv.depthwise_norm",
    ("ir", "conv_pwl"): "projection.project_conv", ("ir", "bn3"): "projection.project_bn",
    ("ds", "se.conv_reduce"): "squeeze_excite.reduce", ("ds", "se.conv_expand"): "squeeze_excite.expand",
    ("ir", "se.conv_reduce"): "squeeze_excite.reduce", ("ir", "se.conv_expand"): "squeeze_excite.expand",
}  # fmt: skip
_MOBILENET_V2 = {"conv_pw": "expand_1x1", "bn1": "expand_1x1", "conv_dw": "conv_3x3", "bn2": "conv_3x3",
                 "conv_pwl": "reduce_1x1", "bn3": "reduce_1x1"}  # fmt: skip


def _flat_blocks(timm_model) -> dict[str, int]:
    """``blocks.i.j`` -> the running block index transformers' EfficientNet/MobileNetV2 use."""
    names = [f"blocks.{i}.{j}" for i, stage in enumerate(timm_model.blocks) for j in range(len(stage))]
    return {name: index for index, name in enumerate(names)}


def _split_block_key(key: str) -> tuple[str, str, str]:
    """``blocks.i.j.<module>.<param>`` -> (``blocks.i.j``, module path, param name)."""
    parts = key.split(".")
    return ".".join(parts[:3]), ".".join(parts[3:-1]), parts[-1]


def efficientnet(timm_model, attn: str | None = None) -> EfficientNetModel:
    """timm ``efficientnet_b0``/``tf_efficientnet_b0`` -> transformers EfficientNetModel (B0 layout). The native
    model pads its strided convs as TF's "SAME" at even sizes (a pixel right and bottom), as the ``tf_`` weights
    expect; ``efficientnet_b0``'s weights run there with PyTorch's symmetric padding, so its outputs differ."""
    config = EfficientNetConfig(
        width_coefficient=1.0, depth_coefficient=1.0, image_size=224, dropout_rate=0.2,
        batch_norm_eps=float(timm_model.bn1.eps), depthwise_padding=[], hidden_dim=timm_model.conv_head.out_channels,
    )  # fmt: skip
    flat, state, out = _flat_blocks(timm_model), timm_model.state_dict(), {}
    for key, value in state.items():
        if key.startswith(("conv_stem.", "bn1.")):
            module, param = key.split(".")
            out[f"embeddings.{'convolution' if module == 'conv_stem' else 'batchnorm'}.{param}"] = value
        elif key.startswith(("conv_head.", "bn2.")):
            module, param = key.split(".")
            out[f"encoder.{'top_conv' if module == 'conv_head' else 'top_bn'}.{param}"] = value
        elif key.startswith("blocks."):
            block, module, param = _split_block_key(key)
            kind = "ds" if block.startswith("blocks.0.") else "ir"
            out[f"encoder.blocks.{flat[block]}.{_MBCONV[kind, module]}.{param}"] = value
        elif not key.startswith("classifier."):
            raise KeyError(f"no native name for {key}")
    model = EfficientNetModel(config)
    model.load_state_dict(out, strict=True)
    return model.eval()


def mobilenet_v2(timm_model, attn: str | None = None) -> MobileNetV2Model:
    """timm ``mobilenetv2_100`` -> transformers MobileNetV2Model (PyTorch padding: ``tf_padding=False``)."""
    config = MobileNetV2Config(tf_padding=False, layer_norm_eps=float(timm_model.bn1.eps))
    flat, state, out = _flat_blocks(timm_model), timm_model.state_dict(), {}
    stem = {"conv_dw": "conv_3x3", "bn1": "conv_3x3", "conv_pw": "reduce_1x1", "bn2": "reduce_1x1"}
    for key, value in state.items():
        module = key.split(".")[0]
        if module in ("conv_stem", "bn1"):
            kind = "convolution" if module == "conv_stem" else "normalization"
            out[f"conv_stem.first_conv.{kind}.{key.split('.')[-1]}"] = value
        elif module in ("conv_head", "bn2"):
            kind = "convolution" if module == "conv_head" else "normalization"
            out[f"conv_1x1.{kind}.{key.split('.')[-1]}"] = value
        elif module == "blocks":
            block, part, param = _split_block_key(key)
            kind = "convolution" if part.startswith("conv") else "normalization"
            if block == "blocks.0.0":
                out[f"conv_stem.{stem[part]}.{kind}.{param}"] = value
            else:
                out[f"layer.{flat[block] - 1}.{_MOBILENET_V2[part]}.{kind}.{param}"] = value
        elif module != "classifier":
            raise KeyError(f"no native name for {key}")
    model = MobileNetV2Model(config)
    model.load_state_dict(out, strict=True)
    return model.eval()


PORTS.update(
    convnext=convnext, dinov3_convnext=dinov3_convnext, resnet=resnet, efficientnet=efficientnet,
    mobilenet_v2=mobilenet_v2,
)  # fmt: skip
