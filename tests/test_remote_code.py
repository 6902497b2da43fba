"""A saved folder loads as Hub remote code in a fresh process with only torch + transformers (contract 4)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import vitzoo_hf
from conversion.families import conversions
from conversion.remote_code import import_problems, sibling_closure
from conversion.verify import clean_env
from tests.helpers import code_files, save_tiny_folder
from vitzoo_hf import VitzooImageProcessor

CHILD = r"""
import sys
for hidden in ("vitzoo_hf", "timm", "conversion", "tests"):
    sys.modules[hidden] = None
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, AutoBackbone
from transformers.dynamic_module_utils import get_class_from_dynamic_module

folder, io_dir = sys.argv[1], sys.argv[2]
x = load_file(f"{io_dir}/inputs.safetensors")["pixel_values"]
out = {}
with torch.no_grad():
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    base = model(x, output_hidden_states=True)
    out["last_hidden_state"], out["pooler_output"] = base.last_hidden_state, base.pooler_output
    out["hidden_state_1"] = base.hidden_states[1]
    out["interpolated"] = model(torch.nn.functional.pad(x, (0, 8, 0, 8)), interpolate_pos_encoding=True).pooler_output
    classifier = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
    out["logits"] = classifier(x).logits
    # The documented backbone route (AutoBackbone.from_pretrained(local_path) is broken in transformers 5.1-5.23).
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    backbone_class = get_class_from_dynamic_module(config.auto_map["AutoBackbone"], folder)
    backbone = backbone_class.from_pretrained(folder, out_features=["stage1", "stage2"]).eval()
    out["map_0"], out["map_1"] = backbone(x).feature_maps
out["modules"] = torch.tensor([name.startswith(("vitzoo_hf", "timm")) for name in sys.modules if sys.modules[name]])
save_file({k: v.contiguous() for k, v in out.items()}, f"{io_dir}/outputs.safetensors")
print(type(model).__module__)
"""


SHOWCASE = [(hooks.name, variant) for hooks in conversions() for variant in hooks.showcase_variants]


@pytest.fixture(scope="module", params=SHOWCASE, ids=str)
def saved(request, tmp_path_factory) -> tuple[Path, torch.nn.Module, torch.nn.Module, str]:
    family, variant = request.param
    folder = tmp_path_factory.mktemp("saved") / f"tiny-{variant}"
    model, timm_model = save_tiny_folder(variant, folder)
    return folder, model, timm_model, family


def test_folder_holds_code_and_all_auto_map_entries(saved) -> None:
    folder, _, _, name = saved
    family = vitzoo_hf.FAMILIES[name]
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == f"vitzoo_{name}"
    assert config["architectures"] == [family.classifier.__name__]
    assert config["auto_map"] == {
        "AutoConfig": f"configuration_{name}.{family.config.__name__}",
        "AutoModel": f"modeling_{name}.{family.model.__name__}",
        "AutoModelForImageClassification": f"modeling_{name}.{family.classifier.__name__}",
        "AutoBackbone": f"modeling_{name}.{family.backbone.__name__}",
    }
    # What transformers copied on save is what the converter copies (our closure), and nothing of another family
    # or group: each folder carries only the files its family imports.
    files = sorted(p.name for p in folder.glob("*.py"))
    assert files == code_files(family)
    others = {f"modeling_{n}.py" for n in vitzoo_hf.FAMILIES if n != name}
    assert not others & set(files)
    assert len({f.split("_")[0] for f in files if f.startswith(("token_", "stage_"))}) == 1
    for file in files:  # every sibling import resolves inside the folder, and only allowed modules are imported
        assert import_problems(folder / file) == []
    assert set(load_file(folder / "model.safetensors")) == set(saved[1].state_dict())


def test_fresh_process_without_package_matches_in_process(saved, tmp_path: Path) -> None:
    folder, model, timm_model, _ = saved
    x = torch.randn(2, 3, 32, 32)
    save_file({"pixel_values": x}, tmp_path / "inputs.safetensors")
    args = [sys.executable, "-c", CHILD, str(folder), str(tmp_path)]
    result = subprocess.run(args, cwd=tmp_path, env=clean_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().startswith("transformers_modules."), result.stdout
    out = load_file(tmp_path / "outputs.safetensors")
    assert not out["modules"].any(), "vitzoo_hf or timm was imported in the remote-code process"
    with torch.no_grad():
        base = model.base_model(x, output_hidden_states=True)
        padded = torch.nn.functional.pad(x, (0, 8, 0, 8))
        backbone_class = type(model).__name__.replace("ForImageClassification", "Backbone")
        backbone = getattr(vitzoo_hf, backbone_class).from_pretrained(folder, out_features=["stage1", "stage2"])
        maps = backbone.eval()(x).feature_maps
        expected = {
            "last_hidden_state": base.last_hidden_state,
            "pooler_output": base.pooler_output,
            "hidden_state_1": base.hidden_states[1],
            "interpolated": model.base_model(padded, interpolate_pos_encoding=True).pooler_output,
            "logits": model(x).logits,
            "map_0": maps[0],
            "map_1": maps[1],
        }
        timm_pooled = timm_model.forward_head(timm_model.forward_features(padded), pre_logits=True)
        torch.testing.assert_close(out["interpolated"], timm_pooled, atol=1e-5, rtol=1e-5)
    for key, value in expected.items():
        torch.testing.assert_close(out[key], value, atol=1e-5, rtol=1e-5, msg=f"{key} differs")


def test_pipeline_image_classification_returns_named_labels(saved) -> None:
    from transformers import pipeline

    folder, model, _, _ = saved
    classify = pipeline("image-classification", model=str(folder), trust_remote_code=True)
    image = Image.fromarray((torch.rand(40, 48, 3) * 255).to(torch.uint8).numpy())
    rows = classify(image, top_k=3)
    assert len(rows) == 3 and all(row["label"].startswith("class_") for row in rows)
    processor = VitzooImageProcessor.from_pretrained(folder)
    with torch.no_grad():
        probs = model(processor(image, return_tensors="pt").pixel_values).logits.softmax(-1)[0]
    top = probs.topk(3)
    assert [row["label"] for row in rows] == [f"class_{i}" for i in top.indices.tolist()]
    assert [row["score"] for row in rows] == pytest.approx(top.values.tolist(), abs=1e-5)


def test_import_rules_catch_what_breaks_on_the_hub(tmp_path: Path) -> None:
    (tmp_path / "sibling.py").write_text("X = 1\n")
    bad = tmp_path / "modeling_bad.py"
    bad.write_text(
        "import requests\nimport numpy\nfrom timm.layers import Mlp\nfrom ..pkg import y\nfrom . import sibling\n"
        "from .missing import Z\nfrom .sibling import X\ntry:\n    import scipy\nexcept ImportError:\n    pass\n"
    )
    problems = import_problems(bad)
    assert len(problems) == 5, problems
    for fragment in ("requests", "timm.layers", ":4 relative", ":5 relative", "missing sibling missing.py"):
        assert any(fragment in problem for problem in problems), (fragment, problems)


@pytest.mark.parametrize("name", sorted(vitzoo_hf.FAMILIES))
def test_every_registered_family_follows_the_remote_code_rules(name: str) -> None:
    """Walks the registry: each family's code files (the sibling closure of its modules) pass the import rules,
    its modeling and configuration files import every sibling they reach directly, token and stage files never
    mix, and the auto_map its config writes names its registered classes."""
    family = vitzoo_hf.FAMILIES[name]
    modeling = Path(sys.modules[family.model.__module__].__file__)
    configuration = Path(sys.modules[family.config.__module__].__file__)
    files = sibling_closure([modeling, configuration])
    assert [problem for path in files for problem in import_problems(path)] == []
    for root in (modeling, configuration):  # the files auto_map names
        tree = ast.parse(root.read_text())
        direct = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 1}
        assert direct == {path.stem for path in sibling_closure([root])} - {root.stem}, root.name
    assert len({path.name.split("_")[0] for path in files if path.name.startswith(("token_", "stage_"))}) == 1
    classes = {"AutoConfig": family.config, **{auto.__name__: cls for auto, cls in family.auto_classes.items()}}
    for auto_name, reference in family.config.auto_map_entries().items():
        module, class_name = reference.split(".")
        assert (module, class_name) == (classes[auto_name].__module__.split(".")[-1], classes[auto_name].__name__)


def test_from_pretrained_builds_on_meta_and_matches_timm(saved, monkeypatch) -> None:
    """No second copy of the weights (built on the meta device, filled from the file), and the loaded model
    still equals timm: nothing derived (RoPE tables) is left stale by meta-device construction."""
    folder, model, timm_model, _ = saved
    base_class = type(model.base_model)
    devices = []
    original = base_class.__init__

    def spy(self, config) -> None:
        original(self, config)
        devices.append(next(self.parameters()).device.type)

    monkeypatch.setattr(base_class, "__init__", spy)
    loaded = type(model).from_pretrained(folder).eval()
    assert devices == ["meta"]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, timm_model(x), atol=1e-5, rtol=1e-5)
        features = loaded.base_model(x).last_hidden_state
        torch.testing.assert_close(features, timm_model.forward_features(x), atol=1e-5, rtol=1e-5)


def test_every_code_file_is_recorded_in_the_release_allow_list() -> None:
    """The publisher runs without --trust-code only files byte-identical to a release's: a changed code file must be
    recorded (``python -m conversion.code_hashes --update``), or folders converted with it could not be published."""
    from conversion.code_hashes import unrecorded

    assert unrecorded() == [], "run: python -m conversion.code_hashes --update"
