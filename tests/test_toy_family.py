"""The shared layer is really shared: a throwaway stage family, written here in a few lines, goes through the
family registry, the converter and the clean-process verification without any change to a shared file.

The toy's HF side is a remote-code folder of its own (its two files beside copies of the shared files, as a
published folder would carry them); its timm side is a small CNN registered with timm for this test; this module
is its conversion hook module.
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
from timm.models import register_model
from torch import nn

import vitzoo_hf
from conversion.common import head_fields
from conversion.convert_timm import convert
from conversion.families import family_for
from conversion.stage_families import input_size, reference_at, reference_kwargs, verification_inputs  # noqa: F401
from tests.helpers import perturb

# ----------------------------------------------------------------------------------------------- timm side


class ToyBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.relu(self.bn(self.conv(x)))


class ToyStageNet(nn.Module):
    """A timm-style CNN: stem (stride 4), stages (the later ones halve the size), avg pool, ``fc``."""

    def __init__(self, depths=(1, 3), dims=(8, 16), num_classes: int = 5, in_chans: int = 3, **kwargs) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.stem = nn.Sequential(nn.Conv2d(in_chans, dims[0], 4, stride=4), nn.BatchNorm2d(dims[0]))
        stages, previous = [], dims[0]
        for index, (depth, dim) in enumerate(zip(depths, dims, strict=True)):
            down = nn.Conv2d(previous, dim, 2, stride=2) if index else nn.Identity()
            stages.append(nn.Sequential(down, *[ToyBlock(dim) for _ in range(depth)]))
            previous = dim
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(previous, num_classes) if num_classes else nn.Identity()
        self.feature_info = [dict(num_chs=d, reduction=4 * 2**i, module=f"stages.{i}") for i, d in enumerate(dims)]
        self.pretrained_cfg = dict(
            input_size=(in_chans, 32, 32), interpolation="bilinear", crop_pct=0.875, crop_mode="center",
            mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), num_classes=num_classes, architecture="toy_stage_net",
        )  # fmt: skip
        self.default_cfg = self.pretrained_cfg

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3))
        return pooled if pre_logits else self.fc(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def toy_stage_net(pretrained: bool = False, **kwargs) -> ToyStageNet:
    kwargs = {k: v for k, v in kwargs.items() if k not in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")}
    return ToyStageNet(**kwargs)


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
from .stage_modeling import StageBackboneMixin, StageClassifierMixin, StageModelMixin, init_stage_weights


class Block(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(dim)

    def forward(self, x):
        return x + torch.relu(self.bn(self.conv(x)))


class Stage(GradientCheckpointingLayer):
    def __init__(self, config, index):
        super().__init__()
        dims = [config.stem_width, *config.hidden_sizes]
        down = nn.Conv2d(dims[index], dims[index + 1], 2, stride=2) if config.stage_strides[index] > 1 else None
        down = down if down is not None else nn.Identity()
        self.blocks = nn.Sequential(down, *[Block(dims[index + 1]) for _ in range(config.depths[index])])

    def forward(self, x):
        return self.blocks(x)


class VitzooToyPreTrainedModel(VitzooPreTrainedMixin, PreTrainedModel):
    config_class = VitzooToyConfig
    base_model_prefix = "toy"
    _no_split_modules = ["Stage"]

    def _init_weights(self, module):
        init_stage_weights(module, self.config.initializer_range)


class VitzooToyModel(StageModelMixin, VitzooToyPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        width = config.stem_width
        self.stem = nn.Sequential(nn.Conv2d(config.num_channels, width, 4, stride=4), nn.BatchNorm2d(width))
        self.stages = nn.ModuleList(Stage(config, i) for i in range(len(config.depths)))
        self.norm, self.pre_logits = nn.Identity(), nn.Identity()
        self.post_init()


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

# ------------------------------------------------------------------------------------------ conversion hooks

TIMM_CLASSES = ("ToyStageNet",)
TIMM_MODULES = ("test_toy_family",)
CLASSIFIER_WEIGHT = "fc.weight"


def config_from_timm(model: ToyStageNet, **overrides):
    depths = [sum(isinstance(m, ToyBlock) for m in stage) for stage in model.stages]
    dims = [stage[-1].conv.out_channels for stage in model.stages]
    fields = dict(depths=depths, hidden_sizes=dims, stage_strides=[1] + [2] * (len(dims) - 1), image_size=32)
    config_class = vitzoo_hf.FAMILIES["toy"].config
    return config_class(**{**fields, **head_fields(model.fc), **overrides})


def convert_key(key: str, with_head: bool = True) -> str | None:
    if key.startswith("fc."):
        return "head.layers." + key[3:] if with_head else None
    if key.startswith("stages."):  # stages.S.I -> stages.S.blocks.I
        _, stage, rest = key.split(".", 2)
        key = f"stages.{stage}.blocks.{rest}"
    return "toy." + key if with_head else key


def num_blocks(model: ToyStageNet) -> int:
    return max(sum(isinstance(m, ToyBlock) for m in stage) for stage in model.stages)


def truncated_kwargs(model: ToyStageNet, blocks: int) -> dict:
    """Each stage keeps its first ``blocks`` blocks."""
    depths = [sum(isinstance(m, ToyBlock) for m in stage) for stage in model.stages]
    return {"depths": tuple(min(d, blocks) for d in depths)}


def truncated_overrides(config, blocks: int) -> dict:
    return {"depths": [min(d, blocks) for d in config.depths]}


# ------------------------------------------------------------------------------------------------ the tests

SHARED = ("common_*.py", "stage_*.py", "image_processing_vitzoo.py")


def shared_files() -> list[Path]:
    package = Path(vitzoo_hf.__file__).parent
    return sorted(p for pattern in SHARED for p in package.glob(pattern))


@pytest.fixture
def toy_family(tmp_path: Path, monkeypatch):
    """The toy's files beside copies of the shared ones, imported as a package and registered as a family."""
    package = tmp_path / "toyzoo"
    package.mkdir()
    for path in shared_files():
        shutil.copyfile(path, package / path.name)
    (package / "configuration_toy.py").write_text(CONFIGURATION)
    (package / "modeling_toy.py").write_text(MODELING)
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    modeling = importlib.import_module("toyzoo.modeling_toy")
    family = vitzoo_hf.Family(
        "toy",
        modeling.VitzooToyConfig,
        modeling.VitzooToyModel,
        modeling.VitzooToyForImageClassification,
        modeling.VitzooToyBackbone,
        conversion=__name__,
    )
    monkeypatch.setitem(vitzoo_hf.FAMILIES, "toy", family)
    vitzoo_hf.register_family(family)
    yield family
    for name in [m for m in sys.modules if m == "toyzoo" or m.startswith("toyzoo.")]:
        del sys.modules[name]


def timm_checkpoint(folder: Path, **kwargs) -> tuple[Path, ToyStageNet]:
    model = perturb(timm.create_model("toy_stage_net", **kwargs)).eval()
    path = folder / "toy.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path, model


def digest(paths: list[Path]) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


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
    assert files == {"configuration_toy.py", "modeling_toy.py", "image_processing_vitzoo.py"} | {
        "common_compat.py", "common_config.py", "common_heads.py", "common_layers.py", "common_modeling.py",
        "stage_config.py", "stage_modeling.py",
    }  # fmt: skip
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
    config = config_from_timm(reference, out_features=["stem", "stage1", "stage2"])
    classifier = toy_family.classifier(config).eval()
    state = {convert_key(k): v for k, v in reference.state_dict().items()}
    classifier.load_state_dict(state, strict=True)
    backbone = toy_family.backbone(config).eval()
    backbone.toy.load_state_dict({k.removeprefix("toy."): v for k, v in state.items() if k.startswith("toy.")})
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
    pooled = toy_family.classifier(config_from_timm(reference, head_pooling="max")).eval()
    pooled.load_state_dict(state, strict=True)
    with torch.no_grad():
        expected = reference.fc(reference.forward_features(x).amax(dim=(2, 3)))
        torch.testing.assert_close(pooled(x).logits, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="Unknown head_pooling 'token'"):
        config_from_timm(reference, head_pooling="token")


def test_toy_partial_verification_cuts_every_stage(toy_family, tmp_path: Path) -> None:
    """With too little memory the converter verifies a truncated copy, through the family's truncation hooks."""
    checkpoint, _ = timm_checkpoint(tmp_path)
    result = convert("toy_stage_net", tmp_path / "out", checkpoint=checkpoint, memory_budget=1)
    assert result.verified_blocks == 2 and max(result.parity.values()) <= 1e-5
    record = json.loads((result.output_dir / "vitzoo_parity.json").read_text())
    assert record["verified_blocks"] == "first 2 of 3"
