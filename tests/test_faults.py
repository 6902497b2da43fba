"""Faults and hostile input: nothing lost, nothing leaked, nothing half-written.

The converter and the publisher run as real processes and are hit where it hurts: SIGTERM and SIGKILL in each
phase (write, verify, rename, upload; ``VITZOO_PAUSE_AT`` holds the process in the phase so the signal lands
there), a full disk (a 1 MB tmpfs when the tests run as root), a failing server, and inputs that must be
refused early with a message that names the thing and the fix. After each fault: the previous good state is
intact, nothing half-written is visible, and the next run succeeds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import load_file, save_file
from timm.utils import CheckpointSaver

import push_to_hub
from conversion import batch
from conversion.convert_timm import ConversionError, convert
from conversion.sandbox import unavailable_reason
from conversion.staging import DeletionError, clean_stale, remove_tree
from conversion.verify import untrusted_env
from tests.helpers import perturb
from tests.test_push_to_hub import TOKEN, folder, hub, posts, push  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[1]
NAME = "test_vit.r160_in1k"


def checkpoint(tmp_path: Path, **kwargs) -> Path:
    path = tmp_path / "test_vit.safetensors"
    save_file(perturb(timm.create_model("test_vit", **kwargs)).state_dict(), path)
    return path


def hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def start_convert(source: Path, out: Path, pause: str | None, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "VITZOO_PAUSE_AT": pause or ""}
    command = [sys.executable, "-m", "conversion.convert_timm", NAME, "--checkpoint", str(source)]
    command += ["--output-dir", str(out), *extra]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(process: subprocess.Popen, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    for line in process.stdout:
        if text in line:
            return
        assert time.monotonic() < deadline, f"no {text!r} in time"
    raise AssertionError(f"process ended before {text!r}: {process.stderr.read()[-2000:]}")


def folder_digest(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def good(tmp_path: Path) -> tuple[Path, Path, dict]:
    """A converted folder (the previous good state) and the checkpoint it came from."""
    source = checkpoint(tmp_path)
    out = tmp_path / "out" / "model"
    convert(NAME, out, checkpoint=source)
    return source, out, folder_digest(out)


# ---- signals ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("phase", ["write", "verify"])
def test_sigterm_cleans_up_and_keeps_the_previous_folder(good, phase: str) -> None:
    source, out, before = good
    process = start_convert(source, out, phase, "--overwrite")
    wait_for(process, f"paused at {phase}")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr
    assert hidden(out.parent) == []  # no staging, no verification scratch
    assert folder_digest(out) == before


@pytest.mark.parametrize("phase", ["write", "verify", "rename"])
def test_sigkill_leaves_the_good_state_and_the_next_run_cleans_up(good, phase: str) -> None:
    source, out, before = good
    process = start_convert(source, out, phase, "--overwrite")
    wait_for(process, f"paused at {phase}")
    process.kill()
    process.communicate(timeout=60)
    leftovers = hidden(out.parent)
    assert leftovers, "a killed run leaves its staging behind (nothing can run on SIGKILL)"
    if phase == "rename":  # between moving the old folder aside and the new one in: the old one is whole, aside
        (aside,) = [name for name in leftovers if ".vitzoo-old-" in name]
        assert folder_digest(out.parent / aside) == before and not out.exists()
    else:
        assert folder_digest(out) == before
    if out.exists():  # publishing the parent meanwhile skips the leftovers with a note, not refusing the root
        assert [p.name for p in push_to_hub.expand([out.parent])] == ["model"]
    # A later run without --overwrite restores or keeps the good folder and refuses to replace it ...
    with pytest.raises(ConversionError, match="already exists; pass --overwrite"):
        convert(NAME, out, checkpoint=source)
    assert folder_digest(out) == before and hidden(out.parent) == []
    # ... and one with --overwrite succeeds.
    convert(NAME, out, checkpoint=source, overwrite=True)
    assert hidden(out.parent) == [] and (out / "vitzoo_parity.json").is_file()


def test_batch_sigterm_removes_the_conversion_under_way_and_resumes(tmp_path: Path) -> None:
    """Also: a checkpoint path with spaces, quoted in the manifest as in a shell."""
    spaced = tmp_path / "my checkpoints"
    spaced.mkdir()
    source = checkpoint(spaced)
    manifest, root = tmp_path / "manifest.txt", tmp_path / "root"
    manifest.write_text(f'{NAME} "{source}"  # quoted\n')
    command = [sys.executable, "-m", "conversion.batch", str(manifest), "--output-root", str(root)]
    process = subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, "VITZOO_PAUSE_AT": "verify"}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_for(process, "paused at verify")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr
    assert not root.exists() or (list(root.iterdir()) == [])
    rerun = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert rerun.returncode == 0 and "| converted |" in rerun.stdout, rerun.stderr[-2000:]


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_sweep_workers_die_with_the_sweep(how: str) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "conversion.sweep", "--filter", "test_vit.r160", "--workers", "1"],
        cwd=ROOT, env={**os.environ, "VITZOO_PAUSE_AT": "verify"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    wait_for(process, "paused at verify")
    workers = descendants(process.pid)
    assert workers, "the sweep converts in pool workers"
    process.send_signal(getattr(signal, how))
    process.communicate(timeout=60)
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in workers):
        assert time.monotonic() < deadline, f"workers still running after {how}: {workers}"
        time.sleep(0.1)


def test_a_folder_created_while_converting_is_not_replaced(tmp_path: Path, monkeypatch) -> None:
    """Someone else's folder that appears at the destination during the run is left alone (no --overwrite)."""
    import conversion.staging

    source, out = checkpoint(tmp_path), tmp_path / "model"
    original = conversion.staging.phase

    def someone_else_writes(name: str) -> None:
        if name == "verify":
            out.mkdir()
            (out / "mine.txt").write_text("someone else's work")
        original(name)

    monkeypatch.setattr("conversion.convert_timm.phase", someone_else_writes)
    with pytest.raises(ConversionError, match="appeared while converting; it was left as it is"):
        convert(NAME, out, checkpoint=source)
    assert [p.name for p in out.iterdir()] == ["mine.txt"] and hidden(tmp_path) == []


def edited_card(source: Path, tmp_path: Path) -> Path:
    """A copy of ``source`` whose card has one more line: another version of the same folder to publish."""
    copy = tmp_path / "edited"
    shutil.copytree(source, copy)
    (copy / "README.md").write_text((copy / "README.md").read_text() + "\nFine-tuned notes.\n")
    return copy


def start_push(env: dict, source: Path, repo_id: str, pause: str | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "push_to_hub.py"), str(source), "--repo-id", repo_id],
        cwd=ROOT, env={**env, "VITZOO_PAUSE_AT": pause or ""}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def test_publisher_killed_during_upload_leaves_the_repo_as_it_was(folder, hub, tmp_path: Path) -> None:  # noqa: F811
    state, env = hub
    assert push(env, str(folder), "--repo-id", "vitzoo/tiny").returncode == 0
    before = dict(state.repos["vitzoo/tiny"].refs)
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "push_to_hub.py"), str(edited_card(folder, tmp_path)), "--repo-id", "vitzoo/tiny"],
        cwd=ROOT, env={**env, "VITZOO_PAUSE_AT": "upload"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_for(process, "paused at upload")
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 1 and "interrupted before the commit was sent; the repo is unchanged" in stdout
    assert TOKEN not in stdout + stderr
    assert state.repos["vitzoo/tiny"].refs == before
    again = push(env, str(folder), "--repo-id", "vitzoo/tiny")
    assert again.returncode == 0 and "unchanged: the repo already holds exactly this folder" in again.stdout
    assert hidden(folder.parent) == []  # the snapshot went with the process


def test_interrupted_after_the_commit_is_sent_says_it_may_land_and_the_next_run_reads_the_repo(folder, hub) -> None:  # noqa: F811
    """SIGTERM while the Hub is still processing the commit: the publisher cannot know whether it lands, says so,
    and the next run reads the repo: here the commit did land, so nothing is sent again."""
    state, env = hub
    state.commit_delay = 4.0
    process = start_push(env, folder, "vitzoo/slow")
    deadline = time.monotonic() + 120
    while not any("/commit/" in path for _, path, _ in state.requests):
        assert time.monotonic() < deadline and process.poll() is None, process.stderr.read()[-2000:]
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    stdout, _ = process.communicate(timeout=60)
    assert process.returncode == 1 and "interrupted after the commit was sent: it may still complete" in stdout
    while "main" not in state.repos["vitzoo/slow"].refs or len(state.repos["vitzoo/slow"].commits) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    state.commit_delay = 0.0
    again = push(env, str(folder), "--repo-id", "vitzoo/slow")
    assert again.returncode == 0 and "unchanged: the repo already holds exactly this folder" in again.stdout
    assert [p for p in posts(state) if "/commit/" in p] == ["/api/models/vitzoo/slow/commit/main"]


def test_what_is_uploaded_is_what_was_validated(folder, hub, tmp_path: Path) -> None:  # noqa: F811
    """Weights re-saved into the folder after validation (a training job still writing) are not what is sent: the
    upload carries the validated snapshot, byte for byte."""
    state, env = hub
    copy = tmp_path / "busy"
    shutil.copytree(folder, copy)
    validated = (copy / "model.safetensors").read_bytes()
    process = start_push(env, copy, "vitzoo/busy", pause="upload")
    wait_for(process, "paused at upload")
    tensors = load_file(copy / "model.safetensors")
    save_file({k: v + 1 for k, v in tensors.items()}, copy / "model.safetensors", metadata={"format": "pt"})
    (copy / "vitzoo_parity.json").unlink()
    process.send_signal(signal.SIGUSR1)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-2000:]
    repo = state.repos["vitzoo/busy"]
    published = repo.commits[repo.refs["main"]]
    assert published["model.safetensors"] == validated and "vitzoo_parity.json" in published


def test_unreachable_server_ends_in_the_summary_table(folder, hub) -> None:  # noqa: F811
    _, env = hub
    run = push({**env, "HF_ENDPOINT": "http://127.0.0.1:9"}, str(folder), "--repo-id", "vitzoo/tiny")
    assert run.returncode == 1 and "| vitzoo/tiny | - | failed: " in run.stdout and "Traceback" not in run.stderr


# ---- a full disk --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(mount: Path, size: str = "1m"):
    """A small tmpfs mounted at ``mount`` (CI runs as root; elsewhere the test is skipped, saying why)."""
    mount.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; the tests run as an ordinary user here")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True)
    if result.returncode:
        pytest.skip(f"this machine refuses to mount a tmpfs: {result.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.fixture
def small_disk(tmp_path: Path):
    with tmpfs(tmp_path / "small") as mount:
        yield mount


def test_full_disk_is_one_line_and_leaves_nothing(tmp_path: Path, small_disk: Path) -> None:
    source = checkpoint(tmp_path)  # 1.7 MB of weights, on a 1 MB disk
    command = [sys.executable, "-m", "conversion.convert_timm", NAME, "--checkpoint", str(source)]
    result = subprocess.run(
        [*command, "--output-dir", str(small_disk / "model")], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "No space left on device" in result.stderr and "nothing was left behind" in result.stderr
    assert list(small_disk.iterdir()) == []


# ---- deleting only what is ours ------------------------------------------------------------------------------


def test_overwrite_never_deletes_across_a_mount_point(good) -> None:
    """A folder holding a mount point is not replaced: deleting it would delete the mounted filesystem's files."""
    source, out, before = good
    with tmpfs(out / "data") as mount:
        (mount / "results.txt").write_text("on another filesystem")
        with pytest.raises(ConversionError, match=r"holds a mount point \(.*data\): replacing the folder would"):
            convert(NAME, out, checkpoint=source, overwrite=True)
        assert (mount / "results.txt").read_text() == "on another filesystem"
        assert hidden(out.parent) == [] and {k: v for k, v in folder_digest(out).items() if "data" not in k} == before
        # and the deletion itself stops at a mount point that appears later, saying so instead of ignoring it
        with pytest.raises(DeletionError, match=r"data is a mount point \(another filesystem\): it was not entered"):
            remove_tree(out)
        assert (mount / "results.txt").read_text() == "on another filesystem"
        assert [p.name for p in out.iterdir()] == ["data"]


def test_overwrite_of_a_symlinked_output_replaces_the_link_not_its_target(good, capsys) -> None:
    source, out, before = good
    link = out.parent / "latest"
    link.symlink_to(out.name)
    convert(NAME, link, checkpoint=source, overwrite=True)
    assert "replaced the symbolic link" in capsys.readouterr().out
    assert not link.is_symlink() and (link / "vitzoo_parity.json").is_file()
    assert folder_digest(out) == before  # the target is untouched
    assert hidden(out.parent) == []  # no hidden link left behind


def test_a_running_conversion_in_another_pid_namespace_keeps_its_staging(good) -> None:
    """A conversion in another container (here: a new pid namespace, where its pid means nothing outside) owns its
    staging folder through a lock; a second run into the same folder leaves it alone."""
    source, out, before = good
    if subprocess.run(["unshare", "--user", "--map-root-user", "--pid", "--fork", "true"]).returncode:
        pytest.skip("this machine does not allow new user and pid namespaces")
    convert_command = " ".join(
        [sys.executable, "-m", "conversion.convert_timm", NAME, "--checkpoint", str(source), "--output-dir", str(out)]
    )
    # a pid far above any in use here, so the pid the run records could not be taken for a live process of ours
    shell = f"echo 4000000 > /proc/sys/kernel/ns_last_pid; {convert_command} --overwrite"
    process = subprocess.Popen(
        ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc", "sh", "-c", shell],
        cwd=ROOT, env={**os.environ, "VITZOO_PAUSE_AT": "verify"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    wait_for(process, "paused at verify")
    (staging,) = [name for name in hidden(out.parent) if ".vitzoo-staging-" in name]
    assert clean_stale(out) == []  # the other run's lock is held: nothing of it is touched
    assert staging in hidden(out.parent)
    python = sys.executable.encode() + b"\0-m\0conversion.convert_timm"
    (converter,) = [p for p in descendants(process.pid) if Path(f"/proc/{p}/cmdline").read_bytes().startswith(python)]
    assert Path(f"/proc/{converter}/status").read_text().split("NSpid:")[1].split()[1] == "4000001"
    os.kill(converter, signal.SIGTERM)
    process.communicate(timeout=60)
    assert hidden(out.parent) == [] and folder_digest(out) == before


def descendants(pid: int) -> list[int]:
    children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return children + [d for child in children for d in descendants(child)]


# ---- inputs that must be refused (or accepted) early ---------------------------------------------------------


def test_batch_never_deletes_what_is_not_its_own(tmp_path: Path) -> None:
    source, other = checkpoint(tmp_path), tmp_path / "other.safetensors"
    save_file(perturb(timm.create_model("test_vit"), seed=1).state_dict(), other)
    root = tmp_path / "root"
    (root / NAME).mkdir(parents=True)
    (root / NAME / "notes.txt").write_text("a user's file")
    entries = [batch.Entry(NAME, source)]
    (outcome,) = batch.run(entries, root, "fp32", overwrite=False)
    assert outcome.status.startswith("refused: ") and "--overwrite" in outcome.status
    assert (root / NAME / "notes.txt").read_text() == "a user's file"
    shutil.rmtree(root / NAME)
    assert batch.run(entries, root, "fp32", overwrite=False)[0].status == "converted"
    assert batch.run(entries, root, "fp32", overwrite=False)[0].status == "skipped (done)"
    other_checkpoint = batch.run([batch.Entry(NAME, other)], root, "fp32", overwrite=False)[0]
    assert other_checkpoint.status.startswith("refused: ")  # same tag, other weights: not "done"
    assert batch.run([batch.Entry(NAME, other)], root, "fp32", overwrite=True)[0].status == "converted"


def test_timm_training_checkpoint_converts(tmp_path: Path) -> None:
    """A checkpoint written by timm's own CheckpointSaver (train.py's): it carries args, an argparse.Namespace."""
    model = perturb(timm.create_model("test_vit"))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    args = argparse.Namespace(model="test_vit", lr=0.1, epochs=3, img_size=None, mean=(0.5,), opt="sgd")
    saver = CheckpointSaver(model, optimizer, args=args, checkpoint_dir=str(tmp_path), recovery_dir=str(tmp_path))
    saver.save_checkpoint(epoch=0, metric=0.5)
    saved = tmp_path / "checkpoint-0.pth.tar"
    assert isinstance(torch.load(saved, weights_only=False)["args"], argparse.Namespace)
    result = convert(NAME, tmp_path / "out", checkpoint=saved)
    assert max(result.parity.values()) <= 1e-4
    torch.testing.assert_close(
        load_file(result.output_dir / "model.safetensors")["vit.embeddings.pos_embed"], model.pos_embed.detach()
    )


class Payload:
    def __reduce__(self):
        return (print, ("code ran",))


@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        (
            lambda tmp: {"model_name": "levit_128s"},  # a timm class no family holds (nor plans to)
            "timm class LevitDistilled (timm.models.levit) is not supported yet",
        ),
        (lambda tmp: {"max_shard_size": "2XB"}, "--max-shard-size '2XB' is not a size"),
        (lambda tmp: {"output_dir": _file(tmp)}, "is a file, not a folder"),
        (lambda tmp: {"output_dir": _dangling(tmp)}, "is a dangling symbolic link"),
        (lambda tmp: {"checkpoint": _text(tmp)}, "is not a checkpoint: neither safetensors nor a torch file"),
        (lambda tmp: {"checkpoint": _nan(tmp)}, "tensor blocks.0.mlp.fc1.weight holds 3 NaN/Inf values"),
        (lambda tmp: {"checkpoint": _pickle(tmp)}, "holds Python objects (print) beyond tensors"),
        (lambda tmp: {"checkpoint": _bad_index(tmp)}, "which does not hold it"),
        (lambda tmp: {"labels": _labels(tmp, b"cat\ndog\ncat\n")}, "labels.txt:3 repeats the label 'cat' of line 1"),
        (lambda tmp: {"labels": _labels(tmp, b"cat\n\xff\xfe\n")}, "labels.txt:2 is not UTF-8 text"),
    ],
    ids=["family", "shard_size", "file", "dangling", "text", "nan", "pickle", "index", "duplicate", "utf8"],
)
def test_bad_input_is_refused_naming_the_thing_and_the_fix(tmp_path: Path, prepare, message: str) -> None:
    kwargs = {"model_name": NAME, "output_dir": tmp_path / "out", "checkpoint": checkpoint(tmp_path)}
    kwargs.update(prepare(tmp_path))
    with pytest.raises((ConversionError, ValueError)) as error:
        convert(**kwargs)
    assert message in str(error.value)
    assert not (tmp_path / "out").exists() and hidden(tmp_path) == []


def _file(tmp: Path) -> Path:
    (tmp / "a_file").write_text("x")
    return tmp / "a_file"


def _dangling(tmp: Path) -> Path:
    (tmp / "link").symlink_to(tmp / "nowhere")
    return tmp / "link"


def _text(tmp: Path) -> Path:
    (tmp / "weights.pth").write_text("these are not weights\n")
    return tmp / "weights.pth"


def _nan(tmp: Path) -> Path:
    state = perturb(timm.create_model("test_vit")).state_dict()
    state["blocks.0.mlp.fc1.weight"][0, :3] = float("nan")
    save_file(state, tmp / "nan.safetensors")
    return tmp / "nan.safetensors"


def _pickle(tmp: Path) -> Path:
    state = perturb(timm.create_model("test_vit")).state_dict()
    torch.save({"state_dict": state, "extra": Payload()}, tmp / "evil.pth")
    return tmp / "evil.pth"


def _bad_index(tmp: Path) -> Path:
    state = perturb(timm.create_model("test_vit")).state_dict()
    save_file(state, tmp / "shard.safetensors")
    weight_map = {key: "shard.safetensors" for key in state} | {"extra.weight": "shard.safetensors"}
    (tmp / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return tmp / "model.safetensors.index.json"


def _labels(tmp: Path, data: bytes) -> Path:
    (tmp / "labels.txt").write_bytes(data)
    return tmp / "labels.txt"


def test_content_not_extension_decides_the_format_and_labels_may_have_a_bom(tmp_path: Path) -> None:
    source = checkpoint(tmp_path, num_classes=2)
    renamed = tmp_path / "weights.ckpt"
    source.rename(renamed)
    labels = _labels(tmp_path, "\ufeffcat\ndog\n".encode())
    result = convert(NAME, tmp_path / "out", checkpoint=renamed, labels=labels)
    config = json.loads((result.output_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "cat", "1": "dog"}
    assert oct(result.output_dir.stat().st_mode & 0o777) == "0o755"
    assert {oct(p.stat().st_mode & 0o777) for p in result.output_dir.iterdir()} == {"0o644"}


def test_raw_images_get_a_message_that_says_to_use_the_processor(tmp_path: Path) -> None:
    from vitzoo_hf import VitzooViTConfig, VitzooViTModel

    model = VitzooViTModel(VitzooViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                           num_attention_heads=4, intermediate_size=64))  # fmt: skip
    with pytest.raises(TypeError, match=r"dtype torch\.uint8: raw image values\?.*image processor"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(TypeError, match=r"must be a torch\.Tensor, got numpy\.ndarray.*AutoImageProcessor"):
        model(np.zeros((1, 3, 32, 32), dtype=np.float32))


# ---- secrets and what the publisher runs and sends -----------------------------------------------------------


def test_folder_code_runs_without_credentials(tmp_path: Path, monkeypatch) -> None:
    secrets = {"HF_TOKEN": TOKEN, "HUGGING_FACE_HUB_TOKEN": TOKEN, "AWS_SECRET_ACCESS_KEY": "x", "GITHUB_TOKEN": "y"}
    for key, value in secrets.items():
        monkeypatch.setenv(key, value)
    home = Path.home() / ".cache" / "huggingface"
    child = (
        "import os, json\nfrom huggingface_hub import get_token\n"
        "print(json.dumps({'env': dict(os.environ), 'token': get_token()}))"
    )
    result = subprocess.run([sys.executable, "-c", child], env=untrusted_env(tmp_path), capture_output=True, text=True)
    seen = json.loads(result.stdout)
    assert not set(secrets) & set(seen["env"]) and seen["token"] is None
    assert seen["env"]["HOME"] == str(tmp_path) and str(home) not in seen["env"]["HF_HOME"]
    assert seen["env"]["HF_HUB_OFFLINE"] == "1"


def test_dry_run_smoke_test_cannot_read_the_token(folder, hub, tmp_path: Path) -> None:  # noqa: F811
    """A folder whose code tries to read the token through huggingface_hub (a guarded import, which the import
    rules allow): the smoke test runs it with no credentials reachable."""
    _, env = hub
    copy = tmp_path / "nosy"
    shutil.copytree(folder, copy)
    layers = copy / "token_layers.py"
    layers.write_text(
        layers.read_text()
        + "\ntry:\n    from huggingface_hub import get_token\nexcept ImportError:\n    get_token = None\n"
        + "raise RuntimeError(f'TOKEN SEEN: {get_token()}')\n"  # the error text reaches the publisher's output
    )
    run = push(env, str(copy), "--repo-id", "vitzoo/nosy", "--dry-run", "--trust-code")
    assert "smoke test: each folder's code runs in a clean process with no credentials in its environment" in run.stdout
    assert run.returncode == 1 and "TOKEN SEEN: None" in run.stderr


# What the second fault probe ran: import rules bypassed (torch re-exports os, __builtins__ holds open), the token
# looked for in every visible process's environment and in HF_HOME's token file by absolute path, the Hub called.
HOSTILE = """
from torch.serialization import os as _os
from torch.hub import urlopen as _urlopen
_open = __builtins__["open"] if isinstance(__builtins__, dict) else getattr(__builtins__, "open")
_seen = []
for _pid in [_os.getppid(), *(p for p in _os.listdir("/proc") if p.isdigit())]:
    try:
        _seen.append(_open(f"/proc/{{_pid}}/environ").read())
    except Exception:
        pass
for _path in {paths!r}:
    try:
        _seen.append(_open(_path).read())
    except Exception as _error:
        _seen.append(type(_error).__name__)
try:
    _urlopen("{endpoint}/api/whoami-v2", timeout=3).read()
    _seen.append("NETWORK REACHED")
except Exception:
    pass
raise RuntimeError("PAYLOAD RAN " + "|".join(_seen)[::-1])
"""


def hostile_copy(source: Path, tmp_path: Path, env: dict) -> Path:
    home = Path(env["HF_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "token").write_text(TOKEN)
    paths = [str(home / "token"), str(Path.home() / ".cache" / "huggingface" / "token")]
    copy = tmp_path / "hostile"
    shutil.copytree(source, copy)
    layers = copy / "token_layers.py"
    layers.write_text(layers.read_text() + HOSTILE.format(paths=paths, endpoint=env["HF_ENDPOINT"]))
    return copy


def test_code_that_is_not_a_release_is_refused_unless_trusted(folder, hub, tmp_path: Path) -> None:  # noqa: F811
    """The import rules cannot contain Python (this payload passes them); the publisher knows which code it runs:
    files byte-identical to a vitzoo_hf release's, or what the user says they trust."""
    state, env = hub
    run = push(env, str(hostile_copy(folder, tmp_path, env)), "--repo-id", "vitzoo/hostile", "--dry-run")
    assert run.returncode == 1 and "token_layers.py (is not byte-identical to a vitzoo_hf release's)" in run.stderr
    assert "pass --trust-code" in run.stderr and "PAYLOAD RAN" not in run.stdout + run.stderr
    assert posts(state) == []


def test_trusted_code_runs_isolated_from_token_processes_and_network(folder, hub, tmp_path: Path) -> None:  # noqa: F811
    state, env = hub
    run = push(env, str(hostile_copy(folder, tmp_path, env)), "--repo-id", "vitzoo/hostile", "--trust-code")
    output = run.stdout + run.stderr
    reason = unavailable_reason()
    if reason is not None:  # a machine that cannot isolate: such code never runs, and the refusal says why
        assert run.returncode == 1 and f"this machine cannot run code isolated ({reason})" in output
        assert "PAYLOAD RAN" not in output
        return
    assert run.returncode == 1 and "PAYLOAD RAN" in output, output[-3000:]  # it ran, and failed the smoke test
    assert TOKEN not in output and TOKEN[::-1] not in output and "NETWORK REACHED" not in output
    assert "HF_TOKEN" not in output and "NRUT_FH" not in output  # no other process's environment was readable
    assert posts(state) == [] and not any("whoami" in path for _, path, _ in state.requests)


def test_without_isolation_only_release_code_runs(folder, hub, tmp_path: Path) -> None:  # noqa: F811
    """A machine that cannot isolate (here: no unshare on PATH): trusted code is refused with the reason, a folder of
    release code is still smoke-tested, and the output says it ran unisolated."""
    _, env = hub
    bare = {**env, "PATH": str(tmp_path / "empty")}
    run = push(bare, str(hostile_copy(folder, tmp_path, env)), "--repo-id", "vitzoo/hostile", "--trust-code")
    assert run.returncode == 1 and "PAYLOAD RAN" not in run.stdout + run.stderr
    assert "this machine cannot run code isolated (the unshare program (util-linux) is not installed)" in run.stderr
    release = push(bare, str(folder), "--repo-id", "vitzoo/release", "--dry-run")
    assert release.returncode == 0 and "NOT isolated (the unshare program" in release.stdout, release.stderr[-2000:]


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("try:\n    import subprocess\nexcept ImportError:\n    pass\n", "imports subprocess: process, network"),
        ("import socket\n", "imports socket: process, network"),
        ("from ctypes import CDLL\n", "imports from ctypes: process, network"),
        ("import os\n", "imports os: process, network"),
        ("x = eval('1')\n", "calls eval(): dynamic code"),
        ("def f(:\n", "is not valid Python"),
    ],
    ids=["subprocess", "socket", "ctypes", "os", "eval", "syntax"],
)
def test_code_that_could_escape_is_refused_before_it_runs(folder, hub, tmp_path: Path, code, message) -> None:  # noqa: F811
    state, env = hub
    copy = tmp_path / "escape"
    shutil.copytree(folder, copy)
    (copy / "common_heads.py").write_text(code + (copy / "common_heads.py").read_text())
    run = push(env, str(copy), "--repo-id", "vitzoo/escape", "--dry-run")
    assert run.returncode == 1 and message in run.stderr and "Traceback" not in run.stderr
    assert posts(state) == []


@pytest.mark.parametrize("repo_id", ["bad name/x", "a/b/c", "org/", "../../etc", "noslash"])
def test_repo_ids_are_validated_before_anything_runs(folder, hub, repo_id: str) -> None:  # noqa: F811
    _, env = hub
    run = push(env, str(folder), "--repo-id", repo_id, "--dry-run")
    assert run.returncode == 1 and f"--repo-id {repo_id!r} is not a valid repo id" in run.stderr
    assert "smoke test" not in run.stdout


def test_the_plan_is_exactly_what_is_sent(folder, hub, tmp_path: Path) -> None:  # noqa: F811
    state, env = hub
    copy = tmp_path / "extra"
    shutil.copytree(folder, copy)
    (copy / ".cache").mkdir()
    (copy / ".cache" / "x").write_text("cache")
    (copy / "notes.txt").write_text("stray")
    refused = push(env, str(copy), "--repo-id", "vitzoo/extra", "--dry-run")
    assert refused.returncode == 1 and "files that are not part of a converted folder: ['notes.txt']" in refused.stderr
    (copy / "secret").symlink_to(tmp_path / "token-file")
    (tmp_path / "token-file").write_text(TOKEN)
    linked = push(env, str(copy), "--repo-id", "vitzoo/extra", "--dry-run", "--allow-extra-files")
    assert linked.returncode == 1 and "secret is a symbolic link" in linked.stderr
    (copy / "secret").unlink()
    plan = push(env, str(copy), "--repo-id", "vitzoo/extra", "--dry-run", "--allow-extra-files")
    assert plan.returncode == 0, plan.stderr[-2000:]
    planned = {line.split()[0] for line in plan.stdout.splitlines() if line.startswith("  ") and "bytes" in line}
    assert "not sent (hidden): .cache" in plan.stdout
    sent = push(env, str(copy), "--repo-id", "vitzoo/extra", "--allow-extra-files")
    assert sent.returncode == 0, sent.stderr[-2000:]
    repo = state.repos["vitzoo/extra"]
    assert set(repo.commits[repo.refs["main"]]) - {".gitattributes"} == planned


def test_relative_output_dir_from_another_working_directory(tmp_path: Path, monkeypatch) -> None:
    """The verification scratch lives in the staging folder; a relative destination must still resolve."""
    source = checkpoint(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = convert(NAME, Path("rel") / "model", checkpoint=source)
    assert (tmp_path / "rel" / "model" / "vitzoo_parity.json").is_file() and hidden(tmp_path / "rel") == []
    assert result.output_dir == Path("rel") / "model"


# ---- the second probe's smaller defects, each refused (or accepted) with a message --------------------------


@pytest.mark.parametrize("variant", ["vit", "dinov3", "convnext", "ecaresnetlight_eca"])
def test_empty_batches_and_half_inputs_run_in_every_family(variant: str) -> None:
    from tests.helpers import make_timm, vitzoo_from_timm

    timm_model = make_timm(variant)
    classifier, backbone = (vitzoo_from_timm(timm_model, role) for role in ("classifier", "backbone"))
    with torch.no_grad():
        assert tuple(classifier(torch.randn(0, 3, 32, 32)).logits.shape) == (0, 7)
        assert all(m.shape[0] == 0 for m in backbone(torch.randn(0, 3, 32, 32)).feature_maps)
        half = torch.randn(2, 3, 32, 32).half()  # an fp32 model takes fp16 inputs (cast, as every family does)
        torch.testing.assert_close(classifier(half).logits, classifier(half.float()).logits, atol=0, rtol=0)


@pytest.mark.parametrize(
    ("variant", "size", "message"),
    [
        ("vit", (0, 0), r"an image needs at least 1x1 pixels"),
        ("convnext", (0, 5), r"an image needs at least 1x1 pixels"),
        ("convnext", (7, 7), r"A 7x7 input is too small for this model.*at least 32 pixels a side"),
        ("vit", (7, 7), r"Input size 7x7 is not divisible by the patch size 8x8"),
    ],
)
def test_tiny_inputs_are_explained(variant: str, size: tuple[int, int], message: str) -> None:
    from tests.helpers import make_timm, vitzoo_from_timm

    model = vitzoo_from_timm(make_timm(variant), "classifier")
    with pytest.raises(ValueError, match=message):
        model(torch.randn(1, 3, *size), interpolate_pos_encoding=True)


def test_resnet_takes_a_one_pixel_image_as_timm_does() -> None:
    from tests.helpers import make_timm, vitzoo_from_timm

    timm_model = make_timm("resnet50")
    x = torch.randn(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(vitzoo_from_timm(timm_model, "classifier")(x).logits, timm_model(x))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"num_hidden_layers": 10**6}, r"num_hidden_layers=1000000 is outside 0..1024"),
        ({"patch_size": 0}, r"patch_size=0 is outside 1..1024"),
        ({"hidden_size": -32}, r"hidden_size=-32 is outside 1..65536"),
    ],
)
def test_absurd_config_values_are_refused_before_building(fields: dict, message: str) -> None:
    from vitzoo_hf import VitzooViTConfig, VitzooViTModel

    base = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=4)
    start = time.monotonic()
    with pytest.raises(ValueError, match=message):
        VitzooViTModel(VitzooViTConfig(**{**base, "intermediate_size": 64, **fields}))
    assert time.monotonic() - start < 10  # refused, not built


def test_stage_widths_and_processor_sizes_are_bounded() -> None:
    from vitzoo_hf import VitzooConvNextConfig, VitzooConvNextModel, VitzooImageProcessor

    with pytest.raises(ValueError, match=r"hidden_sizes=\[16, -1, 32, 48\] is outside 1..65536"):
        VitzooConvNextModel(VitzooConvNextConfig(depths=[1, 1, 1, 1], hidden_sizes=[16, -1, 32, 48]))
    with pytest.raises(ValueError, match=r"size must hold whole pixel counts from 1 to 16384"):
        VitzooImageProcessor(size={"shortest_edge": 0})
    assert tuple(VitzooImageProcessor(size={"shortest_edge": 32})([], return_tensors="pt")["pixel_values"].shape) == (
        0, 3, 32, 32,
    )  # fmt: skip


def test_a_config_of_another_family_is_refused_by_model_type(tmp_path: Path) -> None:
    from vitzoo_hf import VitzooEvaConfig, VitzooViTConfig

    VitzooEvaConfig(image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                    intermediate_size=128).save_pretrained(tmp_path)  # fmt: skip
    with pytest.raises(ValueError, match=r"This config is for model_type 'vitzoo_eva', not 'vitzoo_vit'"):
        VitzooViTConfig.from_pretrained(tmp_path)


def test_an_unsupported_layout_is_refused_before_any_download(tmp_path: Path, monkeypatch) -> None:
    downloads = []
    create = timm.create_model

    def spy(name, pretrained=False, **kwargs):
        downloads.append(name) if pretrained else None
        return create(name, pretrained=pretrained, **kwargs)

    monkeypatch.setattr(timm, "create_model", spy)
    with pytest.raises(ValueError, match="block type DiffParallelScalingBlock is not supported"):
        convert("vit_dpwee_patch16_reg1_gap_256.sbb_in1k", tmp_path / "out")
    assert downloads == [] and not (tmp_path / "out").exists()


def _resnet_state(**kwargs) -> dict[str, torch.Tensor]:
    return perturb(timm.create_model("test_resnet", **kwargs)).state_dict()


@pytest.mark.parametrize(
    ("edit", "extra", "message"),
    [
        (lambda s: s["fc.weight"].__setitem__((0, 0), 1e6), {"dtype": "fp16"}, "does not fit torch.float16"),
        (lambda s: s["bn1.running_var"].__setitem__(0, -0.5), {}, "BatchNorm variance bn1.running_var has 1 negative"),
        (lambda s: s.update({f"model.{k}": s.pop(k) for k in list(s)}), {}, "Every key starts with 'model.'"),
        (lambda s: s.update({f"features.{k}": s.pop(k) for k in list(s)}), {}, "look like a torchvision model's"),
    ],
    ids=["fp16_overflow", "negative_variance", "wrapper_prefix", "torchvision"],
)
def test_broken_or_foreign_weights_are_refused_naming_the_cause(tmp_path: Path, edit, extra, message) -> None:
    state = _resnet_state()
    edit(state)
    save_file(state, tmp_path / "ckpt.safetensors")
    with pytest.raises(ConversionError, match=message):
        convert("test_resnet.r160_in1k", tmp_path / "out", checkpoint=tmp_path / "ckpt.safetensors", **extra)
    assert not (tmp_path / "out").exists() and hidden(tmp_path) == []


def test_features_only_checkpoints_are_named_as_such(tmp_path: Path) -> None:
    model = timm.create_model("test_convnext", features_only=True)
    save_file(perturb(model).state_dict(), tmp_path / "features.safetensors")
    with pytest.raises(ConversionError, match="timm's features_only names"):
        convert("test_convnext.r160_in1k", tmp_path / "out", checkpoint=tmp_path / "features.safetensors")


def test_batchnorm_checkpoints_without_step_counters_convert(tmp_path: Path) -> None:
    state = {k: v for k, v in _resnet_state().items() if not k.endswith("num_batches_tracked")}
    save_file(state, tmp_path / "old.safetensors")
    result = convert("test_resnet.r160_in1k", tmp_path / "out", checkpoint=tmp_path / "old.safetensors")
    assert max(result.parity.values()) <= 1e-5


def test_the_record_names_the_checkpoint_but_not_where_it_lives(tmp_path: Path) -> None:
    source = checkpoint(tmp_path)
    result = convert(NAME, tmp_path / "out", checkpoint=source)
    text = (result.output_dir / "vitzoo_parity.json").read_text()
    assert json.loads(text)["checkpoint"].keys() == {"name", "size", "mtime_ns"}
    assert str(tmp_path) not in text and "path" not in text


def test_labels_with_control_characters_are_refused(tmp_path: Path) -> None:
    from conversion.convert_timm import read_labels

    with pytest.raises(ConversionError, match=r"labels.txt:2 holds a control character \('\\x1b'\)"):
        read_labels(_labels(tmp_path, b"cat\ndog\x1b[2J\n"))


def test_a_mistyped_token_flag_never_echoes_its_value(folder, hub) -> None:  # noqa: F811
    _, env = hub
    for arguments in (["--tokn", "SECRETVALUE"], ["--tokn=SECRETVALUE"], ["SECRETVALUE"]):
        run = push(env, str(folder), "--repo-id", "vitzoo/x", "--dry-run", *arguments)
        assert run.returncode == 2 and "SECRETVALUE" not in run.stdout + run.stderr
        assert "unrecognized arguments (values not shown" in run.stderr
