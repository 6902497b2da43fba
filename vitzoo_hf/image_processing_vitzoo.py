"""timm's eval transform as a transformers image processor, shipped as remote code with every family.

No stock processor reproduces timm: transformers crops at ``(W - S) // 2`` where torchvision rounds, and its
torchvision backend resizes float tensors where timm resizes uint8 PIL images. This one does what
``timm.data.create_transform(**resolve_data_config(...))`` does, step for step (PIL resampling in uint8,
torchvision's resize and crop arithmetic, ``ToTensor`` and ``Normalize`` in float32), so its output equals
timm's bit for bit, with or without torchvision installed.

``size`` means what it means in stock processors: the model's input size (``{"shortest_edge": S}`` for a square
center crop, ``{"height": H, "width": W}`` otherwise), which is also what user code reads it as. ``crop_pct`` and
``crop_mode`` ("center", "squash", "border") are timm's.
"""

from __future__ import annotations

import math

import numpy as np
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.image_transforms import to_pil_image

try:
    import PIL.Image
except ImportError:  # pragma: no cover - transformers' image stack needs Pillow anyway
    PIL = None

CROP_MODES = ("center", "squash", "border")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


MAX_SIZE = 16384  # a sanity bound: larger "sizes" are typos, and would allocate gigabytes per image


def input_size(size: dict) -> tuple[int, int]:
    """(height, width) the processor outputs, from a stock-style ``size`` dict."""
    if "shortest_edge" in size:
        height = width = size["shortest_edge"]
    elif "height" in size and "width" in size:
        height, width = size["height"], size["width"]
    else:
        raise ValueError(f"size must be {{'shortest_edge': S}} or {{'height': H, 'width': W}}, got {size!r}.")
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_SIZE for v in (height, width)):
        raise ValueError(f"size must hold whole pixel counts from 1 to {MAX_SIZE}, got {size!r}.")
    return height, width


def resized_size(image_hw: tuple[int, int], target_hw: tuple[int, int], crop_pct: float, crop_mode: str):
    """(height, width) after timm's resize step, with torchvision's and timm's integer arithmetic."""
    scale = tuple(math.floor(x / crop_pct) for x in target_hw)
    height, width = image_hw
    if crop_mode == "squash":
        return scale
    if crop_mode == "center" and scale[0] == scale[1]:  # torchvision Resize(int): shorter edge, long one truncated
        short, long = min(height, width), max(height, width)
        new_long = int(scale[0] * long / short)
        return (new_long, scale[0]) if height > width else (scale[0], new_long)
    # timm ResizeKeepRatio: shortest side fits ("center") or longest side fits ("border"), rounded
    ratios = (height / scale[0], width / scale[1])
    ratio = max(ratios) if crop_mode == "border" else min(ratios)
    return round(height / ratio), round(width / ratio)


def center_crop(image: PIL.Image.Image, target_hw: tuple[int, int], fill: tuple[int, ...]) -> PIL.Image.Image:
    """torchvision's CenterCrop (offsets rounded half to even), padding with ``fill`` when the image is smaller."""
    crop_h, crop_w = target_hw
    width, height = image.size
    if crop_w > width or crop_h > height:
        padded = PIL.Image.new(image.mode, (max(width, crop_w), max(height, crop_h)), fill)
        padded.paste(
            image, ((crop_w - width) // 2 if crop_w > width else 0, (crop_h - height) // 2 if crop_h > height else 0)
        )
        image, (width, height) = padded, padded.size
    top, left = round((height - crop_h) / 2), round((width - crop_w) / 2)  # half to even, as torchvision
    return image.crop((left, top, left + crop_w, top + crop_h))


class VitzooImageProcessor(BaseImageProcessor):
    r"""timm's eval transform: resize by ``crop_pct`` (``crop_mode`` "center", "squash" or "border"), crop to
    ``size``, scale to [0, 1], normalize by ``image_mean``/``image_std``. ``resample`` is a PIL filter number
    (3 bicubic, 2 bilinear, 0 nearest, 1 lanczos)."""

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        size: dict | None = None,
        crop_pct: float = 0.875,
        crop_mode: str = "center",
        resample: int = 3,
        image_mean: list[float] | None = None,
        image_std: list[float] | None = None,
        do_convert_rgb: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if crop_mode not in CROP_MODES:
            raise ValueError(f"Unknown crop_mode {crop_mode!r}; expected one of {', '.join(CROP_MODES)}.")
        if not 0 < crop_pct <= 1:
            raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}.")
        self.size = dict(size or {"shortest_edge": 224})
        input_size(self.size)
        self.crop_pct = float(crop_pct)
        self.crop_mode = crop_mode
        self.resample = int(resample)
        self.image_mean = list(image_mean or IMAGENET_MEAN)
        self.image_std = list(image_std or IMAGENET_STD)
        self.do_convert_rgb = do_convert_rgb

    def transform(self, image) -> np.ndarray:
        """One image (PIL, or an HWC/CHW array or tensor; floats read as [0, 1]) to a normalized CHW float32 array."""
        if PIL is None:
            raise ImportError("VitzooImageProcessor resizes with Pillow, as timm does: pip install pillow")
        if not isinstance(image, PIL.Image.Image):
            image = to_pil_image(image)
        if self.do_convert_rgb and image.mode != "RGB":
            image = image.convert("RGB")
        if 0 in image.size:
            raise ValueError(f"An image of {image.width}x{image.height} pixels has nothing to resize; check the input.")
        target = input_size(self.size)
        height, width = resized_size((image.height, image.width), target, self.crop_pct, self.crop_mode)
        if (width, height) != image.size:
            image = image.resize((width, height), self.resample)
        fill = tuple(round(255 * v) for v in self.image_mean) if self.crop_mode == "border" else 0
        array = np.asarray(center_crop(image, target, fill), dtype=np.float32) / np.float32(255)
        if array.ndim == 2:
            array = array[:, :, None]
        mean, std = np.asarray(self.image_mean, np.float32), np.asarray(self.image_std, np.float32)
        return ((array - mean) / std).transpose(2, 0, 1)

    def preprocess(self, images, return_tensors: str | None = None, **kwargs) -> BatchFeature:
        if kwargs:
            raise ValueError(
                f"VitzooImageProcessor takes images and return_tensors only, got {', '.join(kwargs)}; set "
                "size/crop_pct/crop_mode/resample/image_mean/image_std on the processor instead."
            )
        batch = images if isinstance(images, (list, tuple)) else [images]
        if batch:
            pixel_values = np.stack([self.transform(image) for image in batch])
        else:  # an empty batch stays one, as the models take it
            pixel_values = np.zeros((0, len(self.image_mean), *input_size(self.size)), dtype=np.float32)
        return BatchFeature(data={"pixel_values": pixel_values}, tensor_type=return_tensors)


__all__ = ["VitzooImageProcessor"]
