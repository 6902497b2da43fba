"""Deployment checks: `torch.compile` gives the eager outputs, and an ONNX export with dynamic batch and image
size gives them too under onnxruntime, at every size you ask for.

    python examples/compile_and_export.py --model out/dinov3-s16 --onnx out/dinov3-s16.onnx --sizes 224 320x256

``--task feature-extraction`` (default) exports ``last_hidden_state`` and ``pooler_output`` of the bare model;
``--task image-classification`` exports the classifier's ``logits``. Image sides must be multiples of the patch
size; the graph resamples position embeddings (timm's antialiased bicubic) and RoPE tables for the input it gets.
Prints one JSON line with the largest difference per check, relative to the output's largest magnitude (at least 1:
so an absolute difference for outputs of order 1): compiled and exported graphs reorder float arithmetic, and a deep
CNN's logits of a few hundred carry a proportionally larger rounding (timm's own compiled model shows the same).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import onnxruntime
import torch
from transformers import AutoModel, AutoModelForImageClassification, PreTrainedModel

OUTPUTS = {"feature-extraction": ("last_hidden_state", "pooler_output"), "image-classification": ("logits",)}


class Exportable(torch.nn.Module):
    """Plain tensors in and out, any input size (``interpolate_pos_encoding=True``)."""

    def __init__(self, model: PreTrainedModel, outputs: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.outputs = model, outputs

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        result = self.model(pixel_values=pixel_values, interpolate_pos_encoding=True)
        return tuple(result[name] for name in self.outputs)


def load(model: str, task: str) -> PreTrainedModel:
    auto = AutoModel if task == "feature-extraction" else AutoModelForImageClassification
    return auto.from_pretrained(model, trust_remote_code=True).eval()  # sdpa where the family has attention


def images(batch: int, height: int, width: int) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(height * 1000 + width))


def max_difference(got: tuple, expected: tuple) -> float:
    """The largest difference over the outputs, relative to each output's largest magnitude (at least 1)."""
    return max(
        (torch.as_tensor(g) - e).abs().max().item() / max(1.0, e.abs().max().item())
        for g, e in zip(got, expected, strict=True)
    )


def compile_check(model: torch.nn.Module, sizes: list[tuple[int, int]]) -> dict[str, float]:
    """The compiled model against eager at each size (each new size recompiles or runs the dynamic graph)."""
    compiled = torch.compile(model)
    report = {}
    with torch.no_grad():
        for height, width in sizes:
            x = images(2, height, width)
            report[f"{height}x{width}"] = max_difference(compiled(x), model(x))
    return report


def export_onnx(model: torch.nn.Module, path: Path, size: tuple[int, int], patch: tuple[int, int]) -> None:
    """Dynamic batch, and height/width as any multiple of the patch size."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    rows, cols = torch.export.Dim("rows", min=1, max=1024), torch.export.Dim("cols", min=1, max=1024)
    torch.onnx.export(
        model,
        (images(2, *size),),
        path,
        dynamo=True,
        input_names=["pixel_values"],
        output_names=list(model.outputs),
        dynamic_shapes={"pixel_values": {0: batch, 2: patch[0] * rows, 3: patch[1] * cols}},
        optimize=True,
        verbose=False,
    )


def onnx_check(model: torch.nn.Module, path: Path, sizes: list[tuple[int, int]]) -> dict[str, float]:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    report = {}
    with torch.no_grad():
        for index, (height, width) in enumerate(sizes):
            x = images(1 + index % 3, height, width)  # batch sizes vary too
            report[f"{x.shape[0]}x{height}x{width}"] = max_difference(
                session.run(None, {"pixel_values": x.numpy()}), model(x)
            )
    return report


def pair(value: int | list[int]) -> tuple[int, int]:
    """Config sizes are an int (square) or [height, width]."""
    return (value, value) if isinstance(value, int) else tuple(value)


def parse_size(text: str) -> tuple[int, int]:
    height, _, width = text.partition("x")
    return int(height), int(width or height)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a converted folder or Hub repo id")
    parser.add_argument("--onnx", required=True, type=Path, help="where to write the .onnx file")
    parser.add_argument("--task", choices=sorted(OUTPUTS), default="feature-extraction")
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=None, help="e.g. 224 320x256")
    parser.add_argument("--skip-compile", action="store_true")
    args = parser.parse_args(argv)

    model = Exportable(load(args.model, args.task), OUTPUTS[args.task]).eval()
    config = model.model.config
    # The step input sides vary by: the patch (token families, ConvNeXt's patch stem), else the total stride (ResNet).
    native, patch = pair(config.image_size), pair(getattr(config, "patch_size", None) or config.strides[-1])
    sizes = args.sizes or [native, (native[0] + 2 * patch[0], native[1] + patch[1])]
    summary = {"task": args.task, "sizes": [list(size) for size in sizes]}
    if not args.skip_compile:
        summary["compile_max_diff"] = compile_check(model, sizes)
    args.onnx.parent.mkdir(parents=True, exist_ok=True)
    # Traced at the largest size: a CNN's last map at the smallest may be 1x1, which torch.export would specialise.
    export_onnx(model, args.onnx, max(sizes, key=lambda size: size[0] * size[1]), patch)
    summary["onnx_max_diff"] = onnx_check(model, args.onnx, sizes)
    summary["onnx"] = str(args.onnx)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
