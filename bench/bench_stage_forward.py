"""Forward throughput of the stage (CNN) families: vitzoo_hf vs timm vs transformers' native port, same weights.

    python bench/bench_stage_forward.py [--device cpu|cuda] [--dtype fp32|bf16] [--reps 6] [--processes 4]
        [--compile] [--out FILE]

Per config, batch size and memory format (contiguous, channels_last), the three models run interleaved after
warm-up, the order rotating each repetition, in each of ``--processes`` fresh interpreters (a process's allocator
state favours one model or another for its whole life); the reported ratio is the median over all repetitions of
other_time / ours_time (> 1: we are faster), with the interquartile range. Each model runs the whole network to
the pooled pre-logits (the one output all three define alike; DINOv3 ConvNeXt's native last_hidden_state is a
token list), and the outputs are compared with timm first. Markdown on stdout, JSON in --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import timm
import torch
import transformers

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_forward import (  # noqa: E402
    DTYPES,
    _cpu_name,
    _ratio_cell,
    check_outputs,
    in_fresh_processes,
    ratio_stats,
    time_interleaved,
)
from native_ports import PORTS  # noqa: E402

from conversion.families import family_for  # noqa: E402

CONFIGS = [  # (label, timm name, timm kwargs, native port or None where transformers has none)
    ("ConvNeXt-T", "convnext_tiny", {}, "convnext"),
    ("ConvNeXt-V2-T", "convnextv2_tiny", {}, "convnext"),
    ("DINOv3 ConvNeXt-T", "convnext_tiny", {"num_classes": 0}, "dinov3_convnext"),
    ("ConvNeXt-B", "convnext_base", {}, "convnext"),
    ("ResNet-18", "resnet18", {}, "resnet"),
    ("ResNet-50", "resnet50", {}, "resnet"),
    # the native EfficientNet pads as TF does (a pixel right and bottom): equal on tf_ weights, not on PyTorch's
    ("EfficientNet-B0", "efficientnet_b0", {}, "efficientnet"),
    ("TF-EfficientNet-B0", "tf_efficientnet_b0", {}, "efficientnet"),
    ("TF-EfficientNetV2-S", "tf_efficientnetv2_s", {}, None),
    ("MobileNetV2-1.0", "mobilenetv2_100", {}, "mobilenet_v2"),
    ("MobileNetV3-L", "mobilenetv3_large_100", {}, None),
    ("MobileNetV4-conv-S", "mobilenetv4_conv_small", {}, None),
]


def build(name: str, kwargs: dict, port: str, device: str, dtype: torch.dtype, channels_last: bool) -> list:
    reference = timm.create_model(name, pretrained=False, **kwargs).eval()
    with torch.no_grad():  # away from timm's init (zero biases, LayerScale 1e-6), which hides mapping bugs
        for tensor in reference.state_dict().values():
            if tensor.is_floating_point():  # not BatchNorm's batch counter
                tensor.add_(torch.randn_like(tensor) * 0.02)
    hooks = family_for(reference)
    ours = hooks.family.model(hooks.config_from_timm(reference))
    ours.load_state_dict(hooks.convert_state_dict(reference.state_dict(), with_head=False), strict=True)
    native = PORTS[port](reference) if port else None
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return [
        m.to(device=device, dtype=dtype, memory_format=memory_format).eval() if m is not None else None
        for m in (reference, ours, native)
    ]


def runners(models) -> dict:
    reference, ours, native = models
    return {
        "timm": lambda x: reference.forward_head(reference.forward_features(x), pre_logits=True),
        "ours": lambda x: ours(x).pooler_output,
        # ResNetModel's is (B, C, 1, 1)
        "native": (lambda x: native(pixel_values=x).pooler_output.flatten(1)) if native is not None else None,
    }


def module_calls(run: dict, x: torch.Tensor) -> dict[str, int]:
    """Module forwards per model call: the Python overhead that dominates a small CNN at batch 1."""
    calls: dict[str, int] = {}
    current = [""]

    def count(*_) -> None:
        calls[current[0]] += 1

    handle = torch.nn.modules.module.register_module_forward_hook(count)
    try:
        with torch.inference_mode():
            for name, fn in run.items():
                if fn is not None:
                    current[0], calls[name] = name, 0
                    fn(x)
    finally:
        handle.remove()
    return calls


def measure(cell: dict) -> dict:
    """One process's share of a (config, memory format) cell: output differences, then times per batch."""
    torch.set_num_threads(cell["threads"])
    torch.manual_seed(0)
    device, dtype, channels_last = cell["device"], DTYPES[cell["dtype"]], cell["channels_last"]
    models = build(cell["name"], cell["kwargs"], cell["port"], device, dtype, channels_last)
    calls = module_calls(runners(models), torch.randn(1, 3, 32, 32, device=device, dtype=dtype))
    if cell["compile"]:
        models = [torch.compile(m) if m is not None else None for m in models]
    run = runners(models)

    def batch_of(n: int) -> torch.Tensor:
        x = torch.randn(n, 3, cell["size"], cell["size"], device=device, dtype=dtype)
        return x.to(memory_format=torch.channels_last) if channels_last else x

    diffs = check_outputs(run, batch_of(2))
    times = {
        batch: time_interleaved(run, batch_of(batch), cell["reps"], cell["warmup"], device) for batch in cell["batches"]
    }
    return {"diffs": diffs, "times": times, "module_calls": calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--formats", nargs="+", default=["contiguous", "channels_last"])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--reps", type=int, default=6, help="repetitions per process")
    parser.add_argument("--processes", type=int, default=4, help="fresh interpreters per cell")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="torch.compile every model first")
    parser.add_argument("--only", nargs="+", default=None, help="labels to run")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "stage_forward_cpu.json")
    args = parser.parse_args()
    meta = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else _cpu_name(),
        "threads": args.threads,
        "dtype": args.dtype,
        "compile": args.compile,
        "reps": args.reps,
        "processes": args.processes,
        "size": args.size,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "timm": timm.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    rows = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for label, name, kwargs, port in CONFIGS:
        if args.only and label not in args.only:
            continue
        for memory_format in args.formats:
            cell = {
                "name": name,
                "kwargs": kwargs,
                "port": port,
                "channels_last": memory_format == "channels_last",
                **{key: getattr(args, key) for key in ("device", "dtype", "size", "batches", "reps", "warmup")},
                **{key: getattr(args, key) for key in ("threads", "compile")},
            }
            result = in_fresh_processes(measure, cell, args.processes)
            for batch, times in result["times"].items():
                row = {
                    "config": f"{label} @ {args.size}",
                    "format": memory_format,
                    "batch": batch,
                    "median_ms": {k: 1000 * statistics.median(v) for k, v in times.items()},
                    "ours_vs_timm": ratio_stats(times["timm"], times["ours"]),
                    "ours_vs_native": ratio_stats(times["native"], times["ours"]) if "native" in times else None,
                    "max_abs_diff_vs_timm": result["diffs"],
                    "module_calls": result["module_calls"],
                }
                rows.append(row)
                args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
                print(json.dumps(row), flush=True)
    print(f"\n{meta}\n")
    print("| config | format | batch | ours ms | timm ms | native ms | ours vs timm (IQR) | ours vs native (IQR) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ms, native = r["median_ms"], r["ours_vs_native"]
        native_ms = f"{ms['native']:.1f}" if "native" in ms else "-"
        print(
            f"| {r['config']} | {r['format']} | {r['batch']} | {ms['ours']:.1f} | {ms['timm']:.1f} | {native_ms} | "
            f"{_ratio_cell(r['ours_vs_timm'])} | {_ratio_cell(native) if native else '-'} |"
        )


if __name__ == "__main__":
    main()
