"""The shared layer is really shared: two throwaway families, written here in a few lines each, go through the
family registry, the converter and the clean-process verification without any change to a shared file.

``toy`` is a plain stage family (a CNN); ``toyhybrid`` has attention inside its stages (with an additive attention
bias, as relative-position families have), NHWC maps as Swin keeps them, and attention maps to return. Each toy's
HF side is a remote-code folder of its own (its two files beside copies of the shared files, as a published folder
would carry them); its timm side is a small model registered with timm for this test; its conversion hooks are a
class here. A last test cuts a model made by timm's EfficientNet builder, which no constructor keyword can shorten.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import shutil
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.layers import Mlp
from timm.models import register_model
from timm.models._efficientnet_builder import decode_arch_def
from timm.models.efficientnet import _create_effnet
from torch import nn

import vitzoo_hf
from conversion.common import head_fields
from conversion.convert_timm import convert
from conversion.families import family_for
from conversion.stage_families import AttentionStageHooks, StageHooks
from tests.helpers import perturb

# ----------------------------------------------------------------------------------------------- timm side


class ToyBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.relu(self.bn(self.conv(x)))


class ToyStage(nn.Module):
    def __init__(self, previous: int, dim: int, depth: int, block: type) -> None:
        super().__init__()
        self.downsample = nn.Conv2d(previous, dim, 2, stride=2) if previous != dim else nn.Identity()
        self.blocks = nn.Sequential(*[block(dim) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


def toy_pretrained_cfg(in_chans: int, num_classes: int, architecture: str) -> dict:
    return dict(
        input_size=(in_chans, 32, 32), interpolation="bilinear", crop_pct=0.875, crop_mode="center",
        mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), num_classes=num_classes, architecture=architecture,
        classifier="fc",
    )  # fmt: skip


class ToyStageNet(nn.Module):
    """A timm-style CNN: stem (stride 4), stages (the later ones halve the size), avg pool, ``fc``."""

    def __init__(self, depths=(1, 3), dims=(8, 16), num_classes: int = 5, in_chans: int = 3, **kwargs) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.stem = nn.Sequential(nn.Conv2d(in_chans, dims[0], 4, stride=4), nn.BatchNorm2d(dims[0]))
        widths = [dims[0], *dims]
        self.stages = nn.Sequential(*[ToyStage(widths[i], dims[i], depth, ToyBlock) for i, depth in enumerate(depths)])
        self.fc = nn.Linear(dims[-1], num_classes) if num_classes else nn.Identity()
        self.feature_info = [dict(num_chs=d, reduction=4 * 2**i, module=f"stages.{i}") for i, d in enumerate(dims)]
        self.pretrained_cfg = self.default_cfg = toy_pretrained_cfg(in_chans, num_classes, "toy_stage_net")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3))
        return pooled if pre_logits else self.fc(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def grid_distance(height: int, width: int) -> torch.Tensor:
    """(H*W, H*W) Manhattan distances between the positions of a grid."""
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    coords = torch.stack([rows.flatten(), cols.flatten()], dim=1)
    return (coords[:, None] - coords[None]).abs().sum(-1).float()


class ToyAttentionBlock(nn.Module):
    """Pre-norm attention over every position of an NHWC map, biased by distance (a learned slope per head, as a
    relative-position bias), then an MLP."""

    def __init__(self, dim: int, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.slopes = nn.Parameter(torch.linspace(0.1, 0.5, heads))
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, dim * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, dim = x.shape
        tokens = x.reshape(batch, height * width, dim)
        q, k, v = (
            self.qkv(self.norm1(tokens)).reshape(batch, -1, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        )
        bias = -self.slopes[:, None, None] * grid_distance(height, width)
        attn = ((q * (dim // self.heads) ** -0.5) @ k.transpose(-2, -1) + bias).softmax(-1)
        tokens = tokens + self.proj((attn @ v).transpose(1, 2).reshape(batch, -1, dim))
        tokens = tokens + self.mlp(self.norm2(tokens))
        return tokens.reshape(batch, height, width, dim)


class PatchMerge(nn.Module):
    """Swin's patch merging on NHWC maps: each 2x2 neighbourhood concatenated, normed, projected."""

    def __init__(self, previous: int, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * previous)
        self.reduction = nn.Linear(4 * previous, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, channels = x.shape
        x = x.reshape(batch, height // 2, 2, width // 2, 2, channels).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.reduction(self.norm(x))


class ToyHybridNet(ToyStageNet):
    """A Swin-shaped hybrid: conv stem to an NHWC map, stages of attention blocks joined by patch merging,
    ``forward_features`` NHWC (as timm's Swin), avg pool, ``fc``."""

    def __init__(self, depths=(1, 3), dims=(8, 16), num_classes: int = 5, in_chans: int = 3, **kwargs) -> None:
        super().__init__(depths, dims, num_classes, in_chans)
        self.stem = nn.Sequential(nn.Conv2d(in_chans, dims[0], 4, stride=4))
        self.stem_norm = nn.LayerNorm(dims[0])
        self.stages = nn.Sequential(*[ToyStage(dims[0], dims[0], depths[0], ToyAttentionBlock)])
        for index in range(1, len(dims)):
            stage = ToyStage(dims[index], dims[index], depths[index], ToyAttentionBlock)
            stage.downsample = PatchMerge(dims[index - 1], dims[index])
            self.stages.append(stage)
        self.pretrained_cfg = self.default_cfg = toy_pretrained_cfg(in_chans, num_classes, "toy_hybrid_net")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem_norm(self.stem(x).permute(0, 2, 3, 1)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = x.mean(dim=(1, 2))
        return pooled if pre_logits else self.fc(pooled)


def _timm_kwargs(kwargs: dict) -> dict:
    return {k: v for k, v in kwargs.items() if k not in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")}


@register_model
def toy_stage_net(pretrained: bool = False, **kwargs) -> ToyStageNet:
    return ToyStageNet(**_timm_kwargs(kwargs))


@register_model
def toy_hybrid_net(pretrained: bool = False, **kwargs) -> ToyHybridNet:
    return ToyHybridNet(**_timm_kwargs(kwargs))


# ------------------------------------------------------------------------------------------------ HF side

CONFIGURATION = """
from .stage_config import StageConfig


class VitzooToyConfig(StageConfig):
    model_type = "vitzoo_toy"
"""

MODELING = """
import torch
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import PreTrainedModel

from .common_compat import BackboneMixin
from .common_config import VitzooConfig  # noqa: F401
from .common_heads import ClassifierHead  # noqa: F401
from .common_layers import check_pixel_values  # noqa: F401
from .common_modeling import VitzooPreTrainedMixin
from .configuration_toy import VitzooToyConfig
from .stage_config import StageConfig  # noqa: F401
from .stage_modeling import (
    StageBackboneMixin, StageClassifierMixin, StageModelBase, init_stage_weights, run_stages, stage_flags, stage_output
)


class Block(GradientCheckpointingLayer):
    def __init__(self, dim):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(dim)

    def forward(self, x):
        return x + torch.relu(self.bn(self.conv(x)))


class Stage(nn.Module):
    def __init__(self, config, index):
        super().__init__()
        dims = [config.stem_width, *config.hidden_sizes]
        strided = config.stage_strides[index] > 1
        self.downsample = nn.Conv2d(dims[index], dims[index + 1], 2, stride=2) if strided else nn.Identity()
        self.blocks = nn.Sequential(*[Block(dims[index + 1]) for _ in range(config.depths[index])])

    def forward(self, x):
        return self.blocks(self.downsample(x))


class VitzooToyPreTrainedModel(VitzooPreTrainedMixin, PreTrainedModel):
    config_class = VitzooToyConfig
    base_model_prefix = "toy"
    _no_split_modules = ["Block"]

    def _init_weights(self, module):
        init_stage_weights(module, self.config.initializer_range)


class VitzooToyModel(StageModelBase, VitzooToyPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        width = config.stem_width
        self.stem = nn.Sequential(nn.Conv2d(config.num_channels, width, 4, stride=4), nn.BatchNorm2d(width))
        self.stages = nn.ModuleList(Stage(config, i) for i in range(len(config.depths)))
        self.post_init()

    def forward_stem(self, pixel_values):
        hidden = self.stem(pixel_values)
        return hidden, hidden

    def forward(self, pixel_values, output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        flags = stage_flags(self, output_attentions, output_hidden_states, return_dict)
        last, states, _ = run_stages(self, pixel_values, lambda index: flags.hidden_states)
        return stage_output(flags, last, self.pool(last, self.config.global_pool), states)


class VitzooToyForImageClassification(StageClassifierMixin, VitzooToyPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.toy = VitzooToyModel(config)
        self.init_head(config, config.hidden_sizes[-1])
        self.post_init()


class VitzooToyBackbone(StageBackboneMixin, BackboneMixin, VitzooToyPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.toy = VitzooToyModel(config)
        self.init_stage_backbone(config)
        self.post_init()
"""

HYBRID_CONFIGURATION = """
from .stage_config import StageConfig


class VitzooToyHybridConfig(StageConfig):
    model_type = "vitzoo_toyhybrid"

    def __init__(self, num_heads=2, attention_dropout=0.0, **kwargs):
        self.num_heads = num_heads
        self.attention_dropout = attention_dropout
        super().__init__(**kwargs)
"""

HYBRID_MODELING = """
import torch
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import PreTrainedModel

from .attention_layers import Mlp, SelfAttention, attention_function
from .common_compat import BackboneMixin, init
from .common_config import VitzooConfig  # noqa: F401
from .common_heads import ClassifierHead  # noqa: F401
from .common_layers import Activation  # noqa: F401
from .common_modeling import VitzooPreTrainedMixin
from .configuration_toyhybrid import VitzooToyHybridConfig
from .stage_config import StageConfig  # noqa: F401
from .stage_modeling import (
    StageBackboneMixin, StageClassifierMixin, StageModelBase, init_stage_weights, run_stages, stage_flags, stage_output
)


def grid_distance(height, width, device):
    rows, cols = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    coords = torch.stack([rows.flatten(), cols.flatten()], dim=1)
    return (coords[:, None] - coords[None]).abs().sum(-1).float()


class Block(GradientCheckpointingLayer):
    def __init__(self, config, dim):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(config, dim, config.num_heads, qkv_bias=True, proj_bias=True)
        self.slopes = nn.Parameter(torch.zeros(config.num_heads))
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, dim * 2, "gelu", bias=True, norm=None, drop=0.0)

    def forward(self, x, attend):
        batch, height, width, dim = x.shape
        tokens = x.reshape(batch, height * width, dim)
        bias = -self.slopes[:, None, None] * grid_distance(height, width, x.device)
        attn, weights = self.attn(self.norm1(tokens), attend=attend, attn_bias=bias)
        tokens = tokens + attn
        tokens = tokens + self.mlp(self.norm2(tokens))
        return tokens.reshape(batch, height, width, dim), weights


class PatchMerge(nn.Module):
    def __init__(self, previous, dim):
        super().__init__()
        self.norm = nn.LayerNorm(4 * previous)
        self.reduction = nn.Linear(4 * previous, dim, bias=False)

    def forward(self, x):
        batch, height, width, channels = x.shape
        x = x.reshape(batch, height // 2, 2, width // 2, 2, channels).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.reduction(self.norm(x))


class Stage(nn.Module):
    def __init__(self, config, index):
        super().__init__()
        dims = [config.stem_width, *config.hidden_sizes]
        strided = config.stage_strides[index] > 1
        self.downsample = PatchMerge(dims[index], dims[index + 1]) if strided else nn.Identity()
        self.blocks = nn.ModuleList(Block(config, dims[index + 1]) for _ in range(config.depths[index]))

    def forward(self, x, attend):
        x = self.downsample(x)
        weights = []
        for block in self.blocks:
            x, attention = block(x, attend)
            weights.append(attention)
        return x, tuple(weights)


class VitzooToyHybridPreTrainedModel(VitzooPreTrainedMixin, PreTrainedModel):
    config_class = VitzooToyHybridConfig
    base_model_prefix = "toyhybrid"
    _no_split_modules = ["Block"]
    _supports_sdpa = True

    def _init_weights(self, module):
        init_stage_weights(module, self.config.initializer_range)
        if isinstance(module, Block):
            init.zeros_(module.slopes)


class VitzooToyHybridModel(StageModelBase, VitzooToyHybridPreTrainedModel):
    map_layout = "NHWC"
    stage_attentions = True

    def __init__(self, config):
        super().__init__(config)
        self.stem = nn.Sequential(nn.Conv2d(config.num_channels, config.stem_width, 4, stride=4))
        self.stem_norm = nn.LayerNorm(config.stem_width)
        self.stages = nn.ModuleList(Stage(config, i) for i in range(len(config.depths)))
        self.post_init()

    def attention_backend(self, output_attentions):
        return attention_function(self.config._attn_implementation, output_attentions)

    def forward_stem(self, pixel_values):
        hidden = self.stem_norm(self.stem(pixel_values).permute(0, 2, 3, 1))
        return hidden, hidden

    def forward(self, pixel_values, output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        flags = stage_flags(self, output_attentions, output_hidden_states, return_dict)
        last, states, attentions = run_stages(self, pixel_values, lambda index: flags.hidden_states, flags.attentions)
        return stage_output(flags, last, self.pool(last, self.config.global_pool), states, attentions)


class VitzooToyHybridForImageClassification(StageClassifierMixin, VitzooToyHybridPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.toyhybrid = VitzooToyHybridModel(config)
        self.init_head(config, config.hidden_sizes[-1])
        self.post_init()


class VitzooToyHybridBackbone(StageBackboneMixin, BackboneMixin, VitzooToyHybridPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.toyhybrid = VitzooToyHybridModel(config)
        self.init_stage_backbone(config)
        self.post_init()
"""

# ------------------------------------------------------------------------------------------ conversion hooks


class ToyHooks(StageHooks):
    """A new stage family's hooks: three methods."""

    timm_classes = ("ToyStageNet",)
    timm_modules = ("test_toy_family",)

    def config_from_timm(self, model: ToyStageNet, **overrides):
        fields = dict(
            depths=[len(stage.blocks) for stage in model.stages],
            hidden_sizes=[stage.blocks[0].conv.out_channels for stage in model.stages],
            stage_strides=[1] + [2] * (len(model.stages) - 1),
            image_size=32,
        )
        return self.family.config(**{**fields, **head_fields(model.fc), **overrides})

    def convert_key(self, key: str, with_head: bool = True) -> str | None:
        if key.startswith("fc."):
            return "head.layers." + key[3:] if with_head else None
        return f"{self.family.model.base_model_prefix}.{key}" if with_head else key

    def block_groups(self, model: ToyStageNet) -> list[nn.Sequential]:
        return [stage.blocks for stage in model.stages]


class ToyHybridHooks(ToyHooks, AttentionStageHooks):
    """Attention inside stages: the group's verification adds the eager path; keys and groups as the plain toy's."""

    timm_classes = ("ToyHybridNet",)

    def config_from_timm(self, model: ToyHybridNet, **overrides):
        fields = dict(
            depths=[len(stage.blocks) for stage in model.stages],
            hidden_sizes=[stage.blocks[0].qkv.in_features for stage in model.stages],
            stage_strides=[1] + [2] * (len(model.stages) - 1),
            num_heads=model.stages[0].blocks[0].heads,
            image_size=32,
        )
        return self.family.config(**{**fields, **head_fields(model.fc), **overrides})

    def convert_key(self, key: str, with_head: bool = True) -> str | None:
        """timm's attention parts sit in the block; ours in ``attn`` (``SelfAttention``)."""
        for part in ("qkv.", "proj."):
            key = key.replace(f".{part}", f".attn.{part}")
        return super().convert_key(key, with_head)


# ------------------------------------------------------------------------------------------------ the tests

SHARED = ("common_*.py", "stage_*.py", "attention_layers.py", "image_processing_vitzoo.py")


def shared_files() -> list[Path]:
    package = Path(vitzoo_hf.__file__).parent
    return sorted(p for pattern in SHARED for p in package.glob(pattern))


def register_toy(tmp_path: Path, monkeypatch, name: str, files: dict[str, str], hooks: str) -> vitzoo_hf.Family:
    """A toy's files beside copies of the shared ones, imported as a package and registered as a family."""
    package = tmp_path / f"{name}zoo"
    package.mkdir()
    for path in shared_files():
        shutil.copyfile(path, package / path.name)
    for file_name, text in files.items():
        (package / file_name).write_text(text)
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    modeling = importlib.import_module(f"{package.name}.modeling_{name}")
    prefix = "Vitzoo" + {"toy": "Toy", "toyhybrid": "ToyHybrid"}[name]
    family = vitzoo_hf.Family(
        name,
        getattr(modeling, f"{prefix}Config"),
        getattr(modeling, f"{prefix}Model"),
        getattr(modeling, f"{prefix}ForImageClassification"),
        getattr(modeling, f"{prefix}Backbone"),
        conversion=f"{__name__}:{hooks}",
    )
    monkeypatch.setitem(vitzoo_hf.FAMILIES, name, family)
    vitzoo_hf.register_family(family)
    return family


@pytest.fixture
def toy_family(tmp_path: Path, monkeypatch):
    files = {"configuration_toy.py": CONFIGURATION, "modeling_toy.py": MODELING}
    yield register_toy(tmp_path, monkeypatch, "toy", files, "ToyHooks")
    for name in [m for m in sys.modules if m.startswith("toyzoo")]:
        del sys.modules[name]


@pytest.fixture
def hybrid_family(tmp_path: Path, monkeypatch):
    files = {"configuration_toyhybrid.py": HYBRID_CONFIGURATION, "modeling_toyhybrid.py": HYBRID_MODELING}
    yield register_toy(tmp_path, monkeypatch, "toyhybrid", files, "ToyHybridHooks")
    for name in [m for m in sys.modules if m.startswith("toyhybridzoo")]:
        del sys.modules[name]


def timm_checkpoint(folder: Path, name: str = "toy_stage_net", **kwargs) -> tuple[Path, nn.Module]:
    model = perturb(timm.create_model(name, **kwargs)).eval()
    path = folder / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path, model


def digest(paths: list[Path]) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


COMMON = {"common_compat.py", "common_config.py", "common_heads.py", "common_layers.py", "common_modeling.py"}
STAGE = {"stage_config.py", "stage_modeling.py", "image_processing_vitzoo.py"}


def test_toy_stage_family_converts_and_verifies_through_the_registry(toy_family, tmp_path: Path) -> None:
    before = digest(shared_files())
    checkpoint, reference = timm_checkpoint(tmp_path)
    assert family_for(reference).family is toy_family
    result = convert("toy_stage_net", tmp_path / "out", checkpoint=checkpoint)
    # Both sizes, every output, checked in a clean process against timm.
    assert set(result.parity) == {
        f"{s}.{o}" for s in ("native", "resized") for o in ("last_hidden_state", "pooler_output", "logits")
    }
    assert max(result.parity.values()) <= 1e-5
    files = {p.name for p in result.output_dir.glob("*.py")}
    assert files == {"configuration_toy.py", "modeling_toy.py"} | COMMON | STAGE
    config = json.loads((result.output_dir / "config.json").read_text())
    assert (
        config["model_type"] == "vitzoo_toy" and config["auto_map"]["AutoBackbone"] == "modeling_toy.VitzooToyBackbone"
    )
    card = (result.output_dir / "README.md").read_text()
    assert "Other sizes: any size timm accepts" in card and "interpolate_pos_encoding" not in card
    assert digest(shared_files()) == before


def test_toy_stage_family_outputs_backbone_and_refusals(toy_family, tmp_path: Path) -> None:
    """What the stage layer gives every stage family: hidden states per stage, NCHW maps with their own widths and
    strides, head poolings over the map, a clear refusal of attentions."""
    _, reference = timm_checkpoint(tmp_path)
    hooks = family_for(reference)
    config = hooks.config_from_timm(reference, out_features=["stem", "stage1", "stage2"])
    classifier = toy_family.classifier(config).eval()
    state = hooks.convert_state_dict(reference.state_dict())
    classifier.load_state_dict(state, strict=True)
    backbone = toy_family.backbone(config).eval()
    backbone.toy.load_state_dict(hooks.convert_state_dict(reference.state_dict(), with_head=False), strict=True)
    x = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        out = classifier(x, output_hidden_states=True)
        torch.testing.assert_close(out.logits, reference(x), atol=1e-5, rtol=1e-5)
        stem = reference.stem(x)
        stages = [reference.stages[0](stem)]
        stages.append(reference.stages[1](stages[0]))
        for ours, theirs in zip(out.hidden_states, [stem, *stages], strict=True):
            torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
        maps = backbone(x).feature_maps
    assert [m.shape[1] for m in maps] == backbone.channels == [8, 8, 16]
    assert backbone.strides == [4, 4, 8] and [x.shape[-1] // m.shape[-1] for m in maps] == [4, 4, 8]
    with pytest.raises(ValueError, match="no attention maps"):
        classifier.toy(x, output_attentions=True)
    pooled = toy_family.classifier(hooks.config_from_timm(reference, head_pooling="max")).eval()
    pooled.load_state_dict(state, strict=True)
    with torch.no_grad():
        expected = reference.fc(reference.forward_features(x).amax(dim=(2, 3)))
        torch.testing.assert_close(pooled(x).logits, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="Unknown head_pooling 'token'"):
        hooks.config_from_timm(reference, head_pooling="token")


def test_toy_partial_verification_cuts_every_stage(toy_family, tmp_path: Path) -> None:
    """With too little memory the converter verifies a truncated copy, cut out of the built model by the family's
    block groups."""
    checkpoint, _ = timm_checkpoint(tmp_path)
    result = convert("toy_stage_net", tmp_path / "out", checkpoint=checkpoint, memory_budget=1)
    assert result.verified_blocks == 2 and max(result.parity.values()) <= 1e-5
    record = json.loads((result.output_dir / "vitzoo_parity.json").read_text())
    assert record["verified_blocks"] == "first 2 of 3"


def test_toy_hybrid_with_attention_in_stages_converts_and_verifies(hybrid_family, tmp_path: Path) -> None:
    """Attention inside stages, from the shared attention group (with a bias), NHWC maps: converted and verified
    through the registry (eager path included) without touching a shared file, carrying the attention group."""
    before = digest(shared_files())
    checkpoint, _ = timm_checkpoint(tmp_path, "toy_hybrid_net")
    result = convert("toy_hybrid_net", tmp_path / "out", checkpoint=checkpoint)
    assert set(result.parity) == {
        f"{s}.{o}" for s in ("native", "resized", "eager") for o in ("last_hidden_state", "pooler_output", "logits")
    }
    assert max(result.parity.values()) <= 1e-5
    files = {p.name for p in result.output_dir.glob("*.py")}
    assert files == {"configuration_toyhybrid.py", "modeling_toyhybrid.py", "attention_layers.py"} | COMMON | STAGE
    assert '"eager" runs the native size on the eager attention path' in (result.output_dir / "README.md").read_text()
    partial = convert("toy_hybrid_net", tmp_path / "partial", checkpoint=checkpoint, memory_budget=1)
    assert partial.verified_blocks == 2 and max(partial.parity.values()) <= 1e-5
    assert digest(shared_files()) == before


def test_toy_hybrid_returns_attentions_nhwc_states_and_nchw_backbone_maps(hybrid_family, tmp_path: Path) -> None:
    _, reference = timm_checkpoint(tmp_path, "toy_hybrid_net")
    hooks = family_for(reference)
    config = hooks.config_from_timm(reference, out_features=["stage1", "stage2"])
    models = {}
    for attn in ("eager", "sdpa"):
        config._attn_implementation = attn
        models[attn] = hybrid_family.classifier(config).eval()
        models[attn].load_state_dict(hooks.convert_state_dict(reference.state_dict()), strict=True)
    backbone = hybrid_family.backbone(config).eval()
    backbone.toyhybrid.load_state_dict(hooks.convert_state_dict(reference.state_dict(), with_head=False))
    x = torch.randn(2, 3, 48, 40)
    with torch.no_grad():
        out = models["sdpa"](x, output_hidden_states=True, output_attentions=True)
        torch.testing.assert_close(out.logits, reference(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(models["eager"](x).logits, out.logits, atol=1e-5, rtol=1e-5)
        base = models["sdpa"].toyhybrid(x)
        torch.testing.assert_close(base.last_hidden_state, reference.forward_features(x), atol=1e-5, rtol=1e-5)
        maps = backbone(x).feature_maps
        stem = reference.stem_norm(reference.stem(x).permute(0, 2, 3, 1))
        stage1 = reference.stages[0](stem)
        expected_maps = [stage1, reference.stages[1](stage1)]
    assert [tuple(h.shape) for h in out.hidden_states] == [(2, 12, 10, 8), (2, 12, 10, 8), (2, 6, 5, 16)]
    assert [tuple(a.shape) for a in out.attentions] == [(2, 2, 120, 120)] + [(2, 2, 30, 30)] * 3
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(2, 2, 120), atol=1e-5, rtol=1e-5)
    for ours, theirs in zip(maps, expected_maps, strict=True):  # NCHW for dense heads, whatever the layout
        torch.testing.assert_close(ours, theirs.permute(0, 3, 1, 2), atol=1e-5, rtol=1e-5)


def test_a_builder_made_timm_model_truncates_through_its_block_groups() -> None:
    """timm's EfficientNet builder takes its architecture as block specs: no constructor keyword can shorten it
    (``block_args`` collides with the builder's own), yet a built model cuts to the first block of each stage and
    is then the model timm builds from the shallower specs, block for block and output for output."""
    arch = [["ds_r1_k3_s1_e1_c16"], ["ir_r3_k3_s2_e6_c24_se0.25"], ["ir_r2_k5_s2_e6_c40_se0.25"]]
    kwargs = dict(stem_size=16, num_features=64, num_classes=5)
    with pytest.raises(TypeError, match="multiple values"):
        timm.create_model("efficientnet_b0", block_args=decode_arch_def(arch))

    class EfficientNetStyleHooks(StageHooks):
        def block_groups(self, model: nn.Module) -> list[nn.Sequential]:
            return list(model.blocks)

    built = perturb(_create_effnet("efficientnet_b0", block_args=decode_arch_def(arch), **kwargs)).eval()
    hooks = EfficientNetStyleHooks(family=None)
    assert hooks.num_blocks(built) == 3
    cut = hooks.truncate(built, 1)
    shallow_arch = [[spec.replace("_r3_", "_r1_").replace("_r2_", "_r1_") for spec in stage] for stage in arch]
    shallow = _create_effnet("efficientnet_b0", block_args=decode_arch_def(shallow_arch), **kwargs).eval()
    assert [len(stage) for stage in cut.blocks] == [1, 1, 1]
    assert {k: v.shape for k, v in cut.state_dict().items()} == {k: v.shape for k, v in shallow.state_dict().items()}
    shallow.load_state_dict(cut.state_dict())
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        torch.testing.assert_close(cut(x), shallow(x), atol=0, rtol=0)
