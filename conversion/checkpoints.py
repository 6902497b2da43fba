"""Read a timm state dict from a local file: safetensors, or a torch pickle (.pth/.bin) possibly wrapping it."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")


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


def load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path} does not exist or is not a file.")
    if path.suffix == ".safetensors":
        try:
            return _unwrap(load_file(str(path)), path)
        except SafetensorError as error:
            raise ValueError(f"{path} is not a readable safetensors file ({error}); it may be truncated.") from error
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path} is not a readable torch checkpoint ({error}); it may be truncated.") from error
    return _unwrap(obj, path)
