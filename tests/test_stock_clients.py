"""Converted folders driven by clients this project did not write, as users run them.

The folders come from the real converter (tiny perturbed checkpoints). The clients: the standard fine-tune recipe
(``num_labels=N, ignore_mismatched_sizes=True``) and pipelines in a clean process with only torch + transformers,
transformers' own ``run_image_classification.py`` (from ``../shared/clients``), Trainer's save, and transformers'
dense-task models (UperNet, DPT, DepthAnything, Mask2Former, DETR) over our backbones.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from transformers import (
    AutoConfig,
    DepthAnythingConfig,
    DepthAnythingForDepthEstimation,
    DetrConfig,
    DetrForObjectDetection,
    DPTConfig,
    DPTForDepthEstimation,
    Mask2FormerConfig,
    Mask2FormerForUniversalSegmentation,
    UperNetConfig,
    UperNetForSemanticSegmentation,
)

import push_to_hub
import vitzoo_hf
from conversion.convert_timm import convert
from conversion.verify import clean_env
from tests.helpers import perturb

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = ROOT.parent / "shared" / "clients"
sys.path.insert(0, str(ROOT / "examples"))
from make_toy_images import make_image_folder  # noqa: E402

# family -> (timm name with tag, tiny constructor arguments); num_classes comes from the checkpoint's head.
TINY = dict(img_size=32, patch_size=8, depth=4, num_heads=4)  # four blocks: the four maps DPT reassembles
CNN_TINY = dict(depths=(1, 1, 1, 1), dims=(16, 24, 32, 48))
FOLDERS = {
    "dinov3_headless": ("vit_small_patch16_dinov3.lvd1689m", dict(TINY, embed_dim=64), 0),
    "dinov2_reg_headless": ("vit_small_patch14_reg4_dinov2.lvd142m", dict(TINY, embed_dim=32), 0),
    "vit_head": ("vit_small_patch16_224.augreg_in21k_ft_in1k", dict(TINY, embed_dim=32), 7),
    "convnext_dinov3_headless": ("convnext_tiny.dinov3_lvd1689m", CNN_TINY, 0),
    "convnext_head": ("convnext_atto.d2_in1k", CNN_TINY, 7),
    "resnet_head": ("resnet50d.a1_in1k", dict(layers=(1, 1, 1, 1), channels=(16, 16, 16, 16)), 7),
}
# folder key -> family
FAMILY = (
    {"dinov3_headless": "eva", "dinov2_reg_headless": "vit", "vit_head": "vit"}
    | {key: "convnext" for key in ("convnext_dinov3_headless", "convnext_head")}
    | {"resnet_head": "resnet"}
)


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, Path]:
    """Folders written by the converter from tiny perturbed timm checkpoints."""
    root = tmp_path_factory.mktemp("converted")
    folders = {}
    for key, (name, kwargs, classes) in FOLDERS.items():
        model = perturb(timm.create_model(name.split(".")[0], pretrained=False, num_classes=classes, **kwargs))
        checkpoint = root / f"{key}.safetensors"
        save_file(model.state_dict(), checkpoint)
        labels = None
        if classes:
            labels = root / f"{key}.txt"
            labels.write_text("".join(f"class_{i}\n" for i in range(classes)))
        folders[key] = convert(name, root / key, checkpoint=checkpoint, labels=labels, model_kwargs=kwargs).output_dir
    return folders


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("toy"), per_class={"train": 8, "validation": 4})


def run_clean(code: str, *args: str, cwd: Path, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    """Python in a fresh process where vitzoo_hf, timm and this repo cannot be imported."""
    prelude = 'import sys\nfor m in ("vitzoo_hf", "timm", "conversion", "tests"):\n    sys.modules[m] = None\n'
    env = {**clean_env(), **(extra_env or {})}
    return subprocess.run(
        [sys.executable, "-c", prelude + code, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


RECIPE = r"""
import json
import numpy as np, torch
from PIL import Image
from transformers import AutoModel, AutoModelForImageClassification, pipeline

folder, out = sys.argv[1], {}
images = [Image.fromarray((np.random.default_rng(i).random((40, 50, 3)) * 255).astype(np.uint8)) for i in range(2)]
try:
    AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True)
except ValueError as error:
    out["no_labels_error"] = str(error)
try:
    pipeline("image-classification", model=folder, trust_remote_code=True)
except ValueError as error:
    out["pipeline_error"] = str(error)
labels = {0: "cat", 1: "dog", 2: "bird"}
model = AutoModelForImageClassification.from_pretrained(
    folder, trust_remote_code=True, num_labels=3, id2label=labels, label2id={v: k for k, v in labels.items()},
    ignore_mismatched_sizes=True,
)
features = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
x = torch.randn(4, 3, 32, 32)
with torch.no_grad():
    out["backbone_kept"] = torch.equal(model.base_model.eval()(x).last_hidden_state, features(x).last_hidden_state)
model.train()
result = model(x, labels=torch.tensor([0, 1, 2, 0]))
result.loss.backward()
out["logits_shape"] = list(result.logits.shape)
out["loss_finite"] = bool(torch.isfinite(result.loss))
out["head_grad"] = float(model.head.layers.weight.grad.abs().sum())
out["head_type"] = model.config.head_type
saved = "resaved"  # in the test's own temporary working directory
model.eval().save_pretrained(saved)
reloaded = AutoModelForImageClassification.from_pretrained(saved, trust_remote_code=True).eval()
with torch.no_grad():
    out["reload_equal"] = torch.equal(model(x).logits, reloaded(x).logits)
classify = pipeline("image-classification", model=saved, image_processor=folder, trust_remote_code=True)
out["pipeline_labels"] = sorted(p["label"] for p in classify(images[0], top_k=3))
mlp = AutoModelForImageClassification.from_pretrained(
    folder, trust_remote_code=True, num_labels=5, head_type="mlp", head_hidden_sizes=[16]
)
out["mlp_logits"] = list(mlp(x).logits.shape)
print(json.dumps(out))
"""


@pytest.mark.parametrize("key", ["dinov3_headless", "dinov2_reg_headless", "convnext_dinov3_headless"])
def test_headless_folder_takes_the_standard_fine_tune_recipe(converted, key: str, tmp_path: Path) -> None:
    folder = converted[key]
    config = json.loads((folder / "config.json").read_text())
    assert config["id2label"] == {} and config["head_type"] == "linear"  # no classes until a user asks for them
    assert config["architectures"][0].endswith("Model")
    result = run_clean(RECIPE, str(folder), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    for error in (out["no_labels_error"], out["pipeline_error"]):
        assert "has no classification head" in error and "num_labels=N, ignore_mismatched_sizes=True" in error
    assert out["backbone_kept"] is True  # the new head sits on the converted weights, not a fresh backbone
    assert out["logits_shape"] == [4, 3] and out["loss_finite"] and out["head_grad"] > 0
    assert out["head_type"] == "linear"
    assert out["reload_equal"] is True
    assert out["pipeline_labels"] == ["bird", "cat", "dog"]
    assert out["mlp_logits"] == [4, 5]


@pytest.mark.skipif(
    not CLIENTS.is_dir(), reason="../shared/clients (transformers' example script) is not beside the repo"
)
@pytest.mark.parametrize("key", sorted(FOLDERS))
def test_transformers_example_script_trains_evaluates_and_saves(converted, toy, key: str, tmp_path: Path) -> None:
    """transformers' own run_image_classification.py, unmodified, on a converted folder of each family."""
    folder, output = converted[key], tmp_path / "run"
    args = [
        str(CLIENTS / "run_image_classification.py"),
        *("--model_name_or_path", str(folder), "--trust_remote_code", "--ignore_mismatched_sizes"),
        *("--train_dir", str(toy / "train"), "--validation_dir", str(toy / "validation")),
        *("--do_train", "--do_eval", "--output_dir", str(output), "--num_train_epochs", "2"),
        *("--per_device_train_batch_size", "8", "--learning_rate", "1e-3", "--remove_unused_columns", "False"),
        *("--report_to", "none", "--save_strategy", "no", "--seed", "0"),
    ]
    env = {**clean_env(), "PYTHONPATH": str(CLIENTS), "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    metrics = json.loads((output / "all_results.json").read_text())
    assert "eval_accuracy" in metrics and metrics["train_loss"] > 0
    names = {p.name for p in output.iterdir()}
    family = FAMILY[key]
    assert {"config.json", "model.safetensors", f"modeling_{family}.py", "preprocessor_config.json"} <= names
    assert "image_processing_vitzoo.py" in names  # Trainer saved the processor with its code
    assert "vitzoo_parity.json" not in names and "vitzoo_parity" not in (output / "config.json").read_text()
    reload = r"""
from transformers import AutoImageProcessor, AutoModelForImageClassification
from PIL import Image
model = AutoModelForImageClassification.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
processor = AutoImageProcessor.from_pretrained(sys.argv[1], trust_remote_code=True)
print(model.config.id2label, tuple(model(**processor(Image.new("RGB", (45, 37)), return_tensors="pt")).logits.shape))
"""
    reloaded = run_clean(reload, str(output), cwd=tmp_path)
    assert reloaded.returncode == 0, reloaded.stderr[-4000:]
    assert reloaded.stdout.strip().splitlines()[-1] == "{0: 'blue', 1: 'green', 2: 'red'} (1, 3)"


def test_parity_record_is_bound_to_the_verified_weights(converted, tmp_path: Path) -> None:
    """The parity claim lives in vitzoo_parity.json with the weights' hashes: a re-save does not carry it, and
    weights changed in place make the publisher refuse the stale claim."""
    folder = converted["vit_head"]
    record = json.loads((folder / "vitzoo_parity.json").read_text())
    assert set(record["weights"]) == {"model.safetensors"} and max(record["max_abs_diff"].values()) <= 1e-4
    assert "vitzoo_parity" not in json.loads((folder / "config.json").read_text())
    model = vitzoo_hf.VitzooViTForImageClassification.from_pretrained(folder)
    resaved = tmp_path / "resaved"
    model.save_pretrained(resaved)
    assert not (resaved / "vitzoo_parity.json").exists()
    assert "vitzoo_parity" not in (resaved / "config.json").read_text()
    in_place = tmp_path / "in_place"
    subprocess.run(["cp", "-r", str(folder), str(in_place)], check=True)
    assert push_to_hub.validate(in_place) == []
    with torch.no_grad():
        model.head.layers.bias.add_(1.0)  # a fine-tune, saved over the converted folder
    model.save_pretrained(in_place)
    problems = push_to_hub.validate(in_place)
    assert any("vitzoo_parity.json" in p and "model.safetensors" in p for p in problems), problems


# ---- dense tasks: transformers' models over a vitzoo backbone -------------------------------------------------


def _backbone_config(folder: Path, **overrides):
    return AutoConfig.from_pretrained(folder, **{"out_indices": [1, 2, 3, 4], **overrides})


def _channels(config) -> list[int]:
    """Channels of the chosen maps: one width for token families, each stage's own for stage families."""
    widths = [config.hidden_size] * 5 if hasattr(config, "hidden_size") else [config.stem_width, *config.hidden_sizes]
    return [widths[i] for i in config.out_indices]


DENSE = {
    "upernet": lambda bb: UperNetForSemanticSegmentation(
        UperNetConfig(backbone_config=bb(), hidden_size=16, auxiliary_in_channels=_channels(bb())[2], num_labels=3)
    ),
    "dpt": lambda bb: DPTForDepthEstimation(
        DPTConfig(
            backbone_config=bb(reshape_hidden_states=False),
            is_hybrid=False,
            hidden_size=bb().hidden_size,
            neck_hidden_sizes=[8, 16, 32, 32],
            reassemble_factors=[4, 2, 1, 0.5],
            fusion_hidden_size=16,
            head_in_index=-1,
        )
    ),
    "depth_anything": lambda bb: DepthAnythingForDepthEstimation(
        DepthAnythingConfig(
            backbone_config=bb(reshape_hidden_states=False),
            patch_size=bb().patch_size,
            reassemble_hidden_size=bb().hidden_size,
            neck_hidden_sizes=[8, 16, 32, 32],
            fusion_hidden_size=16,
            head_hidden_size=8,
        )
    ),
    "mask2former": lambda bb: Mask2FormerForUniversalSegmentation(
        Mask2FormerConfig(
            backbone_config=bb(),
            feature_size=32,
            mask_feature_size=32,
            hidden_dim=32,
            encoder_layers=1,
            decoder_layers=2,
            num_queries=5,
            num_labels=3,
            encoder_feedforward_dim=64,
            dim_feedforward=64,
        )
    ),
    "detr": lambda bb: DetrForObjectDetection(
        DetrConfig(
            backbone_config=bb(),
            use_timm_backbone=False,
            use_pretrained_backbone=False,
            d_model=32,
            encoder_layers=1,
            decoder_layers=1,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            num_queries=5,
            num_labels=3,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
        )
    ),
}


def _dense_loss(name: str, model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The task's own loss where transformers computes one, else a plain loss on the main output."""
    if name == "upernet":
        out = model(x, labels=torch.randint(0, 3, (x.shape[0], *x.shape[2:])))
        return out.loss, out.logits
    if name in ("dpt", "depth_anything"):
        out = model(x)
        return out.predicted_depth.mean(), out.predicted_depth
    if name == "mask2former":
        masks = [torch.randint(0, 2, (2, *x.shape[2:])).float() for _ in range(x.shape[0])]
        out = model(x, mask_labels=masks, class_labels=[torch.tensor([0, 2])] * x.shape[0])
        return out.loss, out.masks_queries_logits
    targets = [{"class_labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}] * x.shape[0]
    out = model(x, labels=targets)
    return out.loss, out.logits


# DPT and DepthAnything reassemble token maps (a ViT backbone); the others take any backbone's NCHW maps.
DENSE_CASES = (
    [(name, key) for name in sorted(DENSE) for key in ("dinov2_reg_headless", "dinov3_headless")]
    + [(name, "convnext_dinov3_headless") for name in ("detr", "mask2former", "upernet")]
    + [(name, "resnet_head") for name in ("detr", "upernet")]
)


@pytest.mark.parametrize(("name", "key"), DENSE_CASES)
def test_dense_models_train_save_and_reload_over_a_vitzoo_backbone(converted, tmp_path, name: str, key: str) -> None:
    """``import vitzoo_hf`` is the whole set-up: our config goes in as ``backbone_config`` (register tokens and all);
    the converted weights go into ``model.backbone``; forward, backward, save and reload work."""
    folder = converted[key]
    model = DENSE[name](lambda **overrides: _backbone_config(folder, **overrides))
    backbone_class = vitzoo_hf.FAMILIES[FAMILY[key]].backbone
    (backbone,) = [m for m in model.modules() if isinstance(m, backbone_class)]  # where each model keeps it
    backbone.load_state_dict(backbone_class.from_pretrained(folder, config=backbone.config).state_dict())
    x = torch.randn(2, 3, 32, 32)
    loss, _ = _dense_loss(name, model, x)
    loss.backward()
    grads = [p.grad for p in backbone.parameters() if p.requires_grad]
    assert torch.isfinite(loss)
    if name == "detr" and FAMILY[key] == "resnet":
        # DETR freezes a backbone whose model_type names a ResNet (transformers' own ResNetBackbone alike) and
        # swaps its BatchNorms for frozen ones: nothing of ours is left to train, as with the native port.
        assert grads == [] and not any(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules())
    else:
        assert any(g is not None and g.abs().sum() > 0 for g in grads)
    model.eval().save_pretrained(tmp_path / name)
    reloaded = type(model).from_pretrained(tmp_path / name).eval()
    with torch.no_grad():
        torch.manual_seed(0)
        _, before = _dense_loss(name, model, x)
        torch.manual_seed(0)
        _, after = _dense_loss(name, reloaded, x)
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    saved = json.loads((tmp_path / name / "config.json").read_text())["backbone_config"]
    assert saved["model_type"] == f"vitzoo_{FAMILY[key]}"


DENSE_REMOTE = r"""
import torch
from transformers import AutoConfig, UperNetConfig, UperNetForSemanticSegmentation
from transformers.dynamic_module_utils import get_class_from_dynamic_module

folder = sys.argv[1]
auto_map = AutoConfig.from_pretrained(folder, trust_remote_code=True).auto_map
backbone_class = get_class_from_dynamic_module(auto_map["AutoBackbone"], folder)
backbone_class.register_auto_classes()  # the one call
backbone_config = backbone_class.config_class.from_pretrained(folder, out_indices=[1, 2, 3, 4])
config = UperNetConfig(backbone_config=backbone_config, hidden_size=16, num_labels=3)
model = UperNetForSemanticSegmentation(config).eval()
print(tuple(model(torch.randn(1, 3, 32, 32)).logits.shape))
"""


def test_dense_route_for_remote_code_users_is_one_call(converted, tmp_path: Path) -> None:
    result = run_clean(DENSE_REMOTE, str(converted["dinov3_headless"]), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip().splitlines()[-1] == "(1, 3, 32, 32)"


def test_token_maps_lead_with_the_class_token_only(converted) -> None:
    folder = converted["dinov2_reg_headless"]
    config = _backbone_config(folder, reshape_hidden_states=False, apply_layernorm=False)
    backbone = vitzoo_hf.VitzooViTBackbone.from_pretrained(folder, config=config).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        states = backbone.vit(x, output_hidden_states=True).hidden_states
        maps = backbone(x).feature_maps
    prefix = backbone.config.num_prefix_tokens
    assert prefix == 5
    expected = torch.cat([states[1][:, :1], states[1][:, prefix:]], dim=1)
    torch.testing.assert_close(maps[0], expected, rtol=0, atol=0)
    headless_cls = AutoConfig.from_pretrained(folder, class_token=False, global_pool="avg", reshape_hidden_states=False)
    with pytest.raises(ValueError, match=r"has no class token\. Use reshape_hidden_states=True"):
        vitzoo_hf.VitzooViTBackbone(headless_cls)
