"""Regenerate docs/BENCHMARKS.md's tables from bench/results/*.json.

    python bench/report.py

The section between ``<!-- bench:start -->`` and ``<!-- bench:end -->`` is rewritten; every figure in it comes
from a results file written by bench_forward.py, bench_stage_forward.py, bench_load.py or bench_conversion.py,
with the machine, library versions and date those scripts recorded.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
GIB = 2**30


def _ratio(stats: dict | None) -> str:
    return f"{stats['median']:.2f}x ({stats['q1']:.2f}-{stats['q3']:.2f})" if stats else "-"


def _meta(meta: dict) -> str:
    keys = ("device", "threads", "dtype", "compile", "reps", "processes", "torch", "transformers", "timm", "date")
    return ", ".join(f"{k} {meta[k]}" for k in keys if k in meta)


def forward(name: str, title: str, script: str = "bench_forward.py", variant: str = "attn") -> list[str]:
    """``variant``: the row field that varies besides the batch (token families: attention; CNNs: memory format)."""
    path = RESULTS / name
    if not path.is_file():
        return [f"**{title}**: pending (no {name} yet; run bench/{script} on such a machine)."]
    data = json.loads(path.read_text())
    spread = f", in each of {data['meta']['processes']} fresh processes" if "processes" in data["meta"] else ""
    lines = [f"**{title}** ({_meta(data['meta'])}). Ratios: median over interleaved repetitions{spread} of", ""]
    lines[0] += " the other's time / ours (> 1: we are faster), with the interquartile range."
    calls = all("module_calls" in row for row in data["rows"])  # the stage bench counts module forwards too
    lines += [
        f"| config | {'attention' if variant == 'attn' else 'memory format'} | batch | ours ms | timm ms | native ms "
        f"| vs timm | vs native port |{' modules per forward (ours / timm) |' if calls else ''}",
        "|---|---|---|---|---|---|---|---|" + ("---|" if calls else ""),
    ]
    for row in data["rows"]:
        ms = row["median_ms"]
        native = f"{ms['native']:.1f}" if "native" in ms else "-"
        counted = row.get("module_calls", {})
        lines.append(
            f"| {row['config']} | {row[variant]} | {row['batch']} | {ms['ours']:.1f} | {ms['timm']:.1f} | {native} | "
            f"{_ratio(row['ours_vs_timm'])} | {_ratio(row['ours_vs_native'])} |"
            + (f" {counted['ours']} / {counted['timm']} |" if calls else "")
        )
    if data.get("scaling"):
        base = data["scaling"][0]
        lines += ["", "ViT-B/16, batch 1, cost growth with input size:", ""]
        lines += ["| input | ours ms | timm ms | ours growth | timm growth |", "|---|---|---|---|---|"]
        for s in data["scaling"]:
            lines.append(
                f"| {s['size']} | {s['ours']:.1f} | {s['timm']:.1f} | {s['ours'] / base['ours']:.2f}x | "
                f"{s['timm'] / base['timm']:.2f}x |"
            )
    return lines


def load(name: str = "load.json", title: str = "Load") -> list[str]:
    path = RESULTS / name
    if not path.is_file():
        return [f"**{title}**: pending (run bench/bench_load.py)."]
    data = json.loads(path.read_text())
    lines = [f"**{title}** ({_meta(data['meta'])}; fresh process each, imports not timed, median):", ""]
    lines += ["| model | ours s | timm create+load s | native s | ours / timm time | ours / native peak RSS |"]
    lines += ["|---|---|---|---|---|---|"]
    for r in data["rows"]:
        s, m = r["seconds"], r["peak_rss"]
        lines.append(
            f"| {r['model']} | {s['ours']:.2f} | {s['timm']:.2f} | {s['native']:.2f} | {s['ours'] / s['timm']:.2f}x | "
            f"{m['ours'] / m['native']:.2f}x ({m['ours'] / GIB:.2f} vs {m['native'] / GIB:.2f} GiB) |"
        )
    return lines


def conversion() -> list[str]:
    path = RESULTS / "conversion.json"
    if not path.is_file():
        return ["**Conversion**: pending (run bench/bench_conversion.py)."]
    data = json.loads(path.read_text())
    meta = data["meta"]
    lines = [f"**Conversion** ({meta['machine']}, {meta['dtype']}, {meta['shard_size']} shards, {meta['date']}):", ""]
    lines += [
        "| model | parameters | seconds | weights | writing: peak anon | writing: peak RSS | "
        "verifying: peak anon | verified |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        verify = (r.get("verify_converter_anon", 0) + r.get("verify_verifier_anon", 0)) / GIB
        scope = next((line for line in r["log"] if "verified in a clean process" in line), "")
        scope = scope.split("(")[1].split(")")[0] if "(" in scope else "?"
        lines.append(
            f"| {r['model']} | {r['parameters'] / 1e9:.2f} B | {r['seconds']} | {r['weights_bytes'] / GIB:.2f} GiB | "
            f"{r.get('write_converter_anon', 0) / GIB:.2f} GiB | {r.get('write_converter_rss', 0) / GIB:.2f} GiB | "
            f"{verify:.2f} GiB | {scope} |"
        )
    return lines


def main() -> None:
    sections = [
        forward("forward_cpu.json", "Forward, CPU fp32"),
        forward("forward_cuda_bf16.json", "Forward, GPU bf16"),
        forward("forward_cuda_fp16.json", "Forward, GPU fp16"),
        forward("forward_cuda_bf16_compile.json", "Forward, GPU bf16, torch.compile"),
        forward("stage_forward_cpu.json", "ConvNeXt forward, CPU fp32, 224", "bench_stage_forward.py", "format"),
        forward("stage_forward_resnet_cpu.json", "ResNet forward, CPU fp32, 224", "bench_stage_forward.py", "format"),
        *(
            forward(f"stage_forward_efficientnet{suffix}_cpu.json", title, "bench_stage_forward.py", "format")
            for suffix, title in (
                ("", "EfficientNet family forward, CPU fp32, 224"),
                ("_overhead", "EfficientNet family per-forward overhead, CPU fp32, batch 1 at 32 px"),
                ("_compile", "EfficientNet family forward, CPU fp32, 224, torch.compile"),
            )
        ),
        load(),
        load("load_convnext.json", "Load, ConvNeXt"),
        load("load_resnet.json", "Load, ResNet"),
        load("load_efficientnet.json", "Load, EfficientNet family"),
        conversion(),
    ]
    body = "\n\n".join("\n".join(section) for section in sections)
    page = ROOT / "docs" / "BENCHMARKS.md"
    text = page.read_text()
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    page.write_text(f"{head}{START}\n{body}\n{END}{tail}")


if __name__ == "__main__":
    main()
