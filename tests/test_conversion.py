"""conversion.convert_timm end to end on tiny perturbed checkpoints, and its bad-input errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

import vitzoo_hf
from conversion.convert_timm import ConversionError, convert
from tests.helpers import code_files, perturb

ROOT = Path(__file__).resolve().parents[1]


def timm_checkpoint(tmp_path: Path, name: str = "test_vit", suffix: str = ".safetensors", **kwargs) -> Path:
    model = perturb(timm.create_model(name, pretrained=False, **kwargs))
    path = tmp_path / f"{name}{suffix}"
    if suffix == ".safetensors":
        save_file(model.state_dict(), path)
    else:
        torch.save({"epoch": 3, "state_dict": model.state_dict(), "optimizer": {}}, path)
    return path


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("name", ["test_vit", "test_vit3"])
def test_cli_converts_and_verifies(tmp_path: Path, name: str) -> None:
    checkpoint = timm_checkpoint(tmp_path, name)
    out = tmp_path / "converted"
    command = [sys.executable, "-m", "conversion.convert_timm", f"{name}.r160_in1k", "--checkpoint", str(checkpoint)]
    result = subprocess.run([*command, "--output-dir", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "verified in a clean process" in result.stdout
    files = sorted(p.name for p in out.iterdir())
    folder_files = ["README.md", "config.json", "model.safetensors", "preprocessor_config.json", "vitzoo_parity.json"]
    assert files == sorted([*folder_files, *code_files(vitzoo_hf.FAMILIES["vit"])])
    config = json.loads((out / "config.json").read_text())
    assert config["timm_model_name"] == name and config["timm_pretrained_tag"] == "r160_in1k"
    assert config["id2label"]["0"] == "tench, Tinca tinca" and len(config["id2label"]) == 1000
    assert "vitzoo_parity" not in config  # the claim lives beside the weights it was verified on, not in the config
    record = json.loads((out / "vitzoo_parity.json").read_text())
    parity = record["max_abs_diff"]
    assert {"native.logits", "interpolated.logits", "native.pooler_output"} <= set(parity)
    assert max(parity.values()) <= 1e-4
    weights = load_file(out / "model.safetensors")
    source = load_file(checkpoint)
    torch.testing.assert_close(weights["vit.embeddings.pos_embed"], source["pos_embed"], rtol=0, atol=0)
    card = (out / "README.md").read_text()
    assert "trust_remote_code=True" in card and "pipeline_tag: image-classification" in card
    assert leftovers(tmp_path) == []


def test_training_checkpoint_with_finetuned_head_and_bf16(tmp_path: Path) -> None:
    checkpoint = timm_checkpoint(tmp_path, suffix=".pth", num_classes=5)
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nbird\nfish\nfrog\n")
    result = convert("test_vit", tmp_path / "out", checkpoint=checkpoint, dtype="bf16", labels=labels)
    config = json.loads((result.output_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "cat", "1": "dog", "2": "bird", "3": "fish", "4": "frog"}
    weights = load_file(result.output_dir / "model.safetensors")
    assert weights["head.layers.weight"].shape == (5, 64)
    assert {w.dtype for w in weights.values()} == {torch.bfloat16}


def test_sharding_writes_an_index(tmp_path: Path) -> None:
    result = convert("test_vit", tmp_path / "out", checkpoint=timm_checkpoint(tmp_path), max_shard_size="200KB")
    index = json.loads((result.output_dir / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 1 and all((result.output_dir / s).is_file() for s in shards)


@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        (lambda tmp: dict(model_name="vit_smal_patch16_224"), "Did you mean: vit_small_patch16_224"),
        (lambda tmp: dict(checkpoint=timm_checkpoint(tmp, "test_vit2")), "does not fit test_vit"),
        (lambda tmp: dict(checkpoint=tmp / "missing.safetensors"), "does not exist"),
        (lambda tmp: dict(dtype="int8"), "Unknown dtype 'int8'"),
    ],
)
def test_bad_input_fails_clearly_and_leaves_nothing(tmp_path: Path, prepare, message: str) -> None:
    kwargs = {"model_name": "test_vit", "checkpoint": None, **prepare(tmp_path)}
    if kwargs["checkpoint"] is None:
        kwargs["checkpoint"] = timm_checkpoint(tmp_path)
    with pytest.raises((ConversionError, FileNotFoundError), match=message):
        convert(kwargs.pop("model_name"), tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_truncated_checkpoint_and_existing_dir(tmp_path: Path) -> None:
    checkpoint = timm_checkpoint(tmp_path)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(checkpoint.read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        convert("test_vit", tmp_path / "out", checkpoint=truncated)
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    with pytest.raises(ConversionError, match="already exists; pass --overwrite"):
        convert("test_vit", existing, checkpoint=checkpoint)
    assert (existing / "keep.txt").read_text() == "mine"


def test_failed_parity_leaves_no_folder(tmp_path: Path, monkeypatch) -> None:
    """A mapping bug that names and shapes cannot reveal (two blocks' projections swapped) must stop the
    conversion through the numeric check, not ship."""
    from conversion.vit import ViTHooks

    real = ViTHooks.convert_key
    swap = {
        "blocks.0.attn.proj.weight": "blocks.1.attn.proj.weight",
        "blocks.1.attn.proj.weight": "blocks.0.attn.proj.weight",
    }

    def buggy(self, key: str, with_head: bool = True) -> str | None:
        return real(self, swap.get(key, key), with_head)

    monkeypatch.setattr(ViTHooks, "convert_key", buggy)
    with pytest.raises(ConversionError, match="Parity check failed"):
        convert("test_vit", tmp_path / "out", checkpoint=timm_checkpoint(tmp_path))
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("name", "pooling"),
    [("vit_small_patch16_dinov3.lvd1689m", "token"), ("eva02_tiny_patch14_224.mim_in22k", "avg")],
)
def test_eva_family_converts_and_verifies(tmp_path: Path, name: str, pooling: str) -> None:
    """DINOv3 pools the CLS token (its reference is timm with global_pool='token'); EVA02 keeps avg + fc_norm."""
    checkpoint = timm_checkpoint(tmp_path, name.split(".")[0])
    result = convert(name, tmp_path / "out", checkpoint=checkpoint)
    config = json.loads((result.output_dir / "config.json").read_text())
    assert config["model_type"] == "vitzoo_eva" and config["global_pool"] == pooling
    assert (result.output_dir / "modeling_eva.py").is_file() and (result.output_dir / "token_rope.py").is_file()
    assert {"native.last_hidden_state", "interpolated.pooler_output"} <= set(result.parity)
    assert max(result.parity.values()) <= 1e-4
    assert leftovers(tmp_path) == []


def test_dinov3_7b_config_builds_on_meta_with_timms_parameter_count() -> None:
    from conversion.convert_timm import family_of

    name = "vit_7b_patch16_dinov3"
    hooks = family_of(name)
    with torch.device("meta"):
        timm_model = timm.create_model(name, pretrained=False, **hooks.reference_kwargs(name))
        config = hooks.config_from_timm(timm_model)
        model = hooks.family.model(config)
    assert config.global_pool == "token" and config.rope_type == "dinov3" and config.intermediate_size % 64 == 0
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in hooks.convert_state_dict(timm_model.state_dict(), False).items()}
    assert ours == theirs
    assert sum(p.numel() for p in model.parameters()) > 6.5e9


def test_too_large_to_verify_whole_is_verified_partially_and_said(tmp_path: Path) -> None:
    """With less memory than a whole-model check needs, the first blocks are verified and the folder says so."""
    result = convert("test_vit", tmp_path / "out", checkpoint=timm_checkpoint(tmp_path), memory_budget=1)
    assert result.verified_blocks == 2
    config = json.loads((result.output_dir / "config.json").read_text())
    assert json.loads((result.output_dir / "vitzoo_parity.json").read_text())["verified_blocks"] == "first 2 of 6"
    assert config["num_hidden_layers"] == 6 and max(result.parity.values()) <= 1e-4
    assert "first 2 of 6 blocks" in (result.output_dir / "README.md").read_text()


def test_partial_verification_refuses_weights_that_depend_on_the_depth(tmp_path: Path) -> None:
    """RoPE-Mixed learns one frequency table per block: a shallower reference cannot hold the checkpoint's, so the
    partial check is refused by name and nothing is left behind."""
    kwargs = dict(img_size=32, patch_size=8, embed_dim=64, depth=3, num_heads=4)
    name = "vit_small_patch16_rope_mixed_224"
    checkpoint = timm_checkpoint(tmp_path, name, **kwargs)
    message = r"Partial verification is not possible: rope\.freqs depends on the depth"
    with pytest.raises(ConversionError, match=message):
        convert(name, tmp_path / "out", checkpoint=checkpoint, memory_budget=1, model_kwargs=kwargs)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


PEAK_MEMORY_CHILD = r"""
import sys
from pathlib import Path
from conversion.checkpoints import open_checkpoint, write_shards

def anonymous_bytes():
    # RssAnon: memory the process holds. Pages of the memory-mapped checkpoint count in RSS as clean,
    # file-backed page cache the kernel reclaims under pressure, so VmHWM would overstate what is held.
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024

peak = 0
def tracked(source):
    global peak
    for key in source.shapes:
        yield key, source.get(key)
        peak = max(peak, anonymous_bytes())

source = open_checkpoint(Path(sys.argv[1]))
write_shards(Path(sys.argv[2]), tracked(source), "16MB")
print(max(peak, anonymous_bytes()))
"""


def test_streaming_peak_memory_does_not_grow_with_model_size(tmp_path: Path) -> None:
    """Peak anonymous memory while streaming a checkpoint into 16 MB shards, small vs a 4x larger model (a
    measurement, not a timing): the growth stays far below the growth in weights."""
    peaks, sizes = [], []
    for name in ("vit_small_patch16_224", "vit_base_patch16_224"):
        checkpoint = timm_checkpoint(tmp_path, name)
        out = tmp_path / f"shards-{name}"
        out.mkdir()
        run = subprocess.run(
            [sys.executable, "-c", PEAK_MEMORY_CHILD, str(checkpoint), str(out)],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        peaks.append(int(run.stdout.strip().splitlines()[-1]))
        sizes.append(checkpoint.stat().st_size)
        assert len(list(out.glob("model-*.safetensors"))) > 3
    weights_growth, peak_growth = sizes[1] - sizes[0], peaks[1] - peaks[0]
    assert weights_growth > 200e6
    assert peak_growth < 0.25 * weights_growth, (
        f"peak grew {peak_growth / 1e6:.0f} MB for {weights_growth / 1e6:.0f} MB"
    )


def test_unwritable_destination_and_unsupported_architecture(tmp_path: Path) -> None:
    checkpoint = timm_checkpoint(tmp_path)
    with pytest.raises(ConversionError, match=r"Cannot write to /sys/vitzoo .*choose an --output-dir"):
        convert("test_vit", Path("/sys/vitzoo/out"), checkpoint=checkpoint)
    pwee = timm_checkpoint(tmp_path, "vit_pwee_patch16_reg1_gap_256", depth=1)
    with pytest.raises(ValueError, match="block type ParallelScalingBlock is not supported"):
        convert("vit_pwee_patch16_reg1_gap_256", tmp_path / "out", checkpoint=pwee, model_kwargs={"depth": 1})
    assert leftovers(tmp_path) == [] and not (tmp_path / "out").exists()


def test_batch_converts_a_manifest_skips_finished_and_reports(tmp_path: Path) -> None:
    from conversion import batch

    good = timm_checkpoint(tmp_path, "test_vit")
    manifest = tmp_path / "manifest.txt"
    manifest.write_text(f"# two models, one broken\ntest_vit.r160_in1k {good}\n\ntest_vit2 {good}  # wrong arch\n")
    root = tmp_path / "out"
    first = subprocess.run(
        [sys.executable, "-m", "conversion.batch", str(manifest), "--output-root", str(root)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert first.returncode == 1, first.stderr[-2000:]
    assert "| test_vit.r160_in1k | 0.4 M |" in first.stdout and "| converted |" in first.stdout
    assert "failed: " in first.stdout and "1/2 done, 1 failed" in first.stdout
    assert (root / "test_vit.r160_in1k" / "config.json").is_file() and not (root / "test_vit2").exists()
    again = batch.run(batch.read_manifest(manifest)[:1], root, "fp32", overwrite=False)
    assert again[0].status == "skipped (done)" and again[0].parity != "-"


def test_sweep_converts_real_tags_at_reduced_depth() -> None:
    """The sweep command end to end on two small real tags (each variant's own tag is converted below)."""
    run = subprocess.run(
        [sys.executable, "-m", "conversion.sweep", "--filter", "deit_tiny", "--depth", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "2/2 converted with parity" in run.stdout


# One real pretrained tag per architecture variant, converted end to end (checkpoint, streaming write,
# clean-process verification) at depth 1: the sweep's own per-tag path.
VARIANT_TAGS = [
    "deit_tiny_distilled_patch16_224.fb_in1k",
    "deit3_small_patch16_224.fb_in1k",
    "vit_small_patch14_reg4_dinov2.lvd142m",
    "vit_base_patch16_clip_quickgelu_224.openai",
    "vit_base_patch16_siglip_224.webli",
    "aimv2_large_patch14_224.apple_pt",
    "beit3_base_patch16_224.in22k_ft_in1k",
    "vit_base_patch16_rpn_224.sw_in1k",
    "vit_base_patch16_radio_v3.c_radio",
    "vit_medium_patch16_gap_256.sw_in12k_ft_in1k",
    "eva02_tiny_patch14_224.mim_in22k",
    "vit_pe_core_tiny_patch16_384.fb",
    "vit_small_patch16_rope_mixed_224.naver_in1k",
    "vit_base_patch16_sapiens2.fb",
]


@pytest.mark.parametrize("tag", VARIANT_TAGS)
def test_each_variant_converts_end_to_end(tag: str) -> None:
    from conversion.sweep import sweep_one

    assert tag in timm.list_models(pretrained=True), f"{tag} is no longer a timm pretrained tag"
    _, ok, detail, _ = sweep_one(tag, depth=1)
    assert ok, detail
    assert float(detail.split()[-1]) <= 1e-4


@pytest.mark.parametrize("name", sorted(vitzoo_hf.FAMILIES))
def test_every_family_converts_its_first_real_tag_cut_out_of_the_built_model(name: str) -> None:
    """Each registered family, through the sweep's path (the tag built bare with its own pretrained config, cut to
    one block per group by the family's truncate, random weights, converted and verified in a clean process)."""
    from conversion.families import conversions
    from conversion.sweep import sweep_one

    hooks = next(h for h in conversions() if h.name == name)
    tag = sorted(timm.list_models(module=list(hooks.timm_modules), pretrained=True))[0]
    _, ok, detail, _ = sweep_one(tag, depth=1)
    assert ok, f"{tag}: {detail}"
    assert float(detail.split()[-1]) <= 1e-4
