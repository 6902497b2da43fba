"""conversion.to_timm: a converted folder, or one fine-tuned from it (new head size, new labels), back to timm's
own format; timm loads it (``pretrained_cfg_overlay=dict(file=...)``, ``local-dir:``, ``hf-hub:`` against the Hub
stand-in) with the same outputs bit for bit; timm -> ours -> timm is the identity on every family's tiny variants;
what timm cannot express is refused by name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file
from timm.models import save_for_hf
from transformers import AutoModelForImageClassification

from conversion.convert_timm import ConversionError, timm_model_args
from conversion.to_timm import to_timm
from conversion.verify import clean_env
from tests import hub_server
from tests.helpers import convert_perturbed, hooks_of, make_timm, variants, vitzoo_from_timm

ROOT = Path(__file__).resolve().parents[1]


def labels_of(num_classes: int) -> list[str]:
    return [f"class_{i}" for i in range(num_classes)]


def our_folder(variant: str, folder: Path) -> tuple[torch.nn.Module, Path]:
    """A tiny variant as the converter leaves it: our model of its weights, with the timm name and arguments."""
    hooks = hooks_of(variant)
    name, _ = hooks.variants[variant]
    reference = make_timm(variant)
    with_head = bool(reference.num_classes)
    extra = {"id2label": dict(enumerate(labels_of(reference.num_classes)))} if with_head else {}
    ours = vitzoo_from_timm(reference, "classifier" if with_head else "model", **extra)
    ours.config.architectures = [type(ours).__name__]
    ours.config.timm_model_name, ours.config.timm_pretrained_tag = name, None
    ours.config.timm_model_args, ours.config.timm_unrecorded_args = timm_model_args(reference, {}, {})
    ours.save_pretrained(folder)
    return reference, folder


@pytest.mark.parametrize("variant", sorted(variants()))
def test_timm_to_ours_to_timm_is_the_identity(tmp_path: Path, variant: str) -> None:
    """The export holds timm's own state dict, tensor for tensor, and timm's own save_for_hf config of the
    original; a variant timm cannot rebuild from its arguments (a pruned copy made in the test) is refused."""
    hooks = hooks_of(variant)
    name, overrides = hooks.variants[variant]
    reference, folder = our_folder(variant, tmp_path / "ours")

    def build(entrypoint: str, pretrained: bool = False, **kwargs) -> torch.nn.Module:
        return hooks.build_tiny(entrypoint, **kwargs)  # the tiny builder the variant came from (narrowed widths)

    if json.loads((folder / "config.json").read_text())["timm_unrecorded_args"]:
        # built with layer classes (as their real entrypoints are inside): timm's format has no place for them
        with pytest.raises(ConversionError, match="built with constructor arguments JSON cannot hold"):
            to_timm(folder, tmp_path / "timm", build=build)
        assert not (tmp_path / "timm").exists()
        return
    shapes = {k: v.shape for k, v in hooks.build_tiny(name, **overrides).state_dict().items()}
    if shapes != {k: v.shape for k, v in reference.state_dict().items()}:  # made from a built model (pruned, cut)
        with pytest.raises(ConversionError, match="timm cannot express this model"):
            to_timm(folder, tmp_path / "timm", build=build)
        assert not (tmp_path / "timm").exists()
        return
    out = to_timm(folder, tmp_path / "timm", build=build)
    exported, original = load_file(out / "model.safetensors"), reference.state_dict()
    assert exported.keys() == original.keys()
    assert all(torch.equal(exported[k], original[k]) for k in original), variant
    labels = labels_of(reference.num_classes)
    save_for_hf(reference, tmp_path / "original", model_config={"label_names": labels} if labels else {})
    original_config = json.loads((tmp_path / "original" / "config.json").read_text())
    assert json.loads((out / "config.json").read_text()) == original_config


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    """A real converter output (test_efficientnet's pretrained tag, perturbed weights)."""
    return convert_perturbed("test_efficientnet.r160_in1k", tmp_path_factory.mktemp("converted"))


def fine_tuned(converted: Path, folder: Path) -> torch.nn.Module:
    """What Trainer leaves after fine-tuning to 5 new classes: the folder reloaded with a new head, saved."""
    torch.manual_seed(0)
    names = ["ant", "bee", "cow", "doe", "elk"]
    model = AutoModelForImageClassification.from_pretrained(
        converted, trust_remote_code=True, num_labels=5, id2label=dict(enumerate(names)), ignore_mismatched_sizes=True
    )
    model.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_bytes((converted / "preprocessor_config.json").read_bytes())
    return model.eval()


def test_a_trainer_fine_tune_goes_back_to_timm_with_its_head_and_labels(converted: Path, tmp_path: Path) -> None:
    model = fine_tuned(converted, tmp_path / "ft")
    done = subprocess.run(
        [sys.executable, "-m", "conversion.to_timm", str(tmp_path / "ft"), "--output-dir", str(tmp_path / "timm")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    config = json.loads((tmp_path / "timm" / "config.json").read_text())
    assert config["architecture"] == "test_efficientnet" and config["num_classes"] == 5
    assert config["label_names"] == ["ant", "bee", "cow", "doe", "elk"]
    processor = json.loads((converted / "preprocessor_config.json").read_text())
    assert config["pretrained_cfg"]["mean"] == processor["image_mean"]
    assert config["pretrained_cfg"]["crop_pct"] == processor["crop_pct"]
    file = tmp_path / "timm" / "model.safetensors"
    # timm keeps a pretrained head only where the overlay's class count is the model's (else it re-initialises it)
    overlay = dict(file=str(file), num_classes=5)
    loaded = timm.create_model("test_efficientnet", pretrained=True, num_classes=5, pretrained_cfg_overlay=overlay)
    loaded.eval()
    x = torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x).logits)
    # timm's hf-hub: path, against the stand-in holding the export as pushed
    server, state = hub_server.start("hf_token")
    repo = state.repos.setdefault("me/ft-timm", hub_server.Repo())
    repo.commit("main", {p.name: p.read_bytes() for p in (tmp_path / "timm").iterdir()}, "Add model")
    env = hub_server.client_env(server, tmp_path / "hf_home", clean_env())
    script = (
        "import sys, timm, torch; from safetensors.torch import save_file\n"
        "m = timm.create_model('hf-hub:me/ft-timm', pretrained=True).eval()\n"
        "x = torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(1))\n"
        "with torch.no_grad(): save_file({'logits': m(x)}, sys.argv[1])\n"
    )
    try:
        hub = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / "hub.safetensors")], env=env, capture_output=True, text=True
        )
    finally:
        server.shutdown()
    assert hub.returncode == 0, hub.stderr
    with torch.no_grad():
        assert torch.equal(load_file(tmp_path / "hub.safetensors")["logits"], model(x).logits)


def edit_config(folder: Path, **fields) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(fields)
    (folder / "config.json").write_text(json.dumps(config))


def test_what_timm_cannot_express_is_refused_by_name(converted: Path, tmp_path: Path) -> None:
    mlp = tmp_path / "mlp"
    torch.manual_seed(0)
    AutoModelForImageClassification.from_pretrained(
        converted, trust_remote_code=True, head_type="mlp", head_hidden_sizes=[8], ignore_mismatched_sizes=True
    ).save_pretrained(mlp)
    with pytest.raises(
        ConversionError, match=r"has a head_type='mlp' classifier; timm's test_efficientnet has a linear"
    ):
        to_timm(mlp, tmp_path / "out")
    extra = tmp_path / "extra"
    fine_tuned(converted, extra)
    state = load_file(extra / "model.safetensors")
    save_file({**state, "adapter.weight": torch.zeros(2)}, extra / "model.safetensors")
    with pytest.raises(ConversionError, match=r"holds 1 tensor\(s\) timm's test_efficientnet has no place for"):
        to_timm(extra, tmp_path / "out")
    foreign = tmp_path / "foreign"
    fine_tuned(converted, foreign)
    edit_config(foreign, timm_model_name=None)
    with pytest.raises(ConversionError, match="records no timm_model_name: the folder was not converted from timm"):
        to_timm(foreign, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["extra", "foreign", "mlp"]


def test_a_sharded_folder_goes_back_as_one_and_a_truncated_one_is_refused(converted: Path, tmp_path: Path) -> None:
    """save_pretrained's sharded layout (an index and its shards) reads as the single file does; a cut shard is
    named, and nothing is written."""
    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    fine_tuned(converted, whole)
    model = fine_tuned(converted, sharded)
    model.save_pretrained(sharded, max_shard_size="20KB")
    (sharded / "model.safetensors").unlink()
    shards = sorted(sharded.glob("model-*.safetensors"))
    assert len(shards) > 1 and (sharded / "model.safetensors.index.json").is_file()
    one, many = to_timm(whole, tmp_path / "timm-whole"), to_timm(sharded, tmp_path / "timm-sharded")
    assert (one / "model.safetensors").read_bytes() == (many / "model.safetensors").read_bytes()
    shards[-1].write_bytes(shards[-1].read_bytes()[:-64])
    with pytest.raises(
        (ConversionError, ValueError), match=rf"{shards[-1].name}.*truncated|truncated.*{shards[-1].name}"
    ):
        to_timm(sharded, tmp_path / "out")
    assert not (tmp_path / "out").exists()
