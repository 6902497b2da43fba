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
from timm.models import get_model_args, split_model_name_tag

from conversion.checkpoints import TensorSource, open_checkpoint, parse_size, write_shards
from conversion.common import ConversionError, UnsupportedArchitecture
from conversion.families import FamilyHooks, family_for
from conversion.model_card import WeightsOrigin, write_model_card
from conversion.parity_record import write_parity_record
from conversion.profile import profile_model
from conversion.remote_code import sibling_closure
from conversion.staging import DeletionError, Staging, check_replaceable, clean_stale, exit_on_termination, phase
from conversion.timm_folder import TimmFolder, fetch_hub_repo, hub_repo_of, read_timm_folder
from conversion.truncation import config_overrides, depth_bound
from conversion.verify import TOLERANCE, reference_model, verified_blocks, verify
from vitzoo_hf import VitzooImageProcessor

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# PIL filter numbers of timm's interpolation names
RESAMPLE = {"bicubic": 3, "bilinear": 2, "nearest": 0, "lanczos": 1}


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
    lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1)]
    return checked_labels([(f"{path}:{number}", f"line {number}", name) for number, name in lines if name])


def checked_labels(entries: list[tuple[str, str, str]]) -> list[str]:
    """Class names, each with where it was read (``file:line``, ``config.json label_names[i]``) and how a repeat
    names the first (``line 1``): control characters and repeats are refused there."""
    seen: dict[str, str] = {}
    for where, ref, name in entries:
        control = [c for c in name if unicodedata.category(c) == "Cc"]
        if control:
            raise ConversionError(
                f"{where} holds a control character ({control[0]!r}) in the label {name!r}; labels are "
                "shown in terminals and on the Hub: give plain text."
            )
        if name in seen:
            raise ConversionError(f"{where} repeats the label {name!r} of {seen[name]}; labels must differ.")
        seen[name] = ref
    return [name for _, _, name in entries]


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


def image_processor_for(model: torch.nn.Module, hooks: FamilyHooks) -> VitzooImageProcessor:
    """The processor that reproduces timm's eval transform for this model's pretrained config, at the size the
    model was built for (a checkpoint fine-tuned at another ``img_size`` keeps its crop rule at its own size)."""
    data = resolve_data_config({"input_size": hooks.input_size(model)}, model=model)
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


def timm_folder_for(model_name: str, checkpoint: Path | None, revision: str | None) -> TimmFolder | None:
    """The timm-format model the arguments name, if any: a Hub repo id (``timm/resnet50.a1_in1k``, ``hf-hub:``
    or ``hf_hub:`` prefixed, ``@revision`` allowed), a local folder as the model, or a folder as ``--checkpoint``
    (whose architecture must then be the one named). None for a timm name with or without a checkpoint file."""
    hub = hub_repo_of(model_name)
    if hub is not None:
        repo, pinned = hub
        if checkpoint is not None:
            raise ConversionError(f"{model_name} is a Hub repo and brings its own weights; drop --checkpoint.")
        if pinned and revision and pinned != revision:
            raise ConversionError(f"{model_name} pins revision {pinned!r} but --revision says {revision!r}; give one.")
        return fetch_hub_repo(repo, pinned or revision)
    if revision is not None:
        raise ConversionError(
            f"--revision applies to Hub repos (owner/name or hf-hub:owner/name); {model_name!r} is not one."
        )
    if Path(model_name).is_dir():
        if checkpoint is not None:
            raise ConversionError(f"{model_name} is a timm-format folder with its own weights; drop --checkpoint.")
        return read_timm_folder(Path(model_name))
    if checkpoint is None or not Path(checkpoint).is_dir():
        return None
    folder = read_timm_folder(Path(checkpoint))
    named, _ = resolve_model_name(model_name)
    if named != folder.architecture:
        raise ConversionError(
            f"{checkpoint} holds a timm {folder.architecture!r} (its config.json's architecture), not {named!r}. "
            f"Name {folder.architecture}, or pass the folder alone as the model."
        )
    return folder


def weights_origin(
    folder: TimmFolder | None, checkpoint: Path | None, model: torch.nn.Module, tag: str | None
) -> WeightsOrigin:
    """What the card says of the weights, the Hub repo they come from and how (``base_model_relation``): the same
    weights re-encoded are the Hub's ``quantized`` relation (a new format or dtype of them, never "finetune", which the
    Hub assumes where no relation is given); a user's checkpoint or timm-format fine-tune of a pretrained tag (named,
    or the tag timm's save_for_hf recorded in the folder) is a ``finetune`` of that tag's repo."""
    if folder is not None and folder.hub_repo:
        commit = f" (commit `{folder.hub_commit[:12]}`)" if folder.hub_commit else ""
        return WeightsOrigin(f"the timm-format Hub repo `{folder.hub_repo}`{commit}", folder.hub_repo, "quantized")
    base = model.pretrained_cfg.get("hf_hub_id") or None  # of the tag the model was built as (timm's default if none)
    if folder is not None:
        fine_tuned_from = base if folder.tag else None  # save_for_hf keeps the tag it was trained from
        return WeightsOrigin(
            f"a local timm-format folder (`{folder.weights.name}`, `{folder.model_name}`)",
            fine_tuned_from,
            "finetune" if fine_tuned_from else None,
        )
    if checkpoint is not None:
        fine_tuned_from = base if tag else None  # only a tag the user named says whose weights were trained on
        return WeightsOrigin(
            f"the local checkpoint `{Path(checkpoint).name}`", fine_tuned_from, "finetune" if fine_tuned_from else None
        )
    name = model.pretrained_cfg.get("architecture", "") + (
        f".{model.pretrained_cfg['tag']}" if model.pretrained_cfg.get("tag") else ""
    )
    return WeightsOrigin(f"timm's pretrained weights for `{name}`", base, "quantized" if base else None)


def timm_model_args(model: torch.nn.Module, reference: dict, asked: dict) -> tuple[dict, list[str]]:
    """The constructor arguments timm records for rebuilding ``model`` (its ``save_for_hf`` ``model_args``), as
    JSON, for the way back (``conversion.to_timm``), and the names of those JSON cannot hold (a layer class passed
    through the Python API: timm's own save_for_hf refuses them too). Less the class count (the folder's head
    decides it) and the arguments only the verification's reference takes."""
    args, unrecorded = {}, []
    for key, value in get_model_args(model).items():
        if key == "num_classes" or (key in reference and key not in asked):
            continue
        try:
            args[key] = json.loads(json.dumps(value))
        except (TypeError, ValueError):
            unrecorded.append(key)
    return args, sorted(unrecorded)


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


def family_of(model_name: str, kwargs: dict | None = None) -> FamilyHooks:
    """The family of a timm name, from its class built bare on the meta device, before any weight is read."""
    with torch.device("meta"):
        bare = timm.create_model(model_name, pretrained=False, **(kwargs or {}))
    try:
        return family_for(bare)
    except UnsupportedArchitecture as error:
        raise ConversionError(str(error)) from error


def skeleton(model_name: str, hooks: FamilyHooks, kwargs: dict, blocks: int | None = None) -> torch.nn.Module:
    """The architecture on the meta device (no memory), cut to its first ``blocks`` per group if given."""
    with torch.device("meta"):
        model = timm.create_model(model_name, pretrained=False, **kwargs)
    return hooks.truncate(model, blocks) if blocks is not None else model


def check_mapping(hooks: FamilyHooks, config, shapes: dict[str, tuple], with_head: bool) -> dict[str, str]:
    """timm key -> our key for a timm state dict of these ``shapes``; every key must land on our model with its
    shape (else the mapping or the config is wrong: said with examples)."""
    model_class = hooks.family.classifier if with_head else hooks.family.model
    with torch.device("meta"):
        target = {k: tuple(v.shape) for k, v in model_class(config).state_dict().items()}
    names = {k: hooks.convert_key(k, with_head) for k in shapes}
    names = {k: v for k, v in names.items() if v is not None}
    produced = {v: tuple(shapes[k]) for k, v in names.items()}
    if produced != target:
        missing, extra = sorted(set(target) - set(produced)), sorted(set(produced) - set(target))
        wrong = sorted(k for k in set(target) & set(produced) if target[k] != produced[k])
        raise ConversionError(
            f"Key mapping bug: missing {missing[:10]}, extra {extra[:10]}, shapes differ for {wrong[:10]}."
        )
    return names


def _write_folder(
    staging: Path,
    hooks: FamilyHooks,
    config,
    source: TensorSource,
    model: torch.nn.Module,
    dtype: torch.dtype,
    max_shard_size: str,
) -> None:
    """Weights (streamed), config, code files and image processor; every key must land on our model."""
    with_head = config.num_labels > 0
    names = check_mapping(hooks, config, source.shapes, with_head)
    write_shards(staging, ((v, _checked(k, source, dtype)) for k, v in names.items()), max_shard_size)
    config.architectures = [(hooks.family.classifier if with_head else hooks.family.model).__name__]
    config.dtype = dtype
    config.save_pretrained(staging)
    family = hooks.family
    classes = (family.config, family.model, family.classifier, family.backbone, VitzooImageProcessor)
    for path in sibling_closure([Path(sys.modules[c.__module__].__file__) for c in classes]):
        shutil.copyfile(path, staging / path.name)
    image_processor_for(model, hooks).save_pretrained(staging)


def open_source(model_name: str, checkpoint: Path | None, hooks: FamilyHooks, kwargs: dict) -> TensorSource:
    """The weights: a checkpoint opened lazily (headers only), or timm's pretrained weights, held in memory once by
    timm itself after the layout is accepted (a checkpoint's headers come first; a download comes last)."""
    if checkpoint is not None:
        return open_checkpoint(checkpoint)
    hooks.config_from_timm(skeleton(model_name, hooks, kwargs))
    pretrained = timm.create_model(model_name, pretrained=True, **kwargs).eval()
    return TensorSource.from_state_dict(pretrained.state_dict(), f"timm's pretrained {model_name}")


def with_step_counters(source: TensorSource, model: torch.nn.Module) -> TensorSource:
    """torch and timm load BatchNorm without its step counter (older checkpoints lack it): so do we."""
    counters = [
        k
        for k in model.state_dict()
        if k.endswith(".num_batches_tracked")
        and k not in source
        and k.replace("num_batches_tracked", "running_mean") in source
    ]
    return source.with_defaults({k: torch.tensor(0) for k in counters})


def partial_overrides(
    hooks: FamilyHooks, config, model: torch.nn.Module, cut: torch.nn.Module, with_head: bool
) -> dict:
    """The config fields that rebuild a truncated copy (``cut``) from the folder of the whole ``model`` (whose config
    is ``config``); refused where a weight's shape depends on the depth (RoPE-Mixed's per-block frequency table):
    the copy could not load it."""
    bound = depth_bound(model, cut)
    if bound:
        raise ConversionError(f"Partial verification is not possible: {bound[0]} depends on the depth.")
    cut_config = hooks.config_from_timm(cut)
    check_mapping(hooks, cut_config, {k: tuple(v.shape) for k, v in cut.state_dict().items()}, with_head)
    return config_overrides(config, cut_config)


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
    blocks: int | None = None,
    revision: str | None = None,
) -> ConversionResult:
    """Python API of the command. ``model_name`` is a timm name (``arch.tag``), a Hub repo of timm's format
    (``timm/arch.tag``, ``hf-hub:owner/name``, at ``revision``) or a local timm-format folder; ``checkpoint`` a
    state dict file or a timm-format folder. A timm-format model brings its architecture, constructor arguments,
    labels and pretrained config (``labels`` and ``model_kwargs`` still override). ``memory_budget`` (bytes,
    default: what the kernel reports available) decides whether the whole model can be verified or only its first
    blocks; ``model_kwargs`` are extra timm constructor arguments for the architecture, ``blocks`` keeps only the
    first blocks of each block group of the built model (a checkpoint trained shallower; the sweep's fast runs)."""
    output_dir = Path(output_dir)
    for line in clean_stale(output_dir):
        print(line)
    check_destination(output_dir, overwrite)
    if dtype not in DTYPES:
        raise ConversionError(f"Unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}.")
    parse_size(max_shard_size)
    label_names = read_labels(Path(labels)) if labels is not None else None
    folder = timm_folder_for(model_name, checkpoint, revision)
    if folder is not None:
        named_tag = None if folder.hub_repo or Path(model_name).is_dir() else resolve_model_name(model_name)[1]
        model_name = f"{folder.architecture}.{named_tag}" if named_tag else folder.model_name
        checkpoint = folder.weights
        model_kwargs = {**folder.model_args, "pretrained_cfg_overlay": folder.pretrained_cfg, **(model_kwargs or {})}
        if label_names is None and folder.label_names is not None:
            where = f"{folder.hub_repo or folder.weights.parent}/config.json label_names"
            entries = [(f"{where}[{i}]", f"label_names[{i}]", name) for i, name in enumerate(folder.label_names)]
            label_names = checked_labels(entries)
    architecture, tag = resolve_model_name(model_name)
    hooks = family_of(model_name, model_kwargs)
    kwargs = {**hooks.reference_kwargs(model_name), **(model_kwargs or {})}
    source = open_source(model_name, checkpoint, hooks, kwargs)
    classifier = hooks.classifier_key(skeleton(model_name, hooks, kwargs))
    kwargs["num_classes"] = source.shapes[classifier][0] if classifier in source else 0
    model = skeleton(model_name, hooks, kwargs, blocks)
    source = with_step_counters(source, model)
    check_source_fits(source, model, model_name)
    config = hooks.config_from_timm(model)
    num_parameters = sum(p.numel() for p in model.parameters())
    depth = hooks.num_blocks(model)
    partial = verified_blocks(model_name, num_parameters, depth, memory_budget)
    overrides = None
    if partial is not None:  # before the labels and timm fields: the overrides are the architecture's difference
        cut = hooks.truncate(skeleton(model_name, hooks, kwargs, blocks), partial)
        overrides = partial_overrides(hooks, config, model, cut, kwargs["num_classes"] > 0)
    id2label = id2label_for(model, kwargs["num_classes"], label_names)
    if id2label:
        config.id2label, config.label2id = id2label, {v: k for k, v in id2label.items()}
    config.timm_model_name, config.timm_pretrained_tag = architecture, tag
    config.timm_model_args, config.timm_unrecorded_args = timm_model_args(
        model, hooks.reference_kwargs(model_name), model_kwargs or {}
    )
    config.timm_version = timm.__version__

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
        _write_folder(staging.path, hooks, config, source, model, DTYPES[dtype], max_shard_size)
        print("verifying in a clean process", flush=True)
        phase("verify")
        cut_to = blocks if partial is None else min(partial, blocks or partial)
        reference = reference_model(model_name, source, hooks, DTYPES[dtype], cut_to, kwargs)
        parity = verify(staging.path, reference, hooks, bool(config.global_pool), kwargs["num_classes"] > 0, overrides)
        del reference
        record = write_parity_record(
            staging.path,
            {
                "max_abs_diff": parity,
                "tolerance": TOLERANCE,
                "reference": f"timm {timm.__version__}",
                "timm_model": model_name,
                "checkpoint": checkpoint_identity(checkpoint),
                **({"timm_format": folder.identity()} if folder is not None else {}),
                "verified_blocks": "all" if partial is None else f"first {partial} of {depth}",
            },
        )
        saved = json.loads((staging.path / "config.json").read_text())
        origin = weights_origin(folder, checkpoint, model, tag)
        # the size the model was built for (timm keeps its tag's in pretrained_cfg even under img_size=...)
        card_cfg = {**model.pretrained_cfg, "input_size": tuple(hooks.input_size(model))}
        measured = profile_model(skeleton(model_name, hooks, kwargs, blocks), card_cfg["input_size"])
        write_model_card(
            staging.path,
            saved,
            record,
            card_cfg,
            num_parameters,
            origin,
            hooks.size_rule,
            hooks.name,
            measured,
        )
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
    return ConversionResult(output_dir, num_parameters, parity, partial)


EXAMPLES = """examples (vitzoo-convert is the same as python -m conversion.convert_timm):
  # timm's pretrained weights, by timm name or timm's Hub id
  vitzoo-convert convnext_tiny.fb_in22k_ft_in1k --output-dir out/convnext-t
  vitzoo-convert timm/resnet50.a1_in1k --output-dir out/r50
  # your timm fine-tune: a save_for_hf folder (labels, preprocessing, arguments read from it) or a Hub repo
  vitzoo-convert path/to/my-timm-finetune --output-dir out/mine
  vitzoo-convert hf-hub:me/my-timm-finetune --revision v2 --output-dir out/mine-v2
  # a state dict or train.py checkpoint, with your class names
  vitzoo-convert vit_small_patch16_224 --checkpoint model_best.pth.tar --labels classes.txt --output-dir out/vit
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "model_name",
        help="timm model name, optionally with a pretrained tag (name.tag); or a timm-format Hub repo "
        "(timm/name.tag, hf-hub:owner/name[@revision]) or local folder (timm's save_for_hf layout)",
    )
    parser.add_argument("--output-dir", required=True, type=Path)
    parser.add_argument(
        "--checkpoint", type=Path, help="local timm state dict, training checkpoint, or timm-format folder"
    )
    parser.add_argument("--revision", help="branch, tag or commit of a Hub repo given as the model (default main)")
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
            revision=args.revision,
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
