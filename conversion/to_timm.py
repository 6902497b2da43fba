"""A converted folder (or one fine-tuned from it with Trainer: new head size, new labels) back to timm's own format.

    python -m conversion.to_timm FOLDER --output-dir DIR [--overwrite]

The output is timm's ``save_for_hf`` layout (timm's keys in ``model.safetensors``; ``config.json`` with
``architecture``, ``num_classes``, ``label_names``, ``model_args`` and ``pretrained_cfg``), written by timm itself, so
``timm.create_model("local-dir:DIR")``, ``timm.create_model(arch, pretrained=True,
pretrained_cfg_overlay=dict(file=...))``, ``hf-hub:`` once pushed, and timm's tools load it. The architecture is
rebuilt from what the conversion recorded (``timm_model_name``, ``timm_model_args``), each of its tensors taken from
the folder through the family's own key mapping; whatever timm cannot express (another head type, a tensor timm's
architecture has no place for, a shape it would not build) is refused by name. Before the folder appears, timm loads
it and its outputs are checked equal, bit for bit, to the folder's own model.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file
from timm.models import get_model_args, save_for_hf
from timm.models._hub import load_model_config_from_path

from conversion.checkpoints import TensorSource, open_checkpoint
from conversion.common import ConversionError
from conversion.convert_timm import RESAMPLE, check_destination, family_of
from conversion.staging import DeletionError, Staging, exit_on_termination

INTERPOLATIONS = {number: name for name, number in RESAMPLE.items()}
# transformers' placeholder names for classes nobody named: not worth carrying into timm's label_names
PLACEHOLDER = "LABEL_{}"


def folder_weights(folder: Path) -> TensorSource:
    """The folder's safetensors weights (one file or a sharded index), read lazily as the conversion reads them."""
    for name in ("model.safetensors.index.json", "model.safetensors"):
        if (folder / name).is_file():
            return open_checkpoint(folder / name)
    raise ConversionError(f"{folder} has no model.safetensors (or sharded index): not a saved model folder.")


def read_folder_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise ConversionError(f"{folder} has no config.json: not a saved model folder.")
    config = json.loads(path.read_text())
    if not config.get("timm_model_name"):
        raise ConversionError(
            f"{path} records no timm_model_name: the folder was not converted from timm by vitzoo_hf, so there is "
            "no timm architecture to export it to."
        )
    return config


def timm_labels(config: dict, num_classes: int) -> list[str] | None:
    """The folder's class names in index order, unless they are transformers' placeholders."""
    id2label = {int(k): v for k, v in (config.get("id2label") or {}).items()}
    names = [id2label.get(i, PLACEHOLDER.format(i)) for i in range(num_classes)]
    if not num_classes or names == [PLACEHOLDER.format(i) for i in range(num_classes)]:
        return None
    return names


def timm_data_config(folder: Path) -> dict:
    """timm's eval transform fields from the folder's image processor (what it was converted or fine-tuned with)."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return {}
    processor = json.loads(path.read_text())
    size = processor.get("size") or {}
    edge = size.get("shortest_edge")
    height, width = (edge, edge) if edge else (size.get("height"), size.get("width"))
    data = {
        "mean": tuple(processor["image_mean"]),
        "std": tuple(processor["image_std"]),
        "crop_pct": processor.get("crop_pct"),
        "crop_mode": processor.get("crop_mode"),
        "interpolation": INTERPOLATIONS.get(processor.get("resample")),
    }
    if height and width:
        data["input_size"] = (3, int(height), int(width))
    return {k: v for k, v in data.items() if v is not None}


Build = Callable[..., torch.nn.Module]


def rebuild_timm(folder: Path, build: Build = timm.create_model) -> tuple[torch.nn.Module, dict, list[str] | None]:
    """timm's model holding the folder's weights, its config's ``model_args`` and its class names. ``build`` is
    timm's ``create_model`` (the tests' tiny variants pass their family's own tiny builder)."""
    config = read_folder_config(folder)
    architecture, tag = config["timm_model_name"], config.get("timm_pretrained_tag")
    with_head = any(name.endswith("ForImageClassification") for name in config.get("architectures") or [])
    head_type = config.get("head_type", "linear")
    if with_head and head_type != "linear":
        raise ConversionError(
            f"{folder} has a head_type={head_type!r} classifier; timm's {architecture} has a linear one, so the "
            "export cannot hold it. Export the backbone (load with AutoModel and save_pretrained), or train a "
            "linear head."
        )
    unrecorded = config.get("timm_unrecorded_args") or []
    if unrecorded:
        raise ConversionError(
            f"{folder} was converted from a timm {architecture} built with constructor arguments JSON cannot hold "
            f"({', '.join(unrecorded)}): timm's format cannot record them (its own save_for_hf refuses them too), "
            "so timm could not rebuild this model from the export."
        )
    num_classes = int(config.get("num_labels", len(config.get("id2label") or {}))) if with_head else 0
    model_args = {**(config.get("timm_model_args") or {}), "num_classes": num_classes}
    name = f"{architecture}.{tag}" if tag else architecture
    hooks = family_of(name, model_args)
    model = build(name, pretrained=False, **model_args).eval()
    ours = folder_weights(folder)
    state, used = {}, set()
    for key, tensor in model.state_dict().items():
        ours_key = hooks.convert_key(key, with_head)
        if ours_key is None:
            state[key] = tensor  # a tensor timm computes itself (the mapping drops it on the way in)
            continue
        if ours_key not in ours:
            raise ConversionError(
                f"{folder} lacks {ours_key}, which timm's {architecture} (rebuilt from the recorded "
                f"timm_model_args {model_args}) needs for {key}: timm cannot express this model (fewer blocks or "
                "layers than timm builds from these arguments, as a cut-down copy has) or the folder lost a tensor."
            )
        if ours.shapes[ours_key] != tuple(tensor.shape):
            raise ConversionError(
                f"{folder}: {ours_key} has shape {ours.shapes[ours_key]}, but timm's {architecture} built from "
                f"timm_model_args {model_args} holds {key} as {tuple(tensor.shape)}: timm cannot express this model."
            )
        state[key] = ours.get(ours_key)
        used.add(ours_key)
    left = sorted(set(ours.shapes) - used)
    if left:
        raise ConversionError(
            f"{folder} holds {len(left)} tensor(s) timm's {architecture} has no place for ({', '.join(left[:3])}"
            f"{', ...' if len(left) > 3 else ''}): the model was changed in a way timm cannot express."
        )
    model.load_state_dict(state, strict=True)
    return model, get_model_args(model), timm_labels(config, num_classes)


def load_export(exported: Path, build: Build) -> torch.nn.Module:
    """The written folder as timm loads it: ``local-dir:`` through timm's own factory; with another builder, the
    same steps (timm's config parser, the recorded arguments, the weights strictly)."""
    if build is timm.create_model:
        return timm.create_model(f"local-dir:{exported}", pretrained=True).eval()
    pretrained_cfg, architecture, model_args = load_model_config_from_path(exported)
    model = build(architecture, pretrained=False, pretrained_cfg_overlay=pretrained_cfg, **model_args)
    model.load_state_dict(load_file(exported / "model.safetensors"), strict=True)
    return model.eval()


def check_export(folder: Path, exported: Path, model: torch.nn.Module, build: Build) -> None:
    """timm, loading the written folder as its users do, gives the same outputs as the model it was written from."""
    loaded = load_export(exported, build)
    size = loaded.pretrained_cfg["input_size"][1:]
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = model(x), loaded(x)
    if not torch.equal(expected, got):
        raise ConversionError(
            f"timm loading the export of {folder} differs from the rebuilt model by "
            f"{(expected - got).abs().max().item():.3g}; nothing was written."
        )


def to_timm(folder: Path, output_dir: Path, overwrite: bool = False, build: Build = timm.create_model) -> Path:
    """Python API of the command: the timm-format folder written at ``output_dir``."""
    folder, output_dir = Path(folder), Path(output_dir)
    check_destination(output_dir, overwrite)
    model, model_args, labels = rebuild_timm(folder, build)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Staging(output_dir)
    try:
        model_config = {"label_names": labels} if labels else {}
        save_for_hf(
            model,
            staging.path,
            model_config=model_config,
            model_args=model_args,
            safe_serialization=True,
            data_config=timm_data_config(folder),
        )
        check_export(folder, staging.path, model, build)
        staging.move_into_place(overwrite)
    except DeletionError as error:
        raise ConversionError(f"{output_dir} is written, but the old folder is not gone: {error}") from error
    except BaseException:
        staging.discard()
        raise
    return output_dir


EXAMPLES = """examples (vitzoo-to-timm is the same as python -m conversion.to_timm):
  # a converted folder, or one fine-tuned from it with Trainer (new head size and labels are carried)
  vitzoo-to-timm out/r50-finetuned --output-dir out/r50-finetuned-timm
  # then, in timm:
  python -c "import timm; m = timm.create_model('local-dir:out/r50-finetuned-timm', pretrained=True)"
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder", type=Path, help="a folder converted by vitzoo_hf, or fine-tuned from one")
    parser.add_argument("--output-dir", required=True, type=Path)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    exit_on_termination()
    try:
        written = to_timm(args.folder, args.output_dir, args.overwrite)
    except (ConversionError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {written} in timm's format; load it with timm.create_model('local-dir:{written}')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
