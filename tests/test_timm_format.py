"""timm's own Hub format as conversion input: folders written by timm's ``save_for_hf`` (a user's fine-tune, with
its labels, preprocessing and constructor arguments), the same as ``--checkpoint DIR``, and Hub repo ids
(``timm/arch.tag``, ``hf-hub:``/``hf_hub:`` prefixed, ``@revision`` / ``--revision``) served by the Hub stand-in,
then from the cache offline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from timm.models import save_for_hf
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModelForImageClassification

from conversion.convert_timm import ConversionError, convert
from conversion.verify import clean_env
from tests import hub_server
from tests.helpers import perturb

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_stand_in_token"
LABELS = ["cat", "dog", "eel"]


def fine_tune(name: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    """A user's timm fine-tune: a new 3-class head (and whatever constructor arguments), perturbed weights."""
    return perturb(timm.create_model(name, num_classes=3, **kwargs), seed).eval()


def save_timm_folder(model: torch.nn.Module, folder: Path) -> Path:
    """What the user has: timm 1.0.31's own save_for_hf output, with labels and their own preprocessing."""
    save_for_hf(
        model,
        folder,
        model_config={"label_names": LABELS},
        safe_serialization=True,
        data_config={"mean": (0.5, 0.4, 0.3), "std": (0.2, 0.25, 0.3), "crop_pct": 0.8},
    )
    return folder


def flop_counted_macs(model: torch.nn.Module, size: int) -> float:
    """Multiply-adds of a real forward of the model (not the meta build the card's figure comes from)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.eval()(torch.randn(1, 3, size, size))
    return counter.get_total_flops() / 2


def assert_reloads_as(folder: Path, model: torch.nn.Module, size: int) -> None:
    """The converted folder, loaded as users load it, gives the fine-tune's logits bit for bit."""
    ours = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(ours(x).logits, model(x))
    assert ours.config.id2label == dict(enumerate(LABELS))


@pytest.mark.parametrize(
    ("name", "kwargs", "size"),
    [("test_vit.r160_in1k", {"img_size": 96}, 96), ("test_efficientnet.r160_in1k", {}, 160)],
)
def test_a_save_for_hf_folder_converts_without_naming_anything(tmp_path: Path, name: str, kwargs, size) -> None:
    """The folder alone: architecture and constructor arguments (a ViT fine-tuned at 96 px), class names,
    preprocessing (mean, std, crop) and license come from its config.json; the record says where from."""
    model = fine_tune(name, **kwargs)
    folder = save_timm_folder(model, tmp_path / "my-finetune")
    paper = {"paper_ids": "arXiv:2010.11929, arXiv:2106.10270", "origin_url": "https://github.com/google-research"}
    rewrite_config(folder, lambda config: config["pretrained_cfg"].update(paper))
    result = convert(str(folder), tmp_path / "out")
    out = result.output_dir
    config = json.loads((out / "config.json").read_text())
    assert config["timm_model_name"] == name.split(".")[0] and config["timm_pretrained_tag"] == "r160_in1k"
    assert config["image_size"] in (size, [size, size])
    processor = json.loads((out / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == [0.5, 0.4, 0.3] and processor["image_std"] == [0.2, 0.25, 0.3]
    assert processor["crop_pct"] == 0.8 and processor["size"] == {"shortest_edge": size}
    record = json.loads((out / "vitzoo_parity.json").read_text())
    assert record["timm_format"] == {"timm_folder": True} and record["checkpoint"]["name"] == "model.safetensors"
    assert str(tmp_path) not in (out / "vitzoo_parity.json").read_text() + (out / "README.md").read_text()
    card = (out / "README.md").read_text()
    assert "license: apache-2.0" in card
    # tags say what the repo is; "timm" would put it in timm's discovery, which cannot load it
    architecture, family = name.split(".")[0], "vit" if "vit" in name else "efficientnet"
    assert f"tags:\n- vitzoo_hf\n- custom_code\n- vision\n- {family}\n- {architecture}\n" in card
    assert "- arxiv:2010.11929\n- arxiv:2106.10270\n" in card and "\n- timm\n" not in card
    assert "https://arxiv.org/abs/2010.11929, https://arxiv.org/abs/2106.10270" in card
    assert "- **Original:** https://github.com/google-research" in card and "- **Parameters:** " in card
    # timm's save_for_hf keeps the tag's hf_hub_id: the folder is a fine-tune of that repo; the tag names its data
    assert "base_model: timm/" + name in card and "base_model_relation: finetune" in card
    assert "datasets:\n- imagenet-1k\n" in card
    macs = flop_counted_macs(model, size)
    assert f"- **GMACs:** {macs / 1e9:.2f}, **activations:** " in card
    assert_reloads_as(out, model, size)


def test_a_folder_as_checkpoint_must_hold_the_named_architecture(tmp_path: Path) -> None:
    model = fine_tune("test_vit.r160_in1k")
    folder = save_timm_folder(model, tmp_path / "ft")
    out = convert("test_vit", tmp_path / "out", checkpoint=folder).output_dir
    assert json.loads((out / "config.json").read_text())["id2label"] == {str(i): n for i, n in enumerate(LABELS)}
    with pytest.raises(ConversionError, match=r"holds a timm 'test_vit' \(its config.json's architecture\), not "):
        convert("test_resnet", tmp_path / "other", checkpoint=folder)
    with pytest.raises(ConversionError, match="is a timm-format folder with its own weights; drop --checkpoint"):
        convert(str(folder), tmp_path / "other", checkpoint=folder)
    with pytest.raises(ConversionError, match="--revision applies to Hub repos"):
        convert("test_vit", tmp_path / "other", checkpoint=folder, revision="main")
    assert not (tmp_path / "other").exists()


def broken(tmp_path: Path, change) -> Path:
    folder = save_timm_folder(fine_tune("test_vit.r160_in1k"), tmp_path / "ft")
    change(folder)
    return folder


def rewrite_config(folder: Path, edit) -> None:
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: (f / "config.json").unlink(), "has no config.json: not a timm-format folder"),
        (lambda f: (f / "model.safetensors").unlink(), "has no model.safetensors or pytorch_model.bin"),
        (lambda f: (f / "config.json").write_text('{"model_type": "vit"}'), "it is a transformers config"),
        (lambda f: (f / "config.json").write_text("{nope"), "config.json is not valid JSON"),
        (lambda f: rewrite_config(f, lambda c: c.update(label_names=["a", "b"])), "holds 2 label_names but its head"),
        (lambda f: rewrite_config(f, lambda c: c.update(label_names=["a", "a", "b"])), r"repeats the label 'a'"),
        (lambda f: rewrite_config(f, lambda c: c.update(architecture="resnet_nope")), "Unknown timm model"),
    ],
)
def test_a_broken_timm_folder_is_refused_by_name(tmp_path: Path, change, message: str) -> None:
    folder = broken(tmp_path, change)
    with pytest.raises(ConversionError, match=message):
        convert(str(folder), tmp_path / "out")
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == ["ft"]


def test_a_hub_id_that_is_not_one_is_refused() -> None:
    with pytest.raises(ConversionError, match="is not a Hub repo id: expected owner/name"):
        convert("hf-hub:not a repo", Path("unused"))


def publish(state: hub_server.HubState, repo_id: str, folder: Path, ref: str = "main") -> str:
    """The stand-in holding ``folder`` as a commit of ``repo_id`` (what timm's push_to_hf_hub uploads)."""
    repo = state.repos.setdefault(repo_id, hub_server.Repo())
    return repo.commit(ref, {p.name: p.read_bytes() for p in folder.iterdir()}, "Add model")


def run_convert(env: dict, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "conversion.convert_timm", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)


def test_hub_ids_convert_through_huggingface_hub_at_a_revision_and_offline_from_the_cache(tmp_path: Path) -> None:
    first, second = fine_tune("test_vit.r160_in1k", seed=1), fine_tune("test_vit.r160_in1k", seed=2)
    server, state = hub_server.start(TOKEN)
    env = hub_server.client_env(server, tmp_path / "hf_home", clean_env(), PYTHONPATH=str(ROOT))
    try:
        main = publish(state, "timm/test_vit.r160_in1k", save_timm_folder(first, tmp_path / "v1"))
        v2 = publish(state, "timm/test_vit.r160_in1k", save_timm_folder(second, tmp_path / "v2"), ref="v2")
        done = run_convert(env, "hf-hub:timm/test_vit.r160_in1k", "--output-dir", str(tmp_path / "main"))
        assert done.returncode == 0, done.stderr
        pinned = run_convert(env, "timm/test_vit.r160_in1k", "--revision", "v2", "--output-dir", str(tmp_path / "v2o"))
        assert pinned.returncode == 0, pinned.stderr
        clash = run_convert(env, "hf_hub:timm/test_vit.r160_in1k@v2", "--revision", "main", "--output-dir", "x")
        assert clash.returncode == 1 and "pins revision 'v2' but --revision says 'main'" in clash.stderr
        missing = run_convert(env, "timm/nope", "--output-dir", str(tmp_path / "nope"))
        assert missing.returncode == 1 and "The Hub has no model repo timm/nope" in missing.stderr
        no_rev = run_convert(env, "timm/test_vit.r160_in1k", "--revision", "v9", "--output-dir", str(tmp_path / "n"))
        assert no_rev.returncode == 1 and "has no revision 'v9'" in no_rev.stderr
    finally:
        server.shutdown()
    for out, commit, model in ((tmp_path / "main", main, first), (tmp_path / "v2o", v2, second)):
        record = json.loads((out / "vitzoo_parity.json").read_text())
        assert record["timm_format"] == {"hub_repo": "timm/test_vit.r160_in1k", "commit": commit}
        card = (out / "README.md").read_text()
        assert "base_model: timm/test_vit.r160_in1k" in card and f"commit `{commit[:12]}`" in card
        assert "base_model_relation: quantized" in card  # the repo's own weights, in another format
        assert_reloads_as(out, model, 160)
    # the Hub gone: offline, the cached main converts, by the bare id and the hf_hub: form alike
    offline = {**env, "HF_HUB_OFFLINE": "1"}
    for form in ("timm/test_vit.r160_in1k", "hf_hub:timm/test_vit.r160_in1k"):
        again = run_convert(offline, form, "--output-dir", str(tmp_path / form.replace(":", "_").replace("/", "_")))
        assert again.returncode == 0, again.stderr
    uncached = run_convert(offline, "timm/test_resnet.r160_in1k", "--output-dir", str(tmp_path / "u"))
    assert uncached.returncode == 1 and "is not in the local Hub cache and the Hub cannot be reached" in uncached.stderr
    assert not (tmp_path / "u").exists()
