"""Convert a timm model into a complete, verified Hugging Face repo folder.

    python -m conversion.convert_timm MODEL_NAME --output-dir DIR [--checkpoint FILE] [--dtype bf16]

The folder is written to a temporary sibling, loaded in a clean process as remote code, compared with timm
(native size and an interpolated size), and only then renamed to DIR. On any failure nothing is left behind.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
from timm.data import ImageNetInfo, infer_imagenet_subset, resolve_data_config
from timm.models import split_model_name_tag
from transformers import CLIPImageProcessor

from conversion.checkpoints import load_checkpoint
from conversion.families import family_for
from conversion.model_card import write_model_card
from conversion.verify import run_folder

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TOLERANCE = 1e-4


class ConversionError(RuntimeError):
    """A conversion that cannot produce a verified folder; the message says why and what to do."""


@dataclass
class ConversionResult:
    output_dir: Path
    num_parameters: int
    parity: dict[str, float] = field(default_factory=dict)


def resolve_model_name(model_name: str) -> tuple[str, str | None]:
    architecture, tag = split_model_name_tag(model_name)
    if architecture not in timm.list_models():
        close = difflib.get_close_matches(architecture, timm.list_models(), n=5, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ConversionError(f"Unknown timm model {architecture!r}.{hint}")
    return architecture, tag or None


def timm_kwargs(model_name: str) -> dict:
    """dynamic_img_size lets the model serve as the reference at any size. DINOv3's pooled output is the CLS
    token, as upstream DINOv3 and transformers' DINOv3ViTModel give it (timm defaults to avg)."""
    kwargs = {"dynamic_img_size": True}
    if "dinov3" in split_model_name_tag(model_name)[0]:
        kwargs["global_pool"] = "token"
    return kwargs


def build_timm(model_name: str, checkpoint: Path | None) -> torch.nn.Module:
    """timm model holding the weights to convert."""
    if checkpoint is None:
        return timm.create_model(model_name, pretrained=True, **timm_kwargs(model_name)).eval()
    state_dict = load_checkpoint(checkpoint)
    head = state_dict.get("head.weight")
    num_classes = head.shape[0] if head is not None else 0
    model = timm.create_model(model_name, pretrained=False, num_classes=num_classes, **timm_kwargs(model_name))
    result = model.load_state_dict(state_dict, strict=False)
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(model.state_dict()[k].shape)}"
        for k, v in state_dict.items()
        if k in model.state_dict() and v.shape != model.state_dict()[k].shape
    ]
    if result.missing_keys or result.unexpected_keys or mismatched:
        raise ConversionError(
            f"{checkpoint} does not fit {model_name}:\n"
            f"  missing keys: {result.missing_keys[:20]}\n  unexpected keys: {result.unexpected_keys[:20]}\n"
            f"  shape mismatches: {mismatched[:20]}\nPass the timm name of the architecture the checkpoint was "
            "trained with."
        )
    return model.eval()


def id2label_for(model: torch.nn.Module, num_classes: int, labels: Path | None) -> dict[int, str] | None:
    """Real class names: a user's labels file (one per line) or timm's ImageNet label sets."""
    if labels is not None:
        names = [line.strip() for line in labels.read_text().splitlines() if line.strip()]
        if len(names) != num_classes:
            raise ConversionError(f"{labels} has {len(names)} labels but the head has {num_classes} classes.")
        return dict(enumerate(names))
    subset = infer_imagenet_subset(model)
    if subset is None or not num_classes:
        return None
    info = ImageNetInfo(subset)
    if info.num_classes() != num_classes:
        return None
    return {i: info.index_to_description(i) for i in range(num_classes)}


def image_processor_for(model: torch.nn.Module) -> CLIPImageProcessor:
    """A stock processor reproducing timm's eval transform: resize by crop_pct, center crop, normalize."""
    data = resolve_data_config({}, model=model)
    height, width = data["input_size"][1:]
    crop_pct, crop_mode = data.get("crop_pct", 1.0), data.get("crop_mode", "center")
    scale = math.floor(min(height, width) / crop_pct)
    if crop_mode == "center":
        size = {"shortest_edge": scale}
    elif crop_mode == "squash":
        size = {"height": math.floor(height / crop_pct), "width": math.floor(width / crop_pct)}
    else:
        raise ConversionError(f"crop_mode {crop_mode!r} has no stock transformers processor equivalent.")
    resample = {"bicubic": 3, "bilinear": 2, "nearest": 0, "lanczos": 1}[data["interpolation"]]
    return CLIPImageProcessor(
        size=size,
        crop_size={"height": height, "width": width},
        resample=resample,
        image_mean=list(data["mean"]),
        image_std=list(data["std"]),
        do_convert_rgb=True,
    )


def _reference(model: torch.nn.Module, inputs: dict[str, torch.Tensor], with_head: bool) -> dict[str, torch.Tensor]:
    expected = {}
    with torch.no_grad():
        for name, x in inputs.items():
            features = model.forward_features(x)
            expected[f"{name}.last_hidden_state"] = features
            if model.global_pool:
                expected[f"{name}.pooler_output"] = model.forward_head(features, pre_logits=True)
            if with_head:
                expected[f"{name}.logits"] = model.forward_head(features)
    return expected


def verify(folder: Path, model: torch.nn.Module, with_head: bool) -> dict[str, float]:
    """Max abs difference per output between the folder (clean process) and timm; raises past tolerance."""
    ph, pw = model.patch_embed.patch_size
    height, width = model.patch_embed.img_size
    generator = torch.Generator().manual_seed(0)
    inputs = {
        "native": torch.randn(2, 3, height, width, generator=generator),
        "interpolated": torch.randn(2, 3, height + 2 * ph, width - pw, generator=generator),
    }
    ours = run_folder(folder, inputs, with_head)
    expected = _reference(model, inputs, with_head)
    if set(ours) != set(expected):
        raise ConversionError(f"Outputs differ in kind: folder gave {sorted(ours)}, timm {sorted(expected)}.")
    parity = {}
    for key, reference in expected.items():
        close = torch.allclose(ours[key], reference, atol=TOLERANCE, rtol=TOLERANCE)
        parity[key] = float((ours[key] - reference).abs().max())
        if not close:
            raise ConversionError(f"Parity check failed for {key}: max abs diff {parity[key]:.3e} > {TOLERANCE}.")
    return parity


def convert(
    model_name: str,
    output_dir: Path,
    checkpoint: Path | None = None,
    dtype: str = "fp32",
    labels: Path | None = None,
    overwrite: bool = False,
    max_shard_size: str = "2GB",
) -> ConversionResult:
    """Python API of the command; see the module docstring."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not overwrite:
        raise ConversionError(f"{output_dir} already exists; pass --overwrite to replace it.")
    if dtype not in DTYPES:
        raise ConversionError(f"Unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}.")
    architecture, tag = resolve_model_name(model_name)
    timm_model = build_timm(model_name, checkpoint)
    # The reference sees the same rounding the saved weights get.
    timm_model = timm_model.to(DTYPES[dtype]).float()
    num_classes = getattr(timm_model, "num_classes", 0)
    family = family_for(timm_model)
    config = family.mapping.config_from_timm(timm_model)
    id2label = id2label_for(timm_model, num_classes, labels)
    if id2label:
        config.id2label, config.label2id = id2label, {v: k for k, v in id2label.items()}
    config.timm_model_name, config.timm_pretrained_tag = architecture, tag
    config.timm_version = timm.__version__
    with_head = num_classes > 0
    model = (family.classifier if with_head else family.model)(config)
    state_dict = family.mapping.convert_state_dict(timm_model.state_dict(), with_head=with_head)
    model.load_state_dict(state_dict, strict=True)
    model = model.to(DTYPES[dtype]).eval()

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        model.save_pretrained(staging, max_shard_size=max_shard_size)
        image_processor_for(timm_model).save_pretrained(staging)
        parity = verify(staging, timm_model, with_head)
        config_path = staging / "config.json"
        saved = json.loads(config_path.read_text())
        saved["vitzoo_parity"] = {"max_abs_diff": parity, "tolerance": TOLERANCE, "reference": "timm"}
        config_path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
        num_parameters = sum(p.numel() for p in model.parameters())
        write_model_card(staging, saved, timm_model.pretrained_cfg, parity, num_parameters, checkpoint)
        if output_dir.exists():
            shutil.rmtree(output_dir)
        staging.rename(output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ConversionResult(output_dir, num_parameters, parity)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_name", help="timm model name, optionally with a pretrained tag (name.tag)")
    parser.add_argument("--output-dir", required=True, type=Path)
    parser.add_argument("--checkpoint", type=Path, help="local timm state dict or training checkpoint")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--labels", type=Path, help="text file with one class name per line")
    parser.add_argument("--max-shard-size", default="2GB")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        result = convert(
            args.model_name,
            args.output_dir,
            checkpoint=args.checkpoint,
            dtype=args.dtype,
            labels=args.labels,
            overwrite=args.overwrite,
            max_shard_size=args.max_shard_size,
        )
    except (ConversionError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    worst = max(result.parity.values())
    print(f"converted {args.model_name} -> {result.output_dir} ({result.num_parameters:,} parameters)")
    print(f"verified in a clean process: max abs diff {worst:.2e} over {len(result.parity)} outputs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
