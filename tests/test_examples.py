"""The examples/ scripts, run as users run them, on tiny saved models and a generated image folder.

Training scripts run in subprocesses (their frameworks set global state); each test asserts what the script
claims: loss falls on the learnable toy task, reloaded or exported outputs equal the originals.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification

from conversion.families import conversions
from conversion.token_families import TokenHooks
from tests.helpers import hooks_of, save_tiny_folder

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))

from attention_map import cls_attention, overlay, render  # noqa: E402
from image_folder import classifier_for  # noqa: E402
from image_retrieval import build_index, extractor, search  # noqa: E402
from load_big_model import load_on_meta, load_with_device_map  # noqa: E402
from make_toy_images import CLASSES, make_image_folder  # noqa: E402

TRAIN_IMAGES = 24 * len(CLASSES)


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hf_home")


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict:
    """Saved tiny classifiers, built on first use: variant -> (folder, vitzoo model, timm model)."""
    root, made = tmp_path_factory.mktemp("models"), {}

    def get(variant: str, headless: bool = False) -> tuple[Path, torch.nn.Module, torch.nn.Module]:
        key = (variant, headless)
        if key not in made:
            folder = root / f"{variant}{'-headless' if headless else ''}"
            made[key] = (folder, *save_tiny_folder(variant, folder, headless=headless))
        return made[key]

    return get


def run_example(
    script: str, *args: str, hf_home: Path, launcher: list[str] | None = None, env: dict[str, str] | None = None
) -> dict:
    """Run an example the way the README does (``env``: extra variables); its last stdout line is its JSON summary."""
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", **(env or {})}
    command = [*(launcher or [sys.executable]), str(EXAMPLES / script), *args]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def two_processes() -> list[str]:
    """``accelerate launch`` of two processes on a free port: test workers running it at once collide on the
    default port 29500."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    accelerate = str(Path(sys.executable).parent / "accelerate")
    return [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--main_process_port", str(port)]


def falls(losses: list[float], window: int = 3) -> bool:
    return np.mean(losses[-window:]) < 0.8 * np.mean(losses[:window])


def test_toy_folder_has_both_splits_and_varied_sizes(toy: Path) -> None:
    for split, count in (("train", 24), ("validation", 9)):
        assert sorted(p.name for p in (toy / split).iterdir()) == sorted(CLASSES)
        assert all(len(list((toy / split / name).glob("*.png"))) == count for name in CLASSES)
    sizes = {Image.open(p).size for p in (toy / "train" / "red").glob("*.png")}
    assert len(sizes) > 1


# Each registered family's first showcase variant, from the registry; a new family is covered by declaring it.
SHOWCASE = [hooks.showcase_variants[0] for hooks in conversions()]

# Which families each sharded engine runs on. What a family brings to sharded training is the blocks FSDP wraps and
# checkpoints (``_no_split_modules``) and what ZeRO-3 partitions as it builds and loads the model: accelerate's
# FSDP2 and ZeRO-3 run on every family. The other engines add mechanics of their own, the same for any model
# (Trainer's FSDP2 is accelerate's, ZeRO-2 partitions only optimizer state and gradients, Lightning's FSDP wraps the
# same blocks as accelerate's): they run on the BatchNorm family most sensitive to rounding, Lightning's on a token
# family too. ``VITZOO_FULL_MATRIX=1`` runs every engine on every family (docs/TESTS.md: before a release).
FULL_MATRIX = os.environ.get("VITZOO_FULL_MATRIX") == "1"
ROUNDING_SENSITIVE = next(v for v in SHOWCASE if hooks_of(v).name == "efficientnet")
TOKEN_FAMILY = next(v for v in SHOWCASE if isinstance(hooks_of(v), TokenHooks))


def engine_variants(*chosen: str) -> list[str]:
    """The showcase variants an engine runs on: ``chosen``, or every family's under the full matrix."""
    return SHOWCASE if FULL_MATRIX else list(chosen)


@pytest.mark.parametrize(
    ("variant", "headless"), [*((v, False) for v in SHOWCASE), ("dinov3", True)], ids=[*SHOWCASE, "headless"]
)
def test_trainer_fine_tunes_evaluates_saves_and_reloads(toy, folders, hf_home, tmp_path, variant, headless) -> None:
    """On a folder with a 7-class head (replaced) and on a headless one (a head is created), as README shows."""
    model, _, _ = folders(variant, headless)
    summary = run_example(
        "train_trainer.py", "--model", str(model), "--data", str(toy), "--output-dir", str(tmp_path), hf_home=hf_home
    )
    assert np.isfinite(summary["losses"]).all() and len(summary["losses"]) == 3 * TRAIN_IMAGES // 8
    if hooks_of(variant).learns_toy_task:
        assert falls(summary["losses"])
        assert summary["accuracy_after"] >= 0.9 > summary["accuracy_before"]
    assert summary["accuracy_reloaded"] == summary["accuracy_after"]
    saved = Path(summary["saved"])
    config = json.loads((saved / "config.json").read_text())
    assert config["id2label"] == {"0": "blue", "1": "green", "2": "red"}
    code = f"modeling_{hooks_of(variant).name}.py"
    assert {code, "model.safetensors", "preprocessor_config.json"} <= {p.name for p in saved.iterdir()}


@pytest.mark.parametrize("variant", ["dinov3", "headless_dinov3"])  # DINOv3 ViT and DINOv3 ConvNeXt (tiny)
def test_lightning_two_stages_checkpoint_resume_and_load(variant, toy, folders, hf_home, tmp_path) -> None:
    model, _, _ = folders(variant, headless=True)  # a foundation model: the head is created for the classes
    common = ["--model", str(model), "--data", str(toy), "--output-dir", str(tmp_path), "--batch-size", "8"]
    first = run_example("train_lightning.py", *common, "--full-epochs", "1", hf_home=hf_home)
    steps_per_epoch = TRAIN_IMAGES // 8
    assert first["backbone_frozen_in_head_stage"] is True
    assert first["precision"] == "bf16-mixed"
    assert falls(first["head_losses"])
    assert first["full_global_step"] == steps_per_epoch
    assert first["restored_max_abs_diff"] == 0.0  # load_from_checkpoint rebuilds the trained model exactly
    assert first["restored_learning_rate"] == 3e-4  # ... and the second stage's settings
    assert {p.name for p in (tmp_path / "head").iterdir()} == {"epoch=0.ckpt", "epoch=1.ckpt", "last.ckpt"}

    resumed = run_example("train_lightning.py", *common, "--full-epochs", "2", "--resume", hf_home=hf_home)
    assert resumed["head_losses"] == []  # the finished first stage is restored, not rerun
    assert len(resumed["full_losses"]) == steps_per_epoch  # only the missing epoch runs
    assert resumed["full_epochs_done"] == 2 and resumed["full_global_step"] == 2 * steps_per_epoch
    assert resumed["val_accuracy"] >= 0.9


@pytest.mark.parametrize("variant", SHOWCASE)
def test_accelerate_two_processes_with_gradient_accumulation(variant, toy, folders, hf_home, tmp_path) -> None:
    model, _, _ = folders(variant)
    args = ["--model", str(model), "--data", str(toy), "--output-dir", str(tmp_path), "--cpu"]
    summary = run_example(
        "train_accelerate.py", *args, "--batch-size", "4", "--grad-accum", "2", "--epochs", "3",
        hf_home=hf_home, launcher=two_processes(),
    )  # fmt: skip
    assert summary["world_size"] == 2
    batches = TRAIN_IMAGES // (4 * 2)  # each process sees half of every global batch
    assert summary["batches_per_epoch"] == batches
    assert summary["optimizer_steps"] == 3 * -(-batches // 2)
    assert summary["same_weights_on_every_process"] is True
    assert summary["val_examples"] == 9 * len(CLASSES)  # gathered without the padding duplicates
    assert np.isfinite(summary["losses"]).all()
    if hooks_of(variant).learns_toy_task:
        assert falls(summary["losses"])
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path, trust_remote_code=True)
    assert reloaded.config.id2label == {0: "blue", 1: "green", 2: "red"}


BUFFER_KEYS = ("running_mean", "running_var", "num_batches_tracked")  # per-process BatchNorm statistics
# One thread in every process: the CPU kernels' reduction order depends on the thread count, and the tiny
# EfficientNet amplifies that rounding to 1e-6 in 3 steps; with it fixed the comparison is of the sharding alone.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def assert_every_block_is_a_unit(units: dict[str, str], model: torch.nn.Module) -> None:
    """``units`` (module path -> class) holds every block the model names in ``_no_split_modules``, and no stage."""
    blocks = {type(m).__name__ for m in model.modules()} & set(model._no_split_modules)
    assert blocks and blocks <= set(units.values())
    block_count = sum(type(m).__name__ in blocks for m in model.modules())
    assert sum(name in blocks for name in units.values()) == block_count
    assert not any(re.search(r"stages\.\d+$", path) for path in units)


def sharded_and_single(
    script: str, folder: Path, toy: Path, hf_home: Path, tmp_path: Path, *args: str, launcher=None
) -> tuple[dict, dict]:
    """The sharded run (two processes, through ``launcher`` or the script's own) and its ``--reference`` run on one
    process, both on one thread and from the same folder."""
    common = ["--model", str(folder), "--data", str(toy), "--cpu", "--steps", "3", *args]
    sharded = run_example(
        script, *common, "--output-dir", str(tmp_path / "sharded"), hf_home=hf_home, launcher=launcher, env=ONE_THREAD
    )
    single = run_example(
        script, *common, "--reference", "--output-dir", str(tmp_path / "one"), hf_home=hf_home, env=ONE_THREAD
    )
    assert sharded["world_size"] == 2 and single["world_size"] == 1
    assert len(sharded["losses"]) == 3 and np.isfinite(sharded["losses"]).all()
    return sharded, single


def assert_reloads_to_the_reference(sharded: dict, single: dict, folder: Path, tolerance: float) -> None:
    """The sharded run's saved folder reloads with from_pretrained; every block was an FSDP unit (where FSDP ran);
    its weights moved from the folder's and equal the one-process run's within ``tolerance`` (0: bit for bit).
    BatchNorm buffers are left out: each process's running statistics follow its own batches."""
    reloaded = AutoModelForImageClassification.from_pretrained(sharded["saved"], trust_remote_code=True)
    assert reloaded.config.id2label == {0: "blue", 1: "green", 2: "red"}
    if "units" in sharded:
        assert_every_block_is_a_unit(sharded["units"], reloaded)
    saved = reloaded.state_dict()
    assert all(torch.equal(saved[k], v) for k, v in load_file(Path(sharded["saved"]) / "model.safetensors").items())
    before = load_file(folder / "model.safetensors")
    assert any(not torch.equal(saved[k], v) for k, v in before.items() if k in saved and v.shape == saved[k].shape)
    reference = AutoModelForImageClassification.from_pretrained(single["saved"], trust_remote_code=True).state_dict()
    assert set(saved) == set(reference)
    for name, tensor in reference.items():
        if not name.endswith(BUFFER_KEYS):
            # a sharding fault (a gradient not averaged, an update lost) moves weights by lr * gradient, ~1e-3
            torch.testing.assert_close(
                saved[name], tensor, rtol=tolerance, atol=tolerance, msg=lambda m, n=name: f"{n}: {m}"
            )


@pytest.mark.parametrize("variant", SHOWCASE)
def test_fsdp2_two_processes_match_one_and_the_sharded_checkpoint_reloads(
    variant, toy, folders, hf_home, tmp_path
) -> None:
    """accelerate's FSDP2 over gloo: the blocks are the units, losses and weights equal a single process (float64,
    SGD: what is compared is the sharded math, not float32 rounding, which small BN models amplify), the DCP shards
    merge to what was gathered, and save_pretrained + from_pretrained reloads it."""
    args = ["--float64", "--optimizer", "sgd", "--learning-rate", "0.05"]
    folder = folders(variant)[0]
    sharded, single = sharded_and_single(
        "train_fsdp.py", folder, toy, hf_home, tmp_path, *args, launcher=two_processes()
    )
    np.testing.assert_allclose(sharded["losses"], single["losses"], rtol=1e-8, atol=0)
    assert sharded["merged_equals_gathered"] is True
    assert_reloads_to_the_reference(sharded, single, folder, tolerance=1e-6)


TRAINER_ENGINES = [
    *(("fsdp2", v) for v in engine_variants(ROUNDING_SENSITIVE)),
    *(("zero2", v) for v in engine_variants(ROUNDING_SENSITIVE)),
    *(("zero3", v) for v in SHOWCASE),
]


@pytest.mark.parametrize(("engine", "variant"), TRAINER_ENGINES, ids=[f"{e}-{v}" for e, v in TRAINER_ENGINES])
def test_trainer_sharded_two_processes_match_one_and_save_model_reloads(
    engine, variant, toy, folders, hf_home, tmp_path
) -> None:
    """transformers' Trainer through accelerate: with an FSDP2 ``fsdp_config`` (auto-wrap from ``_no_split_modules``,
    FSDP's activation checkpointing, full state dict) in float64, and with DeepSpeed ZeRO-2/3 (examples/deepspeed/,
    DeepSpeed's CPU accelerator over gloo) in float32, all DeepSpeed takes. ZeRO-3 runs with ``--zero-init``: the
    model is built and loaded partitioned, each process holding half of it from the start (what a model too large
    for one process needs; it takes a folder whose head has the data's classes). SGD over two processes equals one
    process accumulating the same batches, ``save_model``'s folder reloads with from_pretrained, and ZeRO's sharded
    checkpoint consolidates (``zero_to_fp32``) to it."""
    source, folder = folders(variant)[0], tmp_path / "three-classes"
    classifier_for(source, sorted(CLASSES)).save_pretrained(folder)
    AutoImageProcessor.from_pretrained(source, trust_remote_code=True).save_pretrained(folder)
    args = ["--engine", engine, "--fixed-order", "--learning-rate", "0.001"]  # stable: rounding not amplified
    args += {"fsdp2": ["--float64"], "zero2": [], "zero3": ["--zero-init"]}[engine]
    sharded, single = sharded_and_single(
        "train_trainer_sharded.py", folder, toy, hf_home, tmp_path, *args, launcher=two_processes()
    )
    if engine == "fsdp2":
        np.testing.assert_allclose(sharded["losses"], single["losses"], rtol=1e-6, atol=0)  # Trainer logs float32
        assert_reloads_to_the_reference(sharded, single, folder, tolerance=1e-9)
        return
    assert sharded["zero_stage"] == int(engine[-1]) and sharded["consolidated_equals_saved"] is True
    # ZeRO-3 holds half of every partitioned parameter per process (small ones below DeepSpeed's threshold whole)
    half_or_all = pytest.approx(0.5, abs=0.01) if engine == "zero3" else 1.0
    assert sharded["parameter_share_held"] == half_or_all
    if engine == "zero3":
        assert sharded["parameter_share_held_at_load"] == half_or_all
    # float32: the tiny EfficientNet amplifies rounding (one reduction order against another) to ~1e-4 in 3 steps;
    # the other families stay under 1e-7
    np.testing.assert_allclose(sharded["losses"], single["losses"], rtol=1e-3, atol=0)
    assert_reloads_to_the_reference(sharded, single, folder, tolerance=1e-4)


def test_trainer_zero_init_refuses_what_it_cannot_load_into(toy, folders, hf_home, tmp_path) -> None:
    """transformers loads into a partitioned model only a checkpoint that matches it: a 7-class head for 3-class data
    is refused before anything loads, naming both and the way out; so is --zero-init without ZeRO-3."""
    folder = folders(SHOWCASE[0])[0]
    command = [sys.executable, str(EXAMPLES / "train_trainer_sharded.py"), "--model", str(folder), "--data", str(toy)]
    command += ["--output-dir", str(tmp_path / "out"), "--cpu", "--zero-init"]
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    head = subprocess.run([*command, "--engine", "zero3"], capture_output=True, text=True, env=env, timeout=300)
    assert head.returncode == 1
    assert "head has 7 classes" in head.stderr and "the data has 3 ['blue', 'green', 'red']" in head.stderr
    assert "Fine-tune without --zero-init" in head.stderr
    engine = subprocess.run([*command, "--engine", "zero2"], capture_output=True, text=True, env=env, timeout=300)
    assert engine.returncode == 1 and "which only ZeRO-3 does, not zero2" in engine.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("variant", engine_variants(TOKEN_FAMILY, ROUNDING_SENSITIVE))
def test_lightning_fsdp_two_processes_match_one_and_the_checkpoint_reloads(
    variant, toy, folders, hf_home, tmp_path
) -> None:
    """Lightning's FSDPStrategy over gloo, the blocks as wrap and checkpointing policy: in float32 (Lightning's FSDP
    has no 64-bit precision) the weights equal one process accumulating the same batches within 1e-6: float32
    rounding (the sharded run's kernels see gathered copies of the parameters and differ from the reference in the
    last bits, up to ~3e-8 after 3 steps, varying run to run), where a sharding fault moves them by lr * gradient,
    1e-5 and more. lr 1e-3 keeps the tiny BatchNorm models' training stable, so rounding is not amplified.
    Lightning's consolidated sharded checkpoint, saved with save_pretrained, reloads to them."""
    folder = folders(variant)[0]
    sharded, single = sharded_and_single(
        "train_lightning_fsdp.py", folder, toy, hf_home, tmp_path, "--learning-rate", "0.001"
    )
    # the tiny EfficientNet (SE gates, SiLU, deep BatchNorm stack) amplifies that rounding to ~4e-4 of the loss in 3
    # steps, as under ZeRO; the other families stay at rounding
    amplifies = hooks_of(variant).name == "efficientnet"
    np.testing.assert_allclose(sharded["losses"], single["losses"], rtol=1e-3 if amplifies else 1e-5, atol=0)
    assert_reloads_to_the_reference(sharded, single, folder, tolerance=1e-4 if amplifies else 1e-6)


def test_the_multi_gpu_recipes_are_what_the_docs_say() -> None:
    """The files a user launches on GPUs, which the tests here cannot run there: accelerate's reading of the FSDP2
    config, the DeepSpeed configs the Trainer tests use (ZeRO-3 gathering the weights for save_model), and Slurm
    scripts that parse and launch an existing example with its recipe."""
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(EXAMPLES / "accelerate" / "fsdp2.yaml"))
    assert config.distributed_type == "FSDP" and config.fsdp_config["fsdp_version"] == 2
    assert config.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"  # from _no_split_modules
    assert config.fsdp_config["fsdp_activation_checkpointing"] is True
    for stage in (2, 3):
        zero = json.loads((EXAMPLES / "deepspeed" / f"zero{stage}.json").read_text())["zero_optimization"]
        assert zero["stage"] == stage
    assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    scripts = {
        "accelerate/slurm_fsdp2.sh": ["--config_file examples/accelerate/fsdp2.yaml", "examples/train_fsdp.py"],
        "accelerate/slurm_trainer_sharded.sh": ["examples/train_trainer_sharded.py --engine $engine"],
        "slurm_lightning_fsdp.sh": ["examples/train_lightning_fsdp.py --devices 8"],
    }
    assert set(scripts) == {str(p.relative_to(EXAMPLES)) for p in EXAMPLES.rglob("*.sh")}
    for name, expected in scripts.items():
        script = EXAMPLES / name
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0, name
        text = " ".join(script.read_text().split())
        assert all(" ".join(part.split()) in text for part in expected), name
        launched = re.search(r"(examples/train_\w+\.py)", text).group(1)
        assert (EXAMPLES.parent / launched).is_file(), name


def _split_units(model: torch.nn.Module) -> None:
    """No placement goes inside a ``_no_split_modules`` unit (the block): each is whole on one device."""
    for key in model.hf_device_map:
        parts = key.split(".")
        for depth in range(1, len(parts)):
            parent = type(model.get_submodule(".".join(parts[:depth]))).__name__
            assert parent not in model._no_split_modules, f"{key} is placed inside a {parent}"


def _split_stages(device_map: dict[str, str]) -> list[str]:
    """The stages whose blocks sit on more than one device."""
    devices: dict[str, set[str]] = {}
    for key, device in device_map.items():
        if (match := re.match(r"(.*\.stages\.\d+)\.", key)) is not None:
            devices.setdefault(match[1], set()).add(device)
    return [stage for stage, placed in devices.items() if len(placed) > 1]


# A stage split across devices needs stages of several blocks: the EfficientNet showcase has one block per stage, so
# this test takes the full-depth B0 it is cut from.
DEVICE_MAP_VARIANTS = ["efficientnet_b0" if v == ROUNDING_SENSITIVE else v for v in SHOWCASE]


@pytest.mark.parametrize("variant", DEVICE_MAP_VARIANTS)
def test_device_map_with_disk_offload_and_meta_loading_match(variant, folders, tmp_path) -> None:
    folder, _, _ = folders(variant)
    reference = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
    size = (folder / "model.safetensors").stat().st_size
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(x).logits
    # Part of the weights' size for memory (accelerate keeps headroom for the largest layer), the rest on disk; the
    # stage families from 90 % down until the split falls inside a stage (blocks, not stages, are the units).
    staged = any(".stages." in name for name, _ in reference.named_modules())
    for percent in range(90, 0, -10) if staged else [70]:
        mapped = load_with_device_map(str(folder), f"{size * percent // 100_000}KB", tmp_path / str(percent)).eval()
        if staged and set(mapped.hf_device_map.values()) != {"cpu", "disk"}:
            continue  # this budget put the whole model on disk
        assert set(mapped.hf_device_map.values()) == {"cpu", "disk"}, mapped.hf_device_map  # memory and offload
        _split_units(mapped)
        with torch.no_grad():
            torch.testing.assert_close(mapped(x).logits, expected, rtol=0, atol=0)
        if _split_stages(mapped.hf_device_map):
            break
    else:
        assert not staged, f"no budget split a stage of {variant} across devices: {mapped.hf_device_map}"
    meta = load_on_meta(str(folder)).eval()
    with torch.no_grad():
        torch.testing.assert_close(meta(x).logits, expected, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("variant", "targets"),
    [
        ("dinov2_reg-headless", ["fc1", "fc2", "proj", "qkv"]),
        ("eva_giant_abs_pos", ["fc1", "fc2", "proj", "qkv"]),  # fused qkv with q/v bias
        ("eva02_clip_scale_attn", ["fc1_g", "fc1_x", "fc2", "k_proj", "proj", "q_proj", "v_proj"]),
        ("convnext", ["fc1", "fc2"]),  # Linear pointwise layers
        ("v2_grn_conv_mlp", ["fc1", "fc2"]),  # 1x1 convolutions
        ("resnet50", ["conv1", "conv2", "conv3"]),  # 1x1 and 3x3 convolutions, BatchNorms saved
        ("resnext_groups", ["conv1", "conv3"]),  # the 3x3 has 32 groups: PEFT needs a rank divisible by them
        ("efficientnet_b0_short", ["conv_pw", "conv_pwl"]),  # pointwise convs of DS and MBConv blocks
        ("mobilenetv4_hybrid_medium", ["conv", "conv_pwl", "proj"]),  # uir pw_exp/pw_proj.conv, er, MQA projections
        ("mixnet_s_mixed", ["conv_pw", "conv_pwl"]),  # the plain ones only: grouped 1x1s are mixed convs
    ],
)
def test_lora_trains_saves_reloads_and_merges(variant, targets, toy, folders, hf_home, tmp_path) -> None:
    model, _, _ = folders(variant.removesuffix("-headless"), variant.endswith("-headless"))
    summary = run_example(
        "lora_peft.py", "--model", str(model), "--data", str(toy), "--output-dir", str(tmp_path), "--epochs", "2",
        hf_home=hf_home,
    )  # fmt: skip
    assert summary["lora_target_modules"] == targets
    assert summary["untrained_adapters"] == []  # every adapted projection is used by the forward
    assert summary["trainable_parameters"] < 0.3 * summary["total_parameters"]
    if hooks_of(variant.removesuffix("-headless")).learns_toy_task:
        assert falls(summary["losses"])
    assert summary["reloaded_max_abs_diff"] == 0.0
    # merging rounds each adapted weight once; EfficientNet's ~50 BatchNorm-SiLU-SE steps carry that to ~3e-5 of
    # the logits' magnitude (measured; other families ~1e-6)
    assert summary["merged_max_diff"] < 1e-4
    assert summary["backbone_change_from_lora"] > 1e-3  # the merge really moved the backbone
    assert summary["adapter_files"] == ["README.md", "adapter_config.json", "adapter_model.safetensors"]


@pytest.mark.parametrize(
    ("variant", "task"),
    [
        *((v, "image-classification") for v in SHOWCASE),
        ("dinov3", "feature-extraction"),
        ("eva02_mim", "feature-extraction"),
    ],
)
def test_compile_and_onnx_match_eager_at_every_size(variant, task, folders, hf_home, tmp_path) -> None:
    folder, _, _ = folders(variant)
    path = tmp_path / "model.onnx"
    any_size = hooks_of(variant).size_rule == "any"  # CNNs: sizes a whole stride apart; tokens: whole patches
    sizes = ["32", "64x96", "96x64"] if any_size else ["32", "48x40", "24x56"]
    summary = run_example(
        "compile_and_export.py", "--model", str(folder), "--onnx", str(path), "--task", task, "--sizes", *sizes,
        hf_home=hf_home,
    )  # fmt: skip
    expected_sizes = sorted(f"{s}x{s}" if "x" not in s else s for s in sizes)
    assert sorted(summary["compile_max_diff"]) == expected_sizes
    # inductor reorders float arithmetic: ~1e-6 for most families, up to ~7e-5 for EfficientNet's ~50 BatchNorm-
    # SiLU-SE steps (timm's own compiled model differs from its eager one as much)
    assert max(summary["compile_max_diff"].values()) < 1e-4
    # one graph, run at three batch sizes and three image sizes: tolerance 1e-4 (contract 4), measured ~2e-6
    # (differences relative to the output's largest magnitude, at least 1)
    batches = [f"{i + 1}x{s}x{s}" if "x" not in s else f"{i + 1}x{s}" for i, s in enumerate(sizes)]
    assert sorted(summary["onnx_max_diff"]) == sorted(batches)
    assert max(summary["onnx_max_diff"].values()) < 1e-4
    graph_input = onnx.load(path).graph.input[0].type.tensor_type.shape.dim
    assert [bool(d.dim_param) for d in graph_input] == [True, False, True, True]


@pytest.mark.parametrize("variant", [*SHOWCASE, "siglip_map"])
def test_feature_extraction_pipeline_gives_timm_pre_logits(variant, folders, toy) -> None:
    folder, _, timm_model = folders(variant)
    image = Image.open(toy / "validation" / "red" / "red_001.png").convert("RGB")
    pooled = extractor(str(folder))(image, pool=True, return_tensors=True)
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    pixel_values = processor(image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = timm_model.forward_head(timm_model.forward_features(pixel_values), pre_logits=True)
    torch.testing.assert_close(pooled.reshape(expected.shape), expected, rtol=1e-5, atol=1e-5)


def test_retrieval_index_finds_the_query_first(folders, toy, tmp_path, hf_home) -> None:
    folder, _, _ = folders("dinov3")
    index = tmp_path / "index.safetensors"
    assert build_index(str(folder), toy / "validation", index, batch_size=4) == 9 * len(CLASSES)
    for query in sorted((toy / "validation").rglob("*_00[0-2].png")):
        results = search(index, Image.open(query), top_k=3)
        assert results[0][0] == str(query)
        assert results[0][1] == pytest.approx(1.0, abs=1e-5)
        assert results[0][1] >= results[1][1] >= results[2][1]
    cli = run_example("image_retrieval.py", "search", "--index", str(index), "--query", str(query), hf_home=hf_home)
    assert cli[0]["path"] == str(query) and len(cli) == 5


def test_cls_attention_is_the_last_blocks_softmax_over_patches(folders) -> None:
    folder, _, _ = folders("dinov2_reg")  # 1 class + 4 register tokens before the patches
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    x = torch.randn(1, 3, 40, 48, generator=torch.Generator().manual_seed(2))
    maps = cls_attention(model, x)
    # The same map from first principles: the last block's q/k on its input, softmax, CLS row, patch columns.
    with torch.no_grad():
        hidden = model(x, output_hidden_states=True, interpolate_pos_encoding=True).hidden_states[-2]
        block = model.blocks[-1]
        q, k, _ = block.attn.qkv(block.norm1(hidden)).reshape(1, -1, 3, 4, 8).permute(2, 0, 3, 1, 4)
        weights = (q @ k.transpose(-1, -2) * 8**-0.5).softmax(-1)
    assert maps.shape == (4, 5, 6)
    torch.testing.assert_close(maps, weights[0, :, 0, 5:].reshape(4, 5, 6), rtol=1e-5, atol=1e-6)


def test_attention_png_tiles_and_colours(folders, toy, tmp_path) -> None:
    folder, _, _ = folders("dinov3")
    summary = render(str(folder), toy / "train" / "blue" / "blue_002.png", tmp_path / "attention.png")
    sheet = Image.open(summary["output"])
    assert summary["heads"] == 4 and summary["grid"] == [4, 4]
    assert sheet.size == (224 * (2 + 4), 224)  # image, mean, 4 heads; 32 px inputs enlarged to 224
    base = Image.new("RGB", (8, 8), (0, 0, 0))
    heat = np.array([[1.0, 0.0], [0.0, 0.0]])
    tile = np.asarray(overlay(base, heat, colormap="gray", alpha=1.0))
    assert (tile[:4, :4] == 255).all() and (tile[4:, :] == 0).all() and (tile[:, 4:] == 0).all()


def test_attention_map_refuses_models_without_a_class_token(folders) -> None:
    folder, _, _ = folders("siglip_map")
    model = AutoModel.from_pretrained(folder, trust_remote_code=True)
    with pytest.raises(ValueError, match="no class token"):
        cls_attention(model, torch.randn(1, 3, 32, 32))
