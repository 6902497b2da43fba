"""Load cost: vitzoo_hf ``from_pretrained`` vs timm ``create_model`` + ``load_state_dict`` vs the native port.

    python bench/bench_load.py [--sizes s b l] [--reps 5] [--out FILE]

The same weights in three forms (our converted folder, loaded as remote code with vitzoo_hf hidden; a timm
safetensors checkpoint; the folder of transformers' native port: ViTModel, ConvNextModel, ResNetModel,
EfficientNetModel, MobileNetV2Model). Each measurement is a fresh process: library imports happen first and are not
timed (the same transformers modules for ours and the native port; importing our remote-code files is part of the
timed load), then the load call is timed and the process reports its peak RSS (VmHWM). Loads run interleaved (ours,
timm, native, ours, ...); medians and ratios are reported. ``--sizes convnext_t convnext_b --out
bench/results/load_convnext.json`` for the ConvNeXt rows, ``--sizes resnet18 resnet50 --out
bench/results/load_resnet.json`` for the ResNet ones, ``--sizes efficientnet_b0 mobilenetv2_100 --out
bench/results/load_efficientnet.json`` for the EfficientNet family's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import timm
import torch
import transformers
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from native_ports import PORTS  # noqa: E402

from conversion.convert_timm import convert  # noqa: E402
from conversion.verify import clean_env  # noqa: E402

# key -> (timm name, native port)
SIZES = {
    "s": ("vit_small_patch16_224", "vit"),
    "b": ("vit_base_patch16_224", "vit"),
    "l": ("vit_large_patch16_224", "vit"),
    "convnext_t": ("convnext_tiny", "convnext"),
    "convnext_b": ("convnext_base", "convnext"),
    "resnet18": ("resnet18", "resnet"),
    "resnet50": ("resnet50", "resnet"),
    "efficientnet_b0": ("efficientnet_b0", "efficientnet"),
    "mobilenetv2_100": ("mobilenetv2_100", "mobilenet_v2"),
}

CHILD = r"""
import sys, time
kind, source, name = sys.argv[1:4]
if kind == "ours":
    for hidden in ("vitzoo_hf", "timm", "conversion"):
        sys.modules[hidden] = None  # a user's machine: remote code only
    from transformers import AutoModel, PreTrainedModel  # the same library imports the native child does
    start = time.perf_counter()
    model = AutoModel.from_pretrained(source, trust_remote_code=True)
elif kind == "timm":
    import timm
    from safetensors.torch import load_file
    start = time.perf_counter()
    model = timm.create_model(name, pretrained=False, num_classes=0)
    model.load_state_dict(load_file(source))
else:
    import transformers
    native_class = getattr(transformers, kind)
    start = time.perf_counter()
    kwargs = {"add_pooling_layer": False} if kind == "ViTModel" else {}  # as the forward benchmark builds it
    model = native_class.from_pretrained(source, **kwargs)
seconds = time.perf_counter() - start
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(seconds, peak)
"""


def prepare(name: str, port: str, work: Path) -> dict[str, Path]:
    """The three folders/files; the native one is keyed by its transformers class name."""
    reference = timm.create_model(name, pretrained=False, num_classes=0).eval()
    checkpoint = work / "timm.safetensors"
    save_file(reference.state_dict(), str(checkpoint))
    ours = convert(name, work / "ours", checkpoint=checkpoint).output_dir
    native_model = PORTS[port](reference, "sdpa")
    native = work / "native"
    native_model.save_pretrained(native)
    return {"ours": ours, "timm": checkpoint, type(native_model).__name__: native}


def measure(kind: str, source: Path, name: str) -> tuple[float, int]:
    run = subprocess.run(
        [sys.executable, "-c", CHILD, kind, str(source), name], cwd="/", env=clean_env(), capture_output=True, text=True
    )
    if run.returncode:
        raise RuntimeError(run.stderr[-2000:])
    seconds, rss = run.stdout.split()[-2:]
    return float(seconds), int(rss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "load.json")
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        name, port = SIZES[size]
        with tempfile.TemporaryDirectory() as tmp:
            sources = prepare(name, port, Path(tmp))
            samples = {kind: [] for kind in sources}
            for _ in range(args.reps):
                for kind, source in sources.items():
                    samples[kind].append(measure(kind, source, name))
        role = {kind: kind if kind in ("ours", "timm") else "native" for kind in samples}
        seconds = {role[k]: statistics.median(s for s, _ in v) for k, v in samples.items()}
        rss = {role[k]: statistics.median(r for _, r in v) for k, v in samples.items()}
        native_class = next(k for k, r in role.items() if r == "native")
        rows.append({"model": name, "native": native_class, "seconds": seconds, "peak_rss": rss})
        print(json.dumps(rows[-1]), flush=True)
    meta = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "timm": timm.__version__,
        "reps": args.reps,
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    gib = 2**30
    print(f"\n{meta}\n")
    print("| model | ours s | timm create+load s | native s | ours / timm time | ours / native peak RSS |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        s, m = r["seconds"], r["peak_rss"]
        print(
            f"| {r['model']} | {s['ours']:.2f} | {s['timm']:.2f} | {s['native']:.2f} | {s['ours'] / s['timm']:.2f}x | "
            f"{m['ours'] / m['native']:.2f}x ({m['ours'] / gib:.2f} vs {m['native'] / gib:.2f} GiB) |"
        )


if __name__ == "__main__":
    main()
