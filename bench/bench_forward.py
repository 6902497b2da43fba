"""Forward throughput: vitzoo_hf vs timm vs transformers' native port, the same weights in each.

    python bench/bench_forward.py [--device cpu|cuda] [--dtype fp32|bf16|fp16] [--reps 6] [--processes 4]
        [--compile] [--out FILE]

Per config, batch size and attention implementation, the three models run interleaved after warm-up, the order
rotating each repetition (timm, ours, native; ours, native, timm; ...), in each of ``--processes`` fresh
interpreters (see ``in_fresh_processes``); each repetition gives one time per model, and the reported ratio is the
median over all repetitions of timm_time / ours_time (> 1: we are faster), with the interquartile range. Outputs
are compared first: ours and the native port against timm's forward_features. Also measured, in this process: how
the cost grows with the input size (224, 320, 448) for ours against timm. Markdown on stdout, JSON in --out.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import timm
import torch
import transformers

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from native_ports import PORTS  # noqa: E402

from conversion.families import family_for  # noqa: E402

CONFIGS = [  # (label, timm name, native port, input size); the slowest last, so a capped CPU run loses least
    ("ViT-S/16", "vit_small_patch16_224", "vit", 224),
    ("ViT-B/16", "vit_base_patch16_224", "vit", 224),
    ("DINOv2-S/14", "vit_small_patch14_dinov2", "dinov2", 224),
    ("DINOv3-S/16", "vit_small_patch16_dinov3", "dinov3", 224),
    ("DINOv2-S/14", "vit_small_patch14_dinov2", "dinov2", 518),
]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build(name: str, port: str, attn: str, device: str, dtype: torch.dtype):
    kwargs = {"dynamic_img_size": True}
    if "dinov3" in name:
        kwargs["global_pool"] = "token"
    reference = timm.create_model(name, pretrained=False, **kwargs).eval()
    hooks = family_for(reference)
    config = hooks.config_from_timm(reference)
    config._attn_implementation = attn
    ours = hooks.family.model(config)
    ours.load_state_dict(hooks.convert_state_dict(reference.state_dict(), with_head=False), strict=True)
    native = PORTS[port](reference, attn)
    for module in reference.modules():  # timm's own switch between fused (sdpa) and explicit attention
        if hasattr(module, "fused_attn"):
            module.fused_attn = attn == "sdpa"
    return [m.to(device=device, dtype=dtype).eval() for m in (reference, ours.eval(), native)]


def runners(models, size: int, native_size: int):
    reference, ours, native = models
    interpolate = size != native_size
    run_timm = lambda x: reference.forward_features(x)  # noqa: E731
    run_ours = lambda x: ours(x, interpolate_pos_encoding=interpolate).last_hidden_state  # noqa: E731
    # ViTModel needs the flag at other sizes; Dinov2Model and DINOv3ViTModel always interpolate.
    kwargs = {"interpolate_pos_encoding": True} if interpolate and isinstance(native, transformers.ViTModel) else {}
    run_native = lambda x: native(pixel_values=x, **kwargs).last_hidden_state  # noqa: E731
    return {"timm": run_timm, "ours": run_ours, "native": run_native}


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_interleaved(run: dict, x: torch.Tensor, reps: int, warmup: int, device: str) -> dict[str, list[float]]:
    """One time per model per repetition; the order rotates each repetition, so no model always runs right after
    the same other one (caches and the allocator's state carry over between calls)."""
    times = {name: [] for name, fn in run.items() if fn is not None}
    names = list(times)
    with torch.inference_mode():
        for _ in range(warmup):
            for name in names:
                run[name](x)
        for rep in range(reps):
            shift = rep % len(names)
            for name in names[shift:] + names[:shift]:
                sync(device)
                start = time.perf_counter()
                run[name](x)
                sync(device)
                times[name].append(time.perf_counter() - start)
    return times


def in_fresh_processes(measure: Callable[[dict], dict], cell: dict, processes: int) -> dict:
    """``measure(cell)`` in ``processes`` new interpreters, one after another, merged: the largest output
    difference, and per batch every process's times (each keeps its repetitions aligned across models); any other
    entry (counts that do not vary, such as module calls) as the first process gave it.

    Why: on the CPU, a process's allocator settles into a state (which large buffers come back as fresh pages,
    where huge pages land) that holds for its whole life; the same three models measured in one process each
    rank steadily, but in another process the ranking can flip by 10%. One process gives a tight interquartile
    range around an accident; several give the spread a user's process can land in."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter, not a fork of this one's heap
    merged = {"diffs": {}, "times": {}}
    for _ in range(processes):
        with context.Pool(1) as pool:
            result = pool.apply(measure, (cell,))
        for key, value in result.items():
            merged.setdefault(key, value)
        for name, diff in result["diffs"].items():
            merged["diffs"][name] = max(diff, merged["diffs"].get(name, 0.0))
        for batch, times in result["times"].items():
            into = merged["times"].setdefault(batch, {name: [] for name in times})
            for name, values in times.items():
                into[name].extend(values)
    return merged


def ratio_stats(numerator: list[float], denominator: list[float]) -> dict:
    ratios = sorted(n / d for n, d in zip(numerator, denominator, strict=True))
    quartiles = statistics.quantiles(ratios, n=4)
    return {"median": statistics.median(ratios), "q1": quartiles[0], "q3": quartiles[2]}


def check_outputs(run: dict, x: torch.Tensor) -> dict[str, float]:
    with torch.inference_mode():
        reference = run["timm"](x).float()
        return {
            name: float((fn(x).float() - reference).abs().max())
            for name, fn in run.items()
            if fn is not None and name != "timm"
        }


def measure(cell: dict) -> dict:
    """One process's share of a (config, attention) cell: output differences, then times per batch."""
    torch.set_num_threads(cell["threads"])
    torch.manual_seed(0)
    device, dtype, size = cell["device"], DTYPES[cell["dtype"]], cell["size"]
    models = build(cell["name"], cell["port"], cell["attn"], device, dtype)
    native_size = models[0].patch_embed.img_size[0]
    if cell["compile"]:
        models = [torch.compile(m) for m in models]
    run = runners(models, size, native_size)
    diffs = check_outputs(run, torch.randn(2, 3, size, size, device=device, dtype=dtype))
    times = {}
    for batch in cell["batches"]:
        x = torch.randn(batch, 3, size, size, device=device, dtype=dtype)
        times[batch] = time_interleaved(run, x, cell["reps"], cell["warmup"], device)
    return {"diffs": diffs, "times": times}


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def _ratio_cell(stats: dict) -> str:
    return f"{stats['median']:.2f}x ({stats['q1']:.2f}-{stats['q3']:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--attn", nargs="+", default=["eager", "sdpa"])
    parser.add_argument("--reps", type=int, default=6, help="repetitions per process")
    parser.add_argument("--processes", type=int, default=4, help="fresh interpreters per cell")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="torch.compile every model first")
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--only", nargs="+", default=None, help="configs to run: a label or label@size")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "forward_cpu.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = DTYPES[args.dtype]
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else _cpu_name()
    meta = {
        "device": device_name,
        "threads": args.threads,
        "dtype": args.dtype,
        "compile": args.compile,
        "reps": args.reps,
        "processes": args.processes,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "timm": timm.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    rows, scaling = [], []
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        """After every row, so an interrupted run (a long CPU grid) keeps what it measured."""
        args.out.write_text(json.dumps({"meta": meta, "rows": rows, "scaling": scaling}, indent=1) + "\n")

    for label, name, port, size in CONFIGS:
        if args.only and label not in args.only and f"{label}@{size}" not in args.only:
            continue
        for attn in args.attn:
            cell = {"name": name, "port": port, "size": size, "attn": attn}
            cell.update({key: getattr(args, key) for key in ("device", "dtype", "batches", "reps", "warmup")})
            cell.update({key: getattr(args, key) for key in ("threads", "compile")})
            result = in_fresh_processes(measure, cell, args.processes)
            for batch, times in result["times"].items():
                row = {
                    "config": f"{label} @ {size}",
                    "attn": attn,
                    "batch": batch,
                    "median_ms": {k: 1000 * statistics.median(v) for k, v in times.items()},
                    "ours_vs_timm": ratio_stats(times["timm"], times["ours"]),
                    "ours_vs_native": ratio_stats(times["native"], times["ours"]),
                    "max_abs_diff_vs_timm": result["diffs"],
                }
                rows.append(row)
                save()
                print(json.dumps(row), flush=True)
    if not args.skip_scaling:
        models = build("vit_base_patch16_224", "vit", "sdpa", args.device, dtype)
        for size in (224, 320, 448):
            run = runners(models, size, 224)
            run["native"] = None
            x = torch.randn(1, 3, size, size, device=args.device, dtype=dtype)
            times = time_interleaved(run, x, max(5, args.reps // 2), args.warmup, args.device)
            scaling.append({"size": size, **{k: 1000 * statistics.median(v) for k, v in times.items()}})
            print(json.dumps(scaling[-1]), flush=True)
    save()
    print(f"\n{meta}\n")
    print("| config | attn | batch | ours ms | timm ms | native ms | ours vs timm (IQR) | ours vs native (IQR) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ms = r["median_ms"]
        vs_timm = r["ours_vs_timm"]
        vs_native = r["ours_vs_native"]
        native_cell = _ratio_cell(vs_native) if vs_native else "-"
        print(
            f"| {r['config']} | {r['attn']} | {r['batch']} | {ms['ours']:.1f} | {ms['timm']:.1f} | "
            f"{ms.get('native', float('nan')):.1f} | {_ratio_cell(vs_timm)} | {native_cell} |"
        )
    if scaling:
        base = scaling[0]
        print("\n| input | ours ms | timm ms | ours growth | timm growth |\n|---|---|---|---|---|")
        for s in scaling:
            print(
                f"| {s['size']} | {s['ours']:.1f} | {s['timm']:.1f} | {s['ours'] / base['ours']:.2f}x | "
                f"{s['timm'] / base['timm']:.2f}x |"
            )


if __name__ == "__main__":
    main()
