"""Forward throughput of the stage (CNN) families: vitzoo_hf vs timm vs transformers' native port, same weights.

    python bench/bench_stage_forward.py [--device cpu|cuda] [--dtype fp32|bf16] [--reps 15] [--compile] [--out FILE]

Per config, batch size and memory format (contiguous, channels_last), the three models run interleaved after
warm-up, the order rotating each repetition; the reported ratio is the median over repetitions of other_time /
ours_time (> 1: we are faster), with the interquartile range. Each model runs the whole network to the pooled
pre-logits (the one output all three define alike; DINOv3 ConvNeXt's native last_hidden_state is a token list),
and the outputs are compared with timm first. Markdown on stdout, JSON in --out.
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

from bench_forward import DTYPES, _cpu_name, _ratio_cell, check_outputs, ratio_stats, time_interleaved  # noqa: E402
from native_ports import PORTS  # noqa: E402

from conversion.families import family_for  # noqa: E402

CONFIGS = [  # (label, timm name, timm kwargs, native port)
    ("ConvNeXt-T", "convnext_tiny", {}, "convnext"),
    ("ConvNeXt-V2-T", "convnextv2_tiny", {}, "convnext"),
    ("DINOv3 ConvNeXt-T", "convnext_tiny", {"num_classes": 0}, "dinov3_convnext"),
    ("ConvNeXt-B", "convnext_base", {}, "convnext"),
    ("ResNet-18", "resnet18", {}, "resnet"),
    ("ResNet-50", "resnet50", {}, "resnet"),
]


def build(name: str, kwargs: dict, port: str, device: str, dtype: torch.dtype, channels_last: bool) -> list:
    reference = timm.create_model(name, pretrained=False, **kwargs).eval()
    with torch.no_grad():  # away from timm's init (zero biases, LayerScale 1e-6), which hides mapping bugs
        for tensor in reference.state_dict().values():
            if tensor.is_floating_point():  # not BatchNorm's batch counter
                tensor.add_(torch.randn_like(tensor) * 0.02)
    family = family_for(reference)
    ours = family.model(family.config_from_timm(reference))
    ours.load_state_dict(family.convert_state_dict(reference.state_dict(), with_head=False), strict=True)
    native = PORTS[port](reference)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return [m.to(device=device, dtype=dtype, memory_format=memory_format).eval() for m in (reference, ours, native)]


def runners(models) -> dict:
    reference, ours, native = models
    return {
        "timm": lambda x: reference.forward_head(reference.forward_features(x), pre_logits=True),
        "ours": lambda x: ours(x).pooler_output,
        "native": lambda x: native(pixel_values=x).pooler_output.flatten(1),  # ResNetModel's is (B, C, 1, 1)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--formats", nargs="+", default=["contiguous", "channels_last"])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="torch.compile every model first")
    parser.add_argument("--only", nargs="+", default=None, help="labels to run")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "stage_forward_cpu.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = DTYPES[args.dtype]
    meta = {
        "device": torch.cuda.get_device_name() if args.device == "cuda" else _cpu_name(),
        "threads": args.threads,
        "dtype": args.dtype,
        "compile": args.compile,
        "reps": args.reps,
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
            channels_last = memory_format == "channels_last"
            models = build(name, kwargs, port, args.device, dtype, channels_last)
            if args.compile:
                models = [torch.compile(m) for m in models]
            run = runners(models)

            def batch_of(n: int, fmt: bool = channels_last) -> torch.Tensor:
                x = torch.randn(n, 3, args.size, args.size, device=args.device, dtype=dtype)
                return x.to(memory_format=torch.channels_last) if fmt else x

            diffs = check_outputs(run, batch_of(2))
            for batch in args.batches:
                times = time_interleaved(run, batch_of(batch), args.reps, args.warmup, args.device)
                row = {
                    "config": f"{label} @ {args.size}",
                    "format": memory_format,
                    "batch": batch,
                    "median_ms": {k: 1000 * statistics.median(v) for k, v in times.items()},
                    "ours_vs_timm": ratio_stats(times["timm"], times["ours"]),
                    "ours_vs_native": ratio_stats(times["native"], times["ours"]),
                    "max_abs_diff_vs_timm": diffs,
                }
                rows.append(row)
                args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
                print(json.dumps(row), flush=True)
            del models, run
    print(f"\n{meta}\n")
    print("| config | format | batch | ours ms | timm ms | native ms | ours vs timm (IQR) | ours vs native (IQR) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ms = r["median_ms"]
        print(
            f"| {r['config']} | {r['format']} | {r['batch']} | {ms['ours']:.1f} | {ms['timm']:.1f} | "
            f"{ms['native']:.1f} | {_ratio_cell(r['ours_vs_timm'])} | {_ratio_cell(r['ours_vs_native'])} |"
        )


if __name__ == "__main__":
    main()
