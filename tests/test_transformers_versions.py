"""A folder's code files under every supported transformers release give the current release's numbers.

The same child script runs a folder in this repo's environment (the current release) and in side environments
holding the oldest release of each supported line (4.57.x, 5.0.x); every output must agree within 1e-5: base
model, classifier, hidden states, attentions, another input size, backbone maps, both attention backends, the
image processor (with and without torchvision) and the classification pipeline. ``VITZOO_TRANSFORMERS_MATRIX``
(comma-separated versions, e.g. every 5.x minor) widens the run beyond CI's two.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from conversion.families import conversions
from conversion.verify import clean_env
from tests.helpers import hooks_of, save_tiny_folder
from tests.transformers_envs import CI_VERSIONS, ROOT, transformers_python

VERSIONS = tuple(os.environ.get("VITZOO_TRANSFORMERS_MATRIX", ",".join(CI_VERSIONS)).split(","))
# What ``AutoBackbone.from_pretrained(local_folder, trust_remote_code=True)`` does per release line (docs/USAGE.md
# states it from here); the documented route (the folder's backbone class) works in all of them.
AUTO_BACKBONE_LOCAL = {
    "4.57": "works",
    "5.0": "works",
    "5.23": "HFValidationError",
    "5.24": "HFValidationError",
    "5.25": "HFValidationError",
}
# Every registered family's showcase variants (a new family is covered by declaring them beside its hooks).
VARIANTS = {f"{hooks.name}-{variant}": variant for hooks in conversions() for variant in hooks.showcase_variants}

CHILD = r"""
import json, sys
block_torchvision = sys.argv[3] == "1"
for hidden in ("vitzoo_hf", "timm", "conversion", "tests") + (("torchvision",) if block_torchvision else ()):
    sys.modules[hidden] = None
import torch, transformers
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification, pipeline
from transformers.dynamic_module_utils import get_class_from_dynamic_module

folder, io_dir = sys.argv[1], sys.argv[2]
x = load_file(f"{io_dir}/inputs.safetensors")["pixel_values"]
out, info = {}, {"version": transformers.__version__}
auto_map = AutoConfig.from_pretrained(folder, trust_remote_code=True).auto_map
attention = sys.argv[4] == "1"  # the family declares whether its models attend (its conversion hooks)
with torch.no_grad():
    for attn in ("eager", "sdpa") if attention else ("none",):
        choice = {"attn_implementation": attn} if attention else {}
        model = AutoModel.from_pretrained(folder, trust_remote_code=True, **choice).eval()
        base = model(x, output_hidden_states=True)
        out[f"{attn}.last_hidden_state"], out[f"{attn}.pooler_output"] = base.last_hidden_state, base.pooler_output
        out[f"{attn}.hidden_state_1"] = base.hidden_states[1]
        big = torch.nn.functional.pad(x, (0, 16, 0, 8))
        out[f"{attn}.interpolated"] = model(big, interpolate_pos_encoding=True).last_hidden_state
        classifier = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True, **choice).eval()
        out[f"{attn}.logits"] = classifier(x).logits
    if attention:
        out["attentions"] = model(x, output_attentions=True).attentions[-1]
    backbone_class = get_class_from_dynamic_module(auto_map["AutoBackbone"], folder)
    backbone = backbone_class.from_pretrained(folder, out_indices=[1, 2]).eval()
    out["map_0"], out["map_1"] = backbone(x).feature_maps
    # config.freeze_backbone holds however the classifier is made: from the folder, and with a new head
    for key, extra in (("trainable", {}), ("trainable_new_head", {"num_labels": 3, "ignore_mismatched_sizes": True})):
        frozen = AutoModelForImageClassification.from_pretrained(
            folder, trust_remote_code=True, freeze_backbone=True, **extra
        )
        info[key] = sorted(name for name, p in frozen.named_parameters() if p.requires_grad)
try:  # the direct route the docs say is broken in some releases
    from transformers import AutoBackbone
    AutoBackbone.from_pretrained(folder, trust_remote_code=True)
    info["auto_backbone_local"] = "works"
except Exception as error:
    info["auto_backbone_local"] = type(error).__name__
processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
image = Image.open(f"{io_dir}/image.png")
out["processed"] = processor(image, return_tensors="pt")["pixel_values"]
classify = pipeline("image-classification", model=folder, trust_remote_code=True)
info["pipeline"] = [(row["label"], round(row["score"], 5)) for row in classify(image, top_k=3)]
save_file({k: v.contiguous() for k, v in out.items()}, f"{io_dir}/outputs.safetensors")
print(json.dumps(info))
"""


@pytest.fixture(scope="module", params=sorted(VARIANTS), ids=str)
def folder(request, tmp_path_factory) -> Path:
    """A saved tiny classifier folder of each family and its inputs (a batch and an image of odd size)."""
    path = tmp_path_factory.mktemp("folder") / VARIANTS[request.param]
    save_tiny_folder(VARIANTS[request.param], path)
    torch.manual_seed(0)
    save_file({"pixel_values": torch.randn(2, 3, 32, 32)}, path.parent / "inputs.safetensors")
    pixels = (np.random.default_rng(0).random((45, 61, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(path.parent / "image.png")
    return path


def run_child(python: Path | str, folder: Path, block_torchvision: bool = False) -> tuple[dict, dict]:
    """Outputs of the folder under ``python``'s transformers, and what the child reports."""
    io_dir = folder.parent
    hooks = hooks_of(folder.name)  # the folder is named after its variant
    attention = hooks.attends(hooks.family.config.from_pretrained(folder))
    args = [str(python), "-c", CHILD, str(folder), str(io_dir), "1" if block_torchvision else "0", str(int(attention))]
    result = subprocess.run(args, cwd=io_dir, env=clean_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return load_file(io_dir / "outputs.safetensors"), json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def current(folder) -> tuple[dict, dict]:
    return run_child(sys.executable, folder)


@pytest.mark.parametrize("version", VERSIONS)
def test_folder_runs_identically_under_each_supported_release(folder, current, version: str) -> None:
    expected, expected_info = current
    outputs, info = run_child(transformers_python(version), folder, block_torchvision=version == VERSIONS[0])
    assert info["version"] == version
    assert set(outputs) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(outputs[key], value, atol=1e-5, rtol=1e-5, msg=f"{key} under {version}")
    assert info["pipeline"] == expected_info["pipeline"]
    assert info["trainable"] == info["trainable_new_head"] == expected_info["trainable"]
    assert info["auto_backbone_local"] == AUTO_BACKBONE_LOCAL[version.rsplit(".", 1)[0]], info["auto_backbone_local"]


def test_freeze_backbone_leaves_only_the_head_trainable(current) -> None:
    """``from_pretrained(folder, freeze_backbone=True)``: transformers 5 re-creates the loaded parameters after
    ``__init__``, which once undid the freezing silently (every parameter stayed trainable)."""
    _, info = current
    assert info["trainable"] and all(name.startswith("head") for name in info["trainable"]), info["trainable"]
    assert info["trainable_new_head"] == info["trainable"]
    assert info["auto_backbone_local"] == AUTO_BACKBONE_LOCAL[info["version"].rsplit(".", 1)[0]]


def test_current_release_with_and_without_torchvision(folder, current) -> None:
    outputs, _ = run_child(sys.executable, folder, block_torchvision=True)
    torch.testing.assert_close(outputs["processed"], current[0]["processed"], atol=0, rtol=0)


OLD = r"""
import sys
for hidden in ("vitzoo_hf", "timm", "conversion", "tests"):
    sys.modules[hidden] = None
import transformers
transformers.__version__ = "4.46.3"  # what an older install reports; the check reads nothing else
from transformers import AutoConfig
try:
    AutoConfig.from_pretrained(sys.argv[1], trust_remote_code=True)
except ImportError as error:
    print(error)
"""


def test_older_release_is_stopped_at_once_naming_both_versions(folder) -> None:
    result = subprocess.run(
        [sys.executable, "-c", OLD, str(folder)], cwd=folder.parent, env=clean_env(), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    message = result.stdout.strip().splitlines()[-1]
    assert "needs transformers >= 4.57" in message and "this environment has transformers 4.46.3" in message


IN_LIBRARY = r"""
import sys, json
sys.path.insert(0, sys.argv[1])  # the repository, not installed in this environment
import torch, transformers, vitzoo_hf
from transformers import AutoModel, AutoModelForImageClassification
config = vitzoo_hf.VitzooEvaConfig(
    image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
    rope_type="dinov3", num_register_tokens=2, num_labels=3,
)
torch.manual_seed(0)
model = vitzoo_hf.VitzooEvaForImageClassification(config).eval()
folder = "saved"  # in the test's temporary working directory
model.save_pretrained(folder)
reloaded = AutoModelForImageClassification.from_pretrained(folder).eval()
x = torch.randn(1, 3, 32, 32)
with torch.no_grad():
    same = torch.equal(model(x).logits, reloaded(x).logits)
print(json.dumps({"version": transformers.__version__, "same": same}))
"""


@pytest.mark.parametrize("version", VERSIONS)
def test_package_itself_works_under_each_supported_release(version: str, tmp_path: Path) -> None:
    """``import vitzoo_hf`` (registration, building, save and reload through the Auto classes)."""
    python = transformers_python(version)
    result = subprocess.run(
        [str(python), "-c", IN_LIBRARY, str(ROOT)], cwd=tmp_path, env=clean_env(), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"version": version, "same": True}


def test_auto_map_modules_import_every_sibling_they_need_directly(folder) -> None:
    """Some releases copy only the files that the auto_map module imports itself; a folder carries only what its
    family imports (the vit family has no RoPE file)."""
    import ast

    def siblings(path: Path) -> set[str]:
        tree = ast.parse(path.read_text())
        return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1}

    config = json.loads((folder / "config.json").read_text())
    roots = {ref.split(".")[0] for ref in config["auto_map"].values()}
    for root in roots:
        closure, todo = set(), [root]
        while todo:
            for name in siblings(folder / f"{todo.pop()}.py") - closure:
                closure.add(name)
                todo.append(name)
        assert siblings(folder / f"{root}.py") == closure, root
    shipped = {p.stem for p in folder.glob("*.py")}
    needed = set().union(*(siblings(folder / f"{r}.py") for r in roots)) | roots | {"image_processing_vitzoo"}
    assert shipped == needed
    assert ("token_rope" in shipped) == (config["model_type"] == "vitzoo_eva")
