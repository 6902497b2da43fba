"""Load a model bigger than the memory you have: `device_map="auto"` (with `max_memory` and disk offload), and
building on the meta device, then filling in the weights with accelerate. Both give the outputs of a plain
`from_pretrained` load; the script prints the largest difference for each route.

    python examples/load_big_model.py --model out/dinov3-vit7b --max-memory 2GiB --offload-dir /tmp/offload

Our models keep no non-persistent buffers (RoPE tables are computed in the forward), so weights built on the
meta device need no re-initialisation: what the checkpoint holds is the whole model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from accelerate import init_empty_weights, load_checkpoint_and_dispatch
from huggingface_hub import snapshot_download
from transformers import AutoConfig, AutoModelForImageClassification
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME


def local_folder(model: str) -> Path:
    """accelerate reads checkpoints from disk: a Hub id is downloaded (or found in the cache) first."""
    return Path(model) if Path(model).is_dir() else Path(snapshot_download(model))


def load_with_device_map(model: str, max_memory: str, offload_dir: Path) -> torch.nn.Module:
    """Blocks that do not fit ``max_memory`` go to ``offload_dir`` and are paged in during the forward;
    ``_no_split_modules`` keeps each transformer block on one device."""
    return AutoModelForImageClassification.from_pretrained(
        model,
        trust_remote_code=True,
        device_map="auto",
        max_memory={"cpu": max_memory},
        offload_folder=str(offload_dir),
    )


def load_on_meta(model: str) -> torch.nn.Module:
    """No memory is allocated until the weights arrive, tensor by tensor, straight to their device."""
    folder = local_folder(model)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    with init_empty_weights():
        empty = AutoModelForImageClassification.from_config(config, trust_remote_code=True)
    index = folder / SAFE_WEIGHTS_INDEX_NAME
    checkpoint = folder if index.exists() else folder / SAFE_WEIGHTS_NAME
    return load_checkpoint_and_dispatch(
        empty, str(checkpoint), device_map="auto", no_split_module_classes=empty._no_split_modules
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a converted folder or Hub repo id")
    parser.add_argument("--max-memory", default="2GiB", help="CPU memory for weights; the rest is offloaded")
    parser.add_argument("--offload-dir", type=Path, required=True)
    parser.add_argument("--image-size", type=int, default=None, help="default: the model's own")
    args = parser.parse_args(argv)

    reference = AutoModelForImageClassification.from_pretrained(args.model, trust_remote_code=True).eval()
    size = args.image_size or reference.config.image_size
    height, width = (size, size) if isinstance(size, int) else size
    pixel_values = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference(pixel_values).logits
        mapped = load_with_device_map(args.model, args.max_memory, args.offload_dir).eval()
        meta = load_on_meta(args.model).eval()
        summary = {
            "device_map": {name: str(device) for name, device in mapped.hf_device_map.items()},
            "device_map_max_abs_diff": (mapped(pixel_values).logits - expected).abs().max().item(),
            "meta_max_abs_diff": (meta(pixel_values).logits.cpu() - expected).abs().max().item(),
        }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
