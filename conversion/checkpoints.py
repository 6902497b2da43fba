"""Read a timm state dict tensor by tensor, and write safetensors shards as they fill.

Together they keep a conversion's peak memory near one shard: names and shapes come from file headers,
each tensor is read (safetensors, or a memory-mapped torch pickle), cast, written and dropped.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import struct
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")
WEIGHTS_NAME, INDEX_NAME = "model.safetensors", "model.safetensors.index.json"
# The one non-tensor type timm's CheckpointSaver pickles (train.py's parsed arguments); nothing else is unpickled.
TIMM_TRAINING_GLOBALS = [argparse.Namespace]
SIZE_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
}


def parse_size(text: str | int, flag: str = "--max-shard-size") -> int:
    """'2GB', '500MB', '1.5GiB' or a byte count -> bytes (decimal units as transformers reads them)."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
    unit = match.group(2).upper() if match else None
    if unit not in SIZE_UNITS or float(match.group(1)) <= 0:
        raise ValueError(f"{flag} {text!r} is not a size; use a positive number with a unit, e.g. 2GB or 500MB.")
    return int(float(match.group(1)) * SIZE_UNITS[unit])


def sniff_format(path: Path) -> str:
    """What a checkpoint file is, by its content (the extension is only a hint): safetensors, torch or index."""
    with path.open("rb") as handle:
        head = handle.read(9)
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":  # torch's zip format, or a legacy pickle
        return "torch"
    if len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < 2**30:
        return "safetensors"  # a JSON header of plausible length follows (a truncated file is reported as such)
    if head[:1] == b"{" and path.name.endswith(".json"):
        return "index"
    raise ValueError(
        f"{path} is not a checkpoint: neither safetensors nor a torch file (.pth/.bin/.pt), nor a sharded "
        "safetensors index. Pass the weights file itself."
    )


class TensorSource:
    """Tensors by (timm) name with their shapes known up front; ``get`` reads one tensor."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], read: Callable[[str], torch.Tensor], origin: str) -> None:
        self.shapes, self._read, self.origin = shapes, read, origin

    def __contains__(self, key: str) -> bool:
        return key in self.shapes

    def get(self, key: str) -> torch.Tensor:
        try:
            return self._read(key)
        except (SafetensorError, RuntimeError, OSError) as error:
            raise ValueError(f"Cannot read {key} from {self.origin} ({error}); the file may be truncated.") from error

    def with_defaults(self, defaults: dict[str, torch.Tensor]) -> TensorSource:
        """The same source, answering for ``defaults`` where it lacks them (BatchNorm's ``num_batches_tracked``,
        which torch and timm load without)."""
        added = {k: v for k, v in defaults.items() if k not in self.shapes}
        read = self._read
        shapes = {**self.shapes, **{k: tuple(v.shape) for k, v in added.items()}}
        return TensorSource(shapes, lambda key: added[key] if key in added else read(key), self.origin)

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, torch.Tensor], origin: str) -> TensorSource:
        return cls({k: tuple(v.shape) for k, v in state_dict.items()}, state_dict.__getitem__, origin)


def _unwrap(obj: object, source: Path) -> dict[str, torch.Tensor]:
    """Training checkpoints nest the weights (EMA first, as timm's own loader prefers) and DDP adds 'module.'."""
    if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                return _unwrap(obj[key], source)
        raise ValueError(f"{source} holds no state dict (looked for tensors or the keys {', '.join(WRAPPER_KEYS)}).")
    if not isinstance(obj, dict) or not obj:
        raise ValueError(f"{source} does not contain a state dict (found {type(obj).__name__}).")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _open_safetensors(path: Path) -> TensorSource:
    try:
        handle = safe_open(str(path), framework="pt")
        names = {key.removeprefix("module."): key for key in handle.keys()}  # noqa: SIM118 - not a dict
        shapes = {name: tuple(handle.get_slice(key).get_shape()) for name, key in names.items()}
    except SafetensorError as error:
        raise ValueError(f"{path} is not a readable safetensors file ({error}); it may be truncated.") from error

    def read(name: str) -> torch.Tensor:
        # A handle per tensor: the tensor maps only its own bytes, and the mapping goes when the tensor does,
        # so resident memory stays near one shard instead of accumulating the whole memory-mapped file.
        with safe_open(str(path), framework="pt") as single:
            return single.get_tensor(names[name])

    return TensorSource(shapes, read, str(path))


def _open_sharded(index_path: Path) -> TensorSource:
    """A sharded safetensors checkpoint through its index (the layout large checkpoints are published in)."""
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (ValueError, KeyError) as error:
        raise ValueError(f"{index_path} is not a safetensors index (no weight_map): {error}") from error
    shards = {name: _open_safetensors(index_path.parent / name) for name in sorted(set(weight_map.values()))}
    by_key = {key.removeprefix("module."): shards[name] for key, name in weight_map.items()}
    lacking = [(key, shard) for key, shard in weight_map.items() if key.removeprefix("module.") not in shards[shard]]
    if lacking:
        key, shard = lacking[0]
        raise ValueError(
            f"{index_path} maps {key} to {shard}, which does not hold it ({len(lacking)} such keys); the index and "
            "its shards do not belong together."
        )
    shapes = {key: source.shapes[key] for key, source in by_key.items()}
    return TensorSource(shapes, lambda key: by_key[key].get(key), str(index_path))


def open_checkpoint(path: Path) -> TensorSource:
    """A lazy view of a local checkpoint: .safetensors, a sharded safetensors index (.index.json), or
    .pth/.bin (possibly a training checkpoint)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path} does not exist or is not a file.")
    kind = sniff_format(path)
    if kind == "safetensors":
        return _open_safetensors(path)
    if kind == "index":
        return _open_sharded(path)
    with torch.serialization.safe_globals(TIMM_TRAINING_GLOBALS):
        try:  # memory-mapped: tensors stay on disk until read (zip-format pickles, torch >= 2.1)
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except pickle.UnpicklingError as error:
            raise ValueError(_unsafe_pickle_message(path, error)) from error
        except RuntimeError:
            try:  # legacy (non-zip) pickles cannot be mapped
                obj = torch.load(path, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError as error:
                raise ValueError(_unsafe_pickle_message(path, error)) from error
            except Exception as error:
                raise ValueError(
                    f"{path} is not a readable torch checkpoint ({error}); it may be truncated."
                ) from error
        except Exception as error:
            raise ValueError(f"{path} is not a readable torch checkpoint ({error}); it may be truncated.") from error
    return TensorSource.from_state_dict(_unwrap(obj, path), str(path))


def _unsafe_pickle_message(path: Path, error: Exception) -> str:
    found = re.search(r"GLOBAL ([\w.]+)", str(error))
    what = f" ({found.group(1)})" if found else ""
    return (
        f"{path} holds Python objects{what} beyond tensors and timm's training arguments; loading them could run "
        "arbitrary code, so it is refused. Save the weights alone, e.g. torch.save(model.state_dict(), path) or "
        "safetensors, and convert that."
    )


def write_shards(folder: Path, tensors: Iterable[tuple[str, torch.Tensor]], max_shard_size: str | int) -> list[str]:
    """Write (name, tensor) pairs into safetensors shards of at most ``max_shard_size`` as they arrive.

    One shard is in memory at a time. A single shard is ``model.safetensors``; several get transformers'
    names and an index with the weight map. Returns the file names written.
    """
    limit = parse_size(max_shard_size)
    shards, current, current_size, total = [], {}, 0, 0
    weight_map: dict[str, int] = {}

    def flush() -> None:
        nonlocal current, current_size
        if current:
            path = folder / f".shard-{len(shards):05d}.tmp"
            save_file(current, str(path), metadata={"format": "pt"})
            shards.append(path)
            current, current_size = {}, 0

    for name, tensor in tensors:
        size = tensor.numel() * tensor.element_size()
        if current and current_size + size > limit:
            flush()
        current[name] = tensor.contiguous()
        weight_map[name] = len(shards)
        current_size += size
        total += size
    flush()
    if len(shards) == 1:
        shards[0].rename(folder / WEIGHTS_NAME)
        return [WEIGHTS_NAME]
    names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for path, name in zip(shards, names, strict=True):
        path.rename(folder / name)
    index = {"metadata": {"total_size": total}, "weight_map": {k: names[i] for k, i in sorted(weight_map.items())}}
    (folder / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    return [*names, INDEX_NAME]
