"""Conversion cost vs model size: wall time and peak memory, DINOv3 S / B / L / H+ / 7B, streaming in bf16.

    python bench/bench_conversion.py [--sizes s b l hplus 7b] [--dtype bf16] [--shard-size 2GB] [--out FILE]

Each checkpoint is synthetic (random bf16 tensors with the architecture's exact names and shapes, written
shard by shard from timm built on the meta device: no hub, no model in memory). The converter runs as a
subprocess of this script, which samples its memory every 50 ms from /proc: peak anonymous memory (what
the process holds; pages of the memory-mapped checkpoint are reclaimable page cache) and peak RSS, for the
converter and its verification child. Results: a Markdown table on stdout and JSON in --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import timm
import torch
import transformers

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from conversion.checkpoints import INDEX_NAME, write_shards  # noqa: E402
from conversion.convert_timm import family_of  # noqa: E402

SIZES = {
    "s": "vit_small_patch16_dinov3",
    "b": "vit_base_patch16_dinov3",
    "l": "vit_large_patch16_dinov3",
    "hplus": "vit_huge_plus_patch16_dinov3",
    "7b": "vit_7b_patch16_dinov3",
}


def synthetic_checkpoint(name: str, folder: Path, shard_size: str) -> tuple[Path, int]:
    with torch.device("meta"):
        skeleton = timm.create_model(name, pretrained=False, num_classes=0, **family_of(name).reference_kwargs(name))
    shapes = {k: v.shape for k, v in skeleton.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    tensors = (
        (k, torch.randn(shape, generator=generator).mul_(0.02).to(torch.bfloat16)) for k, shape in shapes.items()
    )
    files = write_shards(folder, tensors, shard_size)
    checkpoint = folder / (INDEX_NAME if INDEX_NAME in files else files[0])
    return checkpoint, sum(p.numel() for p in skeleton.parameters())


def _status(pid: int) -> dict[str, int]:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    fields = {}
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("RssAnon", "VmRSS"):
            fields[key] = int(value.split()[0]) * 1024
    return fields


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def run_measured(command: list[str]) -> dict:
    """Run ``command``; sample peak anonymous memory and RSS of it and its children, per converter phase."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    state = {"phase": "setup", "lines": []}

    def follow() -> None:
        for line in process.stdout:
            state["lines"].append(line.rstrip())
            if line.startswith("writing "):
                state["phase"] = "write"
            elif line.startswith("verifying"):
                state["phase"] = "verify"

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    peaks: dict[str, int] = {}
    while process.poll() is None:
        phase = state["phase"]
        samples = {"converter": _status(process.pid)}
        for child in _children(process.pid):
            samples["verifier"] = _status(child)
        for who, status in samples.items():
            for field, key in (("RssAnon", "anon"), ("VmRSS", "rss")):
                name = f"{phase}_{who}_{key}"
                peaks[name] = max(peaks.get(name, 0), status.get(field, 0))
        time.sleep(0.05)
    reader.join()
    if process.returncode:
        raise RuntimeError("conversion failed:\n" + "\n".join(state["lines"][-30:]))
    return {"seconds": round(time.perf_counter() - start, 1), **peaks, "log": state["lines"][-3:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--dtype", default="bf16")
    parser.add_argument("--shard-size", default="2GB")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "conversion.json")
    parser.add_argument("--workdir", type=Path, default=None, help="where checkpoints and folders go (large)")
    args = parser.parse_args()
    rows = []
    gib = 2**30
    for size in args.sizes:
        name = SIZES[size]
        work = Path(tempfile.mkdtemp(prefix=f"bench-{size}-", dir=args.workdir))
        try:
            checkpoint_dir = work / "checkpoint"
            checkpoint_dir.mkdir()
            checkpoint, params = synthetic_checkpoint(name, checkpoint_dir, args.shard_size)
            command = [sys.executable, "-m", "conversion.convert_timm", name, "--checkpoint", str(checkpoint)]
            command += ["--output-dir", str(work / "out"), "--dtype", args.dtype, "--max-shard-size", args.shard_size]
            result = run_measured(command)
            weights = sum(p.stat().st_size for p in (work / "out").glob("*.safetensors"))
            rows.append({"model": name, "parameters": params, "weights_bytes": weights, **result})
            peak = result.get("write_converter_anon", 0) / gib
            print(f"{name}: {result['seconds']} s, peak anon while writing {peak:.2f} GiB", flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    meta = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, "
        f"{Path('/proc/meminfo').read_text().split()[1]} kB RAM",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "timm": timm.__version__,
        "dtype": args.dtype,
        "shard_size": args.shard_size,
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"\n{meta}\n")
    headers = "| model | parameters | seconds | weights | writing: peak anon | writing: peak RSS | verifying: peak anon"
    print(headers + " (converter + child) | verified |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        verify = (r.get("verify_converter_anon", 0) + r.get("verify_verifier_anon", 0)) / gib
        scope = next((line for line in r["log"] if "verified in a clean process" in line), "")
        scope = scope.split("(")[1].split(")")[0] if "(" in scope else "?"
        print(
            f"| {r['model']} | {r['parameters'] / 1e9:.2f} B | {r['seconds']} | {r['weights_bytes'] / gib:.2f} GiB | "
            f"{r.get('write_converter_anon', 0) / gib:.2f} GiB | {r.get('write_converter_rss', 0) / gib:.2f} GiB | "
            f"{verify:.2f} GiB | {scope} |"
        )


if __name__ == "__main__":
    main()
