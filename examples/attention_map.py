"""Render where the CLS token looks: the last block's CLS-to-patch attention over the image, per head and averaged,
as a PNG (the DINO-paper picture).

    python examples/attention_map.py --model out/dinov2-s14 --image photo.jpg --output attention.png

The image goes through the model's own processor; the maps come from ``output_attentions=True`` (computed on the
eager path for that call, whatever attention backend the model uses). Register tokens and other prefix tokens are
left out, so the map covers exactly the patch grid. The PNG shows the processed image, then the mean over heads,
then each head, as heat-map overlays in one row.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, PreTrainedModel


def cls_attention(model: PreTrainedModel, pixel_values: torch.Tensor, layer: int = -1) -> torch.Tensor:
    """(heads, grid_h, grid_w): attention from the CLS token to each patch in block ``layer``, rows summing to
    the share of attention that went to patches (the rest went to prefix tokens)."""
    config = model.config
    if not config.class_token:
        raise ValueError(
            f"{type(model).__name__} has no class token (class_token=False), so there is no CLS attention to draw; "
            "use a model with a CLS token (DINO, DINOv2, DINOv3, CLIP, DeiT, ViT)."
        )
    with torch.no_grad():
        outputs = model(pixel_values=pixel_values, output_attentions=True, interpolate_pos_encoding=True)
    patch = (config.patch_size,) * 2 if isinstance(config.patch_size, int) else config.patch_size
    grid = (pixel_values.shape[-2] // patch[0], pixel_values.shape[-1] // patch[1])
    attention = outputs.attentions[layer][0, :, 0, config.num_prefix_tokens :]  # (heads, patches)
    return attention.reshape(-1, *grid)


def overlay(image: Image.Image, heat: np.ndarray, colormap: str = "inferno", alpha: float = 0.6) -> Image.Image:
    """``heat`` (grid) min-max scaled, coloured, upsampled to the image with nearest patches, blended in."""
    span = heat.max() - heat.min()
    scaled = (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)
    colours = (colormaps[colormap](scaled)[..., :3] * 255).astype(np.uint8)
    heat_image = Image.fromarray(colours).resize(image.size, Image.Resampling.NEAREST)
    return Image.blend(image.convert("RGB"), heat_image, alpha)


def render(model: str, image_path: Path, output: Path, layer: int = -1) -> dict:
    processor = AutoImageProcessor.from_pretrained(model, trust_remote_code=True)
    network = AutoModel.from_pretrained(model, trust_remote_code=True).eval()
    pixel_values = processor(Image.open(image_path).convert("RGB"), return_tensors="pt")["pixel_values"]
    maps = cls_attention(network, pixel_values, layer)
    # The image the model saw: undo the normalisation of the processed tensor.
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (processor.image_mean, processor.image_std))
    seen = ((pixel_values[0] * std + mean).clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    base = Image.fromarray(seen)
    scale = max(1, -(-224 // base.height))  # small inputs are enlarged (nearest), so the patches stay visible
    base = base.resize((base.width * scale, base.height * scale), Image.Resampling.NEAREST)
    tiles = [base, overlay(base, maps.mean(0).numpy())] + [overlay(base, head.numpy()) for head in maps]
    sheet = Image.new("RGB", (base.width * len(tiles), base.height))
    for index, tile in enumerate(tiles):
        sheet.paste(tile, (index * base.width, 0))
    output.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(output)
    flat = maps.mean(0)
    row, col = divmod(int(flat.argmax()), flat.shape[1])
    return {"output": str(output), "heads": maps.shape[0], "grid": list(maps.shape[1:]), "peak_patch": [row, col]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a converted folder or Hub repo id")
    parser.add_argument("--image", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path, help="a .png path")
    parser.add_argument("--layer", type=int, default=-1, help="which block (default: the last)")
    args = parser.parse_args(argv)
    summary = render(args.model, args.image, args.output, args.layer)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
