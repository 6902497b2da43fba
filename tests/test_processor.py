"""The converted folder's image processor against timm's own eval transform, for every pretrained config.

The processor replays timm's steps on PIL images (uint8 resampling, torchvision's crop rounding), so the
expected result is equality, not a tolerance: any difference is a bug.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config
from timm.models import get_pretrained_cfg

from conversion.convert_timm import image_processor_for
from conversion.families import family_for
from conversion.sweep import supported_tags
from conversion.verify import clean_env
from vitzoo_hf import VitzooImageProcessor

# Odd sizes, both orientations, smaller than the crop, extreme aspect ratios.
SIZES = [(320, 240), (241, 333), (1024, 683), (97, 131), (640, 200), (500, 500)]


def _pretrained_data_configs() -> dict[tuple, str]:
    """One tag per distinct eval transform among every pretrained tag the sweep converts."""
    distinct: dict[tuple, str] = {}
    for tag in supported_tags():
        cfg = get_pretrained_cfg(tag)
        key = (cfg.input_size, cfg.crop_pct, cfg.crop_mode, cfg.interpolation, cfg.mean, cfg.std)
        distinct.setdefault(key, tag)
    return distinct


DATA_CONFIG_TAGS = sorted(_pretrained_data_configs().values())


def _image(width: int, height: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(width * 1000 + height)
    return Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8)).convert(mode)


def _setup(tag: str):
    with torch.device("meta"):
        model = timm.create_model(tag, pretrained=False)
    data = resolve_data_config({}, model=model)
    return data, create_transform(**data), image_processor_for(model, family_for(model))


def test_every_pretrained_eval_transform_is_covered() -> None:
    modes = {get_pretrained_cfg(tag).crop_mode for tag in DATA_CONFIG_TAGS}
    assert len(DATA_CONFIG_TAGS) >= 40 and {"center", "squash"} <= modes


@pytest.mark.parametrize("tag", DATA_CONFIG_TAGS)
def test_processor_equals_timm_eval_transform(tag: str) -> None:
    data, timm_transform, processor = _setup(tag)
    height, width = data["input_size"][1:]
    assert processor(_image(300, 200), return_tensors="pt").pixel_values.shape == (1, 3, height, width)
    for size in SIZES:
        image = _image(*size)
        ours = processor(image, return_tensors="pt").pixel_values[0]
        assert torch.equal(ours, timm_transform(image)), (tag, size, float((ours - timm_transform(image)).abs().max()))


@pytest.mark.parametrize("crop_mode", ["center", "squash", "border"])
@pytest.mark.parametrize("input_size", [(3, 224, 224), (3, 192, 256)])
def test_every_crop_mode_equals_timm(crop_mode: str, input_size: tuple[int, int, int]) -> None:
    """Modes and non-square sizes beyond what today's pretrained configs use (timm's ResizeKeepRatio paths)."""
    data = dict(
        input_size=input_size, crop_pct=0.9, crop_mode=crop_mode, interpolation="bilinear", mean=(0.4, 0.5, 0.6)
    )
    data["std"] = (0.2, 0.25, 0.3)
    timm_transform = create_transform(**data)
    size = {"height": input_size[1], "width": input_size[2]}
    processor = VitzooImageProcessor(size=size, crop_pct=0.9, crop_mode=crop_mode, resample=2, image_mean=data["mean"])
    processor.image_std = list(data["std"])
    for image_size in SIZES:
        image = _image(*image_size)
        assert torch.equal(processor(image, return_tensors="pt").pixel_values[0], timm_transform(image)), image_size


def test_size_is_the_model_input_size_as_stock_processors_mean_it() -> None:
    """User code (transformers' example script) reads ``size`` as the input size: it must be the crop."""
    _, _, square = _setup("vit_small_patch16_224.augreg_in21k_ft_in1k")  # crop_pct 0.9: resize 248, crop 224
    assert square.size == {"shortest_edge": 224} and square.crop_pct == 0.9
    _, _, squash = _setup("eva02_base_patch14_448.mim_in22k_ft_in22k_in1k")
    assert squash.size == {"height": 448, "width": 448} and squash.crop_mode == "squash"


def test_inputs_other_than_rgb_pil() -> None:
    _, timm_transform, processor = _setup("vit_base_patch16_clip_224.openai")
    image = _image(251, 199)
    expected = timm_transform(image)
    array = np.array(image)
    batch = processor([array, torch.from_numpy(array).permute(2, 0, 1), image.convert("RGBA")], return_tensors="pt")
    for row in batch.pixel_values:
        assert torch.equal(row, expected)
    gray = image.convert("L")
    assert torch.equal(processor(gray, return_tensors="pt").pixel_values[0], timm_transform(gray.convert("RGB")))


def test_bad_settings_and_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="crop_mode 'middle'"):
        VitzooImageProcessor(crop_mode="middle")
    with pytest.raises(ValueError, match=r"crop_pct must be in \(0, 1\]"):
        VitzooImageProcessor(crop_pct=1.5)
    with pytest.raises(ValueError, match="size must be"):
        VitzooImageProcessor(size={"longest_edge": 3})
    with pytest.raises(ValueError, match="set size/crop_pct"):
        VitzooImageProcessor()(_image(64, 64), do_resize=False)


CHILD = r"""
import json, sys
for hidden in ("vitzoo_hf", "timm", "conversion", "tests") + (("torchvision",) if sys.argv[2] == "1" else ()):
    sys.modules[hidden] = None
import numpy as np
from PIL import Image
from transformers import AutoImageProcessor

folder, out = sys.argv[1], {}
rng = np.random.default_rng(0)
image = Image.fromarray((rng.random((131, 97, 3)) * 255).astype(np.uint8))
for fast in (None, True, False):
    kwargs = {} if fast is None else {"use_fast": fast}
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True, **kwargs)
    out[str(fast)] = processor(image, return_tensors="np")["pixel_values"].tolist()
print(json.dumps(out))
"""


@pytest.mark.parametrize("block_torchvision", [False, True], ids=["with_torchvision", "without_torchvision"])
def test_folder_processor_is_exact_under_every_backend(tmp_path: Path, block_torchvision: bool) -> None:
    """Loaded as remote code in a clean process, with or without torchvision and whatever backend is asked for."""
    _, timm_transform, processor = _setup("vit_small_patch14_dinov2.lvd142m")
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["auto_map"] == {"AutoImageProcessor": "image_processing_vitzoo.VitzooImageProcessor"}
    assert (tmp_path / "image_processing_vitzoo.py").is_file()
    args = [sys.executable, "-c", CHILD, str(tmp_path), "1" if block_torchvision else "0"]
    result = subprocess.run(args, cwd=tmp_path, env=clean_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = json.loads(result.stdout.strip().splitlines()[-1])
    rng = np.random.default_rng(0)
    expected = timm_transform(Image.fromarray((rng.random((131, 97, 3)) * 255).astype(np.uint8)))
    for backend, pixel_values in outputs.items():
        assert torch.equal(torch.tensor(pixel_values[0]), expected), backend


def test_in_library_loading_finds_the_processor_for_the_default_backend(tmp_path: Path) -> None:
    """transformers 5 asks for the torchvision backend first; ours serves every backend, registered under each, so
    no "backend is not available" line appears where torchvision is installed."""
    from tests.helpers import save_tiny_folder

    save_tiny_folder("resnet50", tmp_path / "folder")
    code = "import vitzoo_hf\nfrom transformers import AutoImageProcessor\nAutoImageProcessor.from_pretrained('folder')"
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "backend is not available" not in run.stderr + run.stdout
