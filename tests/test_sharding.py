"""Conversion past one machine: ``--shard K/N`` splits a sweep or a batch, each shard resumes, a merge checks the set.

The shards run as a job array would: separate processes at the same time, one of them killed (SIGKILL: no handler
runs) and rerun."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import timm
from safetensors.torch import save_file

from conversion.sharding import Shard, parse_shard
from conversion.sweep import supported_tags
from tests.helpers import perturb

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("count", [1, 2, 3, 7, 20])
def test_shards_split_every_item_once_and_evenly(count: int) -> None:
    items = [f"tag{i}" for i in range(11)]
    shares = [Shard(k, count).take(items) for k in range(1, count + 1)]
    assert sorted(x for share in shares for x in share) == sorted(items)
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert shares == [Shard(k, count).take(items) for k in range(1, count + 1)]  # the same split every time


@pytest.mark.parametrize(
    ("text", "message"),
    [("3", "expected K/N"), ("0/4", "out of range"), ("5/4", "out of range"), ("a/b", "expected K/N")],
)
def test_bad_shards_are_explained(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        parse_shard(text)
    assert parse_shard(" 2 / 4 ") == Shard(2, 4)


def _start(args: list[str], pause: bool = False) -> subprocess.Popen:
    env = {**os.environ, **({"VITZOO_PAUSE_AT": "verify"} if pause else {})}
    return subprocess.Popen(
        [sys.executable, "-m", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True)


def _line_with(process: subprocess.Popen, text: str) -> str:
    """The first line of the process's output holding ``text`` (its progress lines come before)."""
    for line in process.stdout:
        if text in line:
            return line
    raise AssertionError(f"the process ended without printing {text!r}: {process.stderr.read()[-2000:]}")


def _kill_after_first_result(process: subprocess.Popen, results: Path) -> None:
    """Let the shard finish its first item, then SIGKILL it while it verifies another."""
    line = _line_with(process, "paused at verify")
    os.kill(int(line.rsplit("pid ", 1)[1].rstrip(")\n")), signal.SIGUSR1)  # the shard or its pool worker
    deadline = time.monotonic() + 120
    while not (results.is_file() and json.loads(results.read_text())["results"]):
        ended = process.poll() is not None
        if ended and results.is_file() and json.loads(results.read_text())["results"]:
            break  # it recorded the result, then ended: read below
        assert time.monotonic() < deadline and not ended, (
            f"the shard never recorded its first result: {process.stdout.read()[-2000:]}"
            f" {process.stderr.read()[-4000:]}"
        )
        time.sleep(0.2)
    _line_with(process, "paused at verify")
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)


def test_sweep_shards_in_parallel_one_killed_and_rerun_merge_to_the_whole_sweep(tmp_path: Path) -> None:
    tags = supported_tags("test_")  # every registered family's tiny test models, three of them refused
    assert len(tags) >= 9
    results = tmp_path / "results"
    shard = ["conversion.sweep", "--filter", "test_", "--depth", "1", "--results-dir", str(results)]
    killed = _start([*shard, "--shard", "2/3"], pause=True)
    others = [_start([*shard, "--shard", f"{k}/3"]) for k in (1, 3)]
    _kill_after_first_result(killed, results / "sweep-2-of-3.json")
    for process in others:
        process.communicate(timeout=600)
    merged = _run(["conversion.sweep", "--merge", str(results), "--json", str(tmp_path / "all.json")])
    assert merged.returncode == 2 and not (tmp_path / "all.json").exists()
    assert "shard 2/3:" in merged.stderr and "without a result" in merged.stderr, merged.stderr
    rerun = _run([*shard, "--shard", "2/3"])
    assert "resuming shard 2/3: 1/" in rerun.stdout, rerun.stdout + rerun.stderr[-2000:]
    first = json.loads((results / "sweep-2-of-3.json").read_text())["items"][0]
    assert f" {first}:" not in rerun.stdout  # verified before the kill: not converted again
    merged = _run(["conversion.sweep", "--merge", str(results), "--json", str(tmp_path / "all.json")])
    summary = json.loads((tmp_path / "all.json").read_text())
    assert [r["tag"] for r in summary] == tags
    refused = sorted(r["tag"] for r in summary if not r["ok"])
    assert refused == [f"test_efficientnet_{k}.r160_in1k" for k in ("evos", "gn", "ln")], refused
    assert merged.returncode == 1 and f"{len(tags) - 3}/{len(tags)} converted with parity" in merged.stdout
    other = _run(["conversion.sweep", "--filter", "test_vit", "--shard", "1/3", "--results-dir", str(results)])
    assert other.returncode != 0 and "another selection" in other.stderr  # never mixed into this run's files


def _checkpoint(folder: Path, name: str, seed: int) -> Path:
    path = folder / f"{name}.safetensors"
    save_file(perturb(timm.create_model(name), seed=seed).state_dict(), path)
    return path


def test_batch_shards_in_parallel_one_killed_and_rerun_merge_to_one_table(tmp_path: Path) -> None:
    names = ["test_vit", "test_vit2", "test_vit3", "test_convnext", "test_resnet", "test_efficientnet"]
    manifest = tmp_path / "manifest.txt"
    manifest.write_text("".join(f"{n} {_checkpoint(tmp_path, n, i)}\n" for i, n in enumerate(names)))
    root = tmp_path / "out"
    shard = ["conversion.batch", str(manifest), "--output-root", str(root)]
    killed = _start([*shard, "--shard", "1/3"], pause=True)  # test_vit, test_convnext
    others = [_start([*shard, "--shard", f"{k}/3"]) for k in (2, 3)]
    _kill_after_first_result(killed, root / "batch-1-of-3.json")
    for process in others:
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, out + err[-2000:]
    unfinished = _run(["conversion.batch", "--merge", str(root)])
    assert unfinished.returncode == 2 and "shard 1/3: 1 of 2 without a result (e.g. test_convnext)" in unfinished.stderr
    assert not (root / "test_convnext").exists()  # the conversion killed under way is not in place
    rerun = _run([*shard, "--shard", "1/3"])
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr[-2000:]
    assert "| test_vit | " in rerun.stdout and "skipped (done)" in rerun.stdout
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == []  # the dead run's staging is gone
    merged = _run(["conversion.batch", "--merge", str(root)])
    assert merged.returncode == 0, merged.stdout + merged.stderr
    rows = [line.split(" | ")[0].strip("| ") for line in merged.stdout.splitlines() if line.startswith("| test_")]
    assert rows == names and "6/6 done, 0 failed" in merged.stdout
    for name in names:
        assert json.loads((root / name / "config.json").read_text())["timm_model_name"] == name
