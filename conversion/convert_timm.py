"""Convert a timm model into a complete, verified Hugging Face repo folder.

    python -m conversion.convert_timm MODEL_NAME --output-dir DIR [--checkpoint FILE] [--dtype bf16]

The architecture comes from timm built on the meta device; weights stream tensor by tensor from the
checkpoint into safetensors shards, so peak memory stays near one shard whatever the model size. The folder
is written to a temporary sibling, loaded in a clean process as remote code, compared with timm (native size
and an interpolated size), and only then renamed to DIR. On any failure nothing is left behind.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import shutil
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
from safetensors import SafetensorError
from timm.data import DEFAULT_CROP_PCT, ImageNetInfo, infer_imagenet_subset, resolve_data_config
from timm.models import split_model_name_tag

from conversion.checkpoints import TensorSource, open_checkpoint, parse_size, write_shards
from conversion.common import UnsupportedArchitecture
from conversion.families import FamilyConversion, family_for
from conversion.model_card import write_model_card
from conversion.parity_record import write_parity_record
from conversion.remote_code import sibling_closure
from conversion.staging import DeletionError, Staging, check_replaceable, clean_stale, exit_on_termination, phase
from conversion.verify import run_folder
from vitzoo_hf import VitzooImageProcessor

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
TOLERANCE = 1e-4
# PIL filter numbers of timm's interpolation names
RESAMPLE = {"bicubic": 3, "bilinear": 2, "nearest": 0, "lanczos": 1}
PARTIAL_BLOCKS = 2


class ConversionError(RuntimeError):
    """A conversion that cannot produce a verified folder; the message says why and what to do."""


@dataclass
class ConversionResult:
    output_dir: Path
    num_parameters: int
    parity: dict[str, float] = field(default_factory=dict)
    verified_blocks: int | None = None  # None: the whole model was verified


def resolve_model_name(model_name: str) -> tuple[str, str | None]:
    architecture, tag = split_model_name_tag(model_name)
    if architecture not in timm.list_models():
        close = difflib.get_close_matches(architecture, timm.list_models(), n=5, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ConversionError(f"Unknown timm model {architecture!r}.{hint}")
    return architecture, tag or None


def check_source_fits(source: TensorSource, skeleton: torch.nn.Module, model_name: str) -> None:
    """Names and shapes of the checkpoint against the architecture, before any tensor is read."""
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    missing = sorted(set(expected) - set(source.shapes))
    unexpected = sorted(set(source.shapes) - set(expected))
    mismatched = [
        f"{k}: checkpoint {source.shapes[k]} vs model {shape}"
        for k, shape in expected.items()
        if k in source.shapes and source.shapes[k] != shape
    ]
    if missing or unexpected or mismatched:
        raise ConversionError(
            f"{source.origin} does not fit {model_name}:\n"
            f"  missing keys: {missing[:20]}\n  unexpected keys: {unexpected[:20]}\n"
            f"  shape mismatches: {mismatched[:20]}\n"
            + (layout_hint(set(source.shapes), set(expected)) or "Pass the timm name of the architecture the "
               "checkpoint was trained with.")
        )  # fmt: skip


WRAPPING_PREFIXES = ("model.", "backbone.", "encoder.", "timm_model.", "module.", "net.")


def layout_hint(found: set[str], expected: set[str]) -> str | None:
    """The likely cause when a checkpoint's keys do not fit: a wrapping prefix, timm's ``features_only`` naming, or
    another library's layout."""
    for prefix in WRAPPING_PREFIXES:
        stripped = {k.removeprefix(prefix) for k in found}
        if all(k.startswith(prefix) for k in found) and len(stripped & expected) > len(found & expected):
            return (
                f"Every key starts with {prefix!r} (a training wrapper's attribute): save the inner model's "
                f"state_dict(), or strip the prefix, and convert that."
            )
    joined = {re.sub(r"^([A-Za-z]+)\.(\d+)", r"\1_\2", k) for k in expected}
    if len(found & joined) > len(found & expected):
        return (
            "These are timm's features_only names ('stages_0.' for 'stages.0.'): a FeatureListNet's state dict. Save "
            "the full model's state_dict() (timm.create_model(name) with the same weights), and convert that."
        )
    if any(k.startswith("features.") for k in found) and not any(k.startswith("features.") for k in expected):
        return (
            "The keys look like a torchvision model's ('features.N...', 'classifier.N...'), whose layout is not "
            "timm's: convert timm's own weights for this architecture, or rename the keys to timm's first."
        )
    return None


def read_labels(path: Path) -> list[str]:
    """One class name per line (UTF-8, a BOM allowed, blank lines skipped); duplicates are refused."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ConversionError(f"{path}:{line} is not UTF-8 text; save the labels file as UTF-8.") from error
    names, seen = [], {}
    for number, line in enumerate(text.splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        control = [c for c in name if unicodedata.category(c) == "Cc"]
        if control:
            raise ConversionError(
                f"{path}:{number} holds a control character ({control[0]!r}) in the label {name!r}; labels are "
                "shown in terminals and on the Hub: give plain text."
            )
        if name in seen:
            raise ConversionError(
                f"{path}:{number} repeats the label {name!r} of line {seen[name]}; labels must differ."
            )
        seen[name] = number
        names.append(name)
    return names


def id2label_for(model: torch.nn.Module, num_classes: int, labels: list[str] | None) -> dict[int, str] | None:
    """Real class names: a user's labels (read from a file, one per line) or timm's ImageNet label sets."""
    if labels is not None:
        if len(labels) != num_classes:
            raise ConversionError(f"The labels file has {len(labels)} labels but the head has {num_classes} classes.")
        return dict(enumerate(labels))
    subset = infer_imagenet_subset(model)
    if subset is None or not num_classes:
        return None
    info = ImageNetInfo(subset)
    if info.num_classes() != num_classes:
        return None
    return {i: info.index_to_description(i) for i in range(num_classes)}


def image_processor_for(model: torch.nn.Module, conversion: FamilyConversion) -> VitzooImageProcessor:
    """The processor that reproduces timm's eval transform for this model's pretrained config, at the size the
    model was built for (a checkpoint fine-tuned at another ``img_size`` keeps its crop rule at its own size)."""
    data = resolve_data_config({"input_size": conversion.input_size(model)}, model=model)
    height, width = data["input_size"][1:]
    crop_mode = data.get("crop_mode") or "center"
    size = (
        {"shortest_edge": height} if height == width and crop_mode == "center" else {"height": height, "width": width}
    )
    interpolation = data["interpolation"]
    if interpolation not in RESAMPLE:
        raise ConversionError(f"interpolation {interpolation!r} is not supported (supported: {', '.join(RESAMPLE)}).")
    return VitzooImageProcessor(
        size=size,
        crop_pct=data.get("crop_pct") or DEFAULT_CROP_PCT,
        crop_mode=crop_mode,
        resample=RESAMPLE[interpolation],
        image_mean=list(data["mean"]),
        image_std=list(data["std"]),
    )


def available_memory() -> int:
    """Bytes the kernel reports as available (MemAvailable)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def verification_bytes(num_parameters: int) -> int:
    """timm in fp32 here, the folder in fp32 in the child, plus activations and interpreter overhead."""
    return int(num_parameters * 4 * 2 * 1.25) + 2**30


def _reference(
    model_name: str,
    source: TensorSource,
    skeleton: torch.nn.Module,
    conversion: FamilyConversion,
    dtype: torch.dtype,
    blocks: int | None,
    kwargs: dict,
) -> torch.nn.Module:
    """timm holding the converted weights (rounded as saved), whole or truncated to its first ``blocks``."""
    kwargs = {**kwargs, "num_classes": getattr(skeleton, "num_classes", 0)}
    if blocks is not None:
        kwargs.update(conversion.truncated_kwargs(skeleton, blocks))
    model = timm.create_model(model_name, pretrained=False, **kwargs)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    depth_bound = [k for k, shape in shapes.items() if k in source and source.shapes[k] != shape]
    if depth_bound:  # e.g. RoPE-Mixed's per-block frequency table
        raise ConversionError(f"Partial verification is not possible: {depth_bound[0]} depends on the depth.")
    model.load_state_dict({k: source.get(k).to(dtype).float() for k in shapes}, strict=True)
    return model.eval()


def verify(
    folder: Path,
    reference: torch.nn.Module,
    conversion: FamilyConversion,
    config,
    with_head: bool,
    overrides: dict | None = None,
) -> dict[str, float]:
    """Max abs difference per output between the folder (clean process) and timm; raises past tolerance."""
    inputs = conversion.verification_inputs(reference)
    pixels = {name: x for name, (x, _) in inputs.items()}
    calls = {name: call for name, (_, call) in inputs.items()}
    ours = run_folder(folder, pixels, with_head, overrides, scratch=folder, calls=calls)  # scratch: the staging
    expected = {}
    with torch.no_grad():
        for name, x in pixels.items():
            with conversion.reference_at(reference, name):
                features = reference.forward_features(x)
                expected[f"{name}.last_hidden_state"] = features
                if config.global_pool:
                    expected[f"{name}.pooler_output"] = reference.forward_head(features, pre_logits=True)
                if with_head:
                    expected[f"{name}.logits"] = reference.forward_head(features)
    if set(ours) != set(expected):
        raise ConversionError(f"Outputs differ in kind: folder gave {sorted(ours)}, timm {sorted(expected)}.")
    parity = {}
    for key, value in expected.items():
        parity[key] = float((ours[key] - value).abs().max())
        if not torch.allclose(ours[key], value, atol=TOLERANCE, rtol=TOLERANCE):
            raise ConversionError(f"Parity check failed for {key}: max abs diff {parity[key]:.3e} > {TOLERANCE}.")
    return parity


def _checked(key: str, source: TensorSource, dtype: torch.dtype) -> torch.Tensor:
    """A tensor read for writing, in the folder's dtype. NaN or Inf (in the checkpoint, or made by the cast) would
    make every output meaningless, and a negative BatchNorm variance has no square root: refused by name."""
    tensor = source.get(key)
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        bad = int((~torch.isfinite(tensor)).sum())
        raise ConversionError(f"{source.origin}: tensor {key} holds {bad} NaN/Inf values; the checkpoint is broken.")
    if key.endswith("running_var") and (tensor < 0).any():
        raise ConversionError(
            f"{source.origin}: BatchNorm variance {key} has {int((tensor < 0).sum())} negative values; the checkpoint "
            "is broken (a variance cannot be negative)."
        )
    cast = tensor.to(dtype)
    if cast.is_floating_point() and not torch.isfinite(cast).all():
        largest = float(tensor.abs().max())
        raise ConversionError(
            f"{source.origin}: tensor {key} does not fit {dtype} (largest magnitude {largest:.3g}): the cast makes "
            "Inf. Convert with --dtype bf16 or fp32."
        )
    return cast


def checkpoint_identity(checkpoint: Path | None) -> dict | None:
    """What the weights came from (file name, size, modification time; nothing that reveals where it lives: the
    record is published), so a batch re-run can tell a finished conversion of the same checkpoint from one of
    another; None for timm's pretrained source."""
    if checkpoint is None:
        return None
    path = Path(checkpoint).resolve()
    stat = path.stat()
    return {"name": path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def check_destination(output_dir: Path, overwrite: bool) -> None:
    """Before any work: the destination must be a folder we may create or (with overwrite) replace."""
    if output_dir.is_symlink() and not output_dir.exists():
        raise ConversionError(f"{output_dir} is a dangling symbolic link; remove it or choose another --output-dir.")
    if output_dir.exists() and not output_dir.is_dir():
        raise ConversionError(f"{output_dir} is a file, not a folder; choose another --output-dir.")
    if output_dir.exists() and not overwrite:
        raise ConversionError(f"{output_dir} already exists; pass --overwrite to replace it.")
    if output_dir.exists():
        try:
            check_replaceable(output_dir)
        except FileExistsError as error:
            raise ConversionError(str(error)) from error


def family_of(model_name: str, kwargs: dict | None = None) -> FamilyConversion:
    """The family of a timm name, from its class built bare on the meta device, before any weight is read."""
    with torch.device("meta"):
        bare = timm.create_model(model_name, pretrained=False, **(kwargs or {}))
    try:
        return family_for(bare)
    except UnsupportedArchitecture as error:
        raise ConversionError(str(error)) from error


def _write_folder(
    staging: Path,
    conversion: FamilyConversion,
    config,
    source: TensorSource,
    skeleton: torch.nn.Module,
    dtype: torch.dtype,
    max_shard_size: str,
) -> None:
    """Weights (streamed), config, code files and image processor; every key must land on our model."""
    with_head = config.num_labels > 0
    model_class = conversion.classifier if with_head else conversion.model
    with torch.device("meta"):
        target = {k: tuple(v.shape) for k, v in model_class(config).state_dict().items()}
    names = {k: conversion.convert_key(k, with_head) for k in skeleton.state_dict()}
    names = {k: v for k, v in names.items() if v is not None}
    produced = {v: source.shapes[k] for k, v in names.items()}
    if produced != target:
        missing, extra = sorted(set(target) - set(produced)), sorted(set(produced) - set(target))
        raise ConversionError(f"Key mapping bug: missing {missing[:10]}, extra {extra[:10]} (shapes may differ too).")
    write_shards(staging, ((v, _checked(k, source, dtype)) for k, v in names.items()), max_shard_size)
    config.architectures = [model_class.__name__]
    config.dtype = dtype
    config.save_pretrained(staging)
    family = conversion.family
    classes = (family.config, family.model, family.classifier, family.backbone, VitzooImageProcessor)
    for path in sibling_closure([Path(sys.modules[c.__module__].__file__) for c in classes]):
        shutil.copyfile(path, staging / path.name)
    image_processor_for(skeleton, conversion).save_pretrained(staging)


def convert(
    model_name: str,
    output_dir: Path,
    checkpoint: Path | None = None,
    dtype: str = "fp32",
    labels: Path | None = None,
    overwrite: bool = False,
    max_shard_size: str = "2GB",
    memory_budget: int | None = None,
    model_kwargs: dict | None = None,
) -> ConversionResult:
    """Python API of the command. ``memory_budget`` (bytes, default: what the kernel reports available)
    decides whether the whole model can be verified or only its first blocks; ``model_kwargs`` are extra timm
    constructor arguments for the architecture (e.g. a reduced depth for a checkpoint trained that way)."""
    output_dir = Path(output_dir)
    for line in clean_stale(output_dir):
        print(line)
    check_destination(output_dir, overwrite)
    if dtype not in DTYPES:
        raise ConversionError(f"Unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}.")
    parse_size(max_shard_size)
    label_names = read_labels(Path(labels)) if labels is not None else None
    architecture, tag = resolve_model_name(model_name)
    conversion = family_of(model_name, model_kwargs)
    kwargs = {**conversion.reference_kwargs(model_name), **(model_kwargs or {})}
    if checkpoint is None:  # timm's pretrained weights, held in memory once by timm itself
        with torch.device("meta"):  # the layout is refused before the download (a checkpoint's headers come first)
            conversion.config_from_timm(timm.create_model(model_name, pretrained=False, **kwargs))
        pretrained = timm.create_model(model_name, pretrained=True, **kwargs).eval()
        source = TensorSource.from_state_dict(pretrained.state_dict(), f"timm's pretrained {model_name}")
    else:
        source = open_checkpoint(checkpoint)
    classifier = conversion.CLASSIFIER_WEIGHT
    num_classes = source.shapes[classifier][0] if classifier in source else 0
    with torch.device("meta"):
        skeleton = timm.create_model(model_name, pretrained=False, num_classes=num_classes, **kwargs)
    # torch and timm load BatchNorm without its step counter (older checkpoints lack it): so do we
    counters = [
        k
        for k in skeleton.state_dict()
        if k.endswith(".num_batches_tracked")
        and k not in source
        and k.replace("num_batches_tracked", "running_mean") in source
    ]
    source = source.with_defaults({k: torch.tensor(0) for k in counters})
    check_source_fits(source, skeleton, model_name)
    config = conversion.config_from_timm(skeleton)
    id2label = id2label_for(skeleton, num_classes, label_names)
    if id2label:
        config.id2label, config.label2id = id2label, {v: k for k, v in id2label.items()}
    config.timm_model_name, config.timm_pretrained_tag = architecture, tag
    config.timm_version = timm.__version__
    num_parameters = sum(p.numel() for p in skeleton.parameters())
    budget = available_memory() if memory_budget is None else memory_budget
    needed = verification_bytes(num_parameters)
    depth = conversion.num_blocks(skeleton)
    blocks = None if needed <= budget else min(PARTIAL_BLOCKS, depth)
    if blocks is not None:
        print(
            f"{model_name} needs ~{needed / 2**30:.1f} GiB to verify whole, {budget / 2**30:.1f} GiB available: "
            f"verifying with its first {blocks} of {depth} blocks."
        )

    try:
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Staging(output_dir)
    except OSError as error:
        raise ConversionError(
            f"Cannot write to {output_dir.parent} ({error.strerror}); choose an --output-dir you can write to."
        ) from error
    try:
        print(f"writing {model_name} ({num_parameters:,} parameters) to {output_dir}", flush=True)
        phase("write")
        _write_folder(staging.path, conversion, config, source, skeleton, DTYPES[dtype], max_shard_size)
        print("verifying in a clean process", flush=True)
        phase("verify")
        reference = _reference(model_name, source, skeleton, conversion, DTYPES[dtype], blocks, kwargs)
        overrides = None if blocks is None else conversion.truncated_overrides(config, blocks)
        parity = verify(staging.path, reference, conversion, config, num_classes > 0, overrides)
        del reference
        record = write_parity_record(
            staging.path,
            {
                "max_abs_diff": parity,
                "tolerance": TOLERANCE,
                "reference": f"timm {timm.__version__}",
                "timm_model": model_name,
                "checkpoint": checkpoint_identity(checkpoint),
                "verified_blocks": "all" if blocks is None else f"first {blocks} of {depth}",
            },
        )
        saved = json.loads((staging.path / "config.json").read_text())
        write_model_card(staging.path, saved, record, skeleton.pretrained_cfg, num_parameters, checkpoint)
        for note in staging.move_into_place(overwrite):
            print(note)
    except DeletionError as error:  # the new folder is in place; what is left of the old one is said
        message = f"{output_dir} is written and verified, but the old folder is not gone: {error}"
        raise ConversionError(message) from error
    except FileExistsError as error:
        staging.discard()
        raise ConversionError(str(error)) from error
    except (OSError, SafetensorError) as error:
        staging.discard()
        raise ConversionError(
            f"Writing {output_dir} failed ({error}); nothing was left behind. Free space, or choose another "
            "--output-dir."
        ) from error
    except BaseException:
        staging.discard()
        raise
    return ConversionResult(output_dir, num_parameters, parity, blocks)


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
    exit_on_termination()
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
    except KeyboardInterrupt as interrupt:
        print(f"error: interrupted ({interrupt or 'Ctrl-C'}); nothing was left behind", file=sys.stderr)
        return 130
    worst = max(result.parity.values())
    scope = "whole model" if result.verified_blocks is None else f"first {result.verified_blocks} blocks"
    print(f"converted {args.model_name} -> {result.output_dir} ({result.num_parameters:,} parameters)")
    print(f"verified in a clean process ({scope}): max abs diff {worst:.2e} over {len(result.parity)} outputs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
