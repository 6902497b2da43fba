"""The main job, end to end: convert a timm ViT, reload it as remote code in a clean process, show parity
and predictions.

This machine has no hub access, so the weights are a local checkpoint of timm's vit_small_patch16_224 with
its own random init (the predictions are therefore arbitrary; the parity is the point). With network access,
drop --checkpoint and the converter fetches timm's pretrained weights for the tag instead.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import AutoImageProcessor

from conversion.parity_record import read_parity_record
from conversion.verify import clean_env

MODEL = "vit_small_patch16_224.augreg_in21k_ft_in1k"

CHILD = r"""
import sys
for hidden in ("vitzoo_hf", "timm", "conversion"):
    sys.modules[hidden] = None  # as on a machine with only torch + transformers
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, pipeline

folder, image_path, out_path = sys.argv[1:4]
image = Image.open(image_path)
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
pixel_values = processor(image, return_tensors="pt").pixel_values
with torch.no_grad():
    pooled = model(pixel_values).pooler_output
torch.save({"pixel_values": pixel_values, "pooled": pooled}, out_path)
classify = pipeline("image-classification", model=folder, trust_remote_code=True)
for row in classify(image, top_k=3):
    print(f"  {row['score']:.3f}  {row['label']}")
"""


def main(workdir: Path = Path("demo_output")) -> None:
    workdir.mkdir(exist_ok=True)
    torch.manual_seed(0)
    timm_model = timm.create_model(MODEL.split(".")[0], pretrained=False).eval()
    checkpoint = workdir / "timm_checkpoint.safetensors"
    save_file(timm_model.state_dict(), str(checkpoint))
    folder = workdir / "vit_small_patch16_224"

    print(f"1. convert {MODEL} (local checkpoint) -> {folder}")
    command = [sys.executable, "-m", "conversion.convert_timm", MODEL, "--checkpoint", str(checkpoint)]
    subprocess.run([*command, "--output-dir", str(folder), "--overwrite"], check=True)
    print("   files:", ", ".join(sorted(p.name for p in folder.iterdir())))

    print("2. reload with AutoModel + pipeline(trust_remote_code=True) in a clean process (no vitzoo_hf, no timm)")
    image_path, out_path = workdir / "image.png", workdir / "child_outputs.pt"
    gradient = torch.linspace(0, 255, 320).repeat(240, 1)
    pixels = torch.stack([gradient, gradient.flip(1), gradient.T[:240, :240].repeat(1, 2)[:, :320]], dim=-1)
    Image.fromarray(pixels.to(torch.uint8).numpy()).save(image_path)
    args = [sys.executable, "-c", CHILD, str(folder.resolve()), str(image_path.resolve()), str(out_path.resolve())]
    print("   top-3 predictions (random weights, real label names from timm's ImageNet-1k set):")
    subprocess.run(args, check=True, env=clean_env(), cwd=workdir)

    print("3. parity with timm on the same image")
    child = torch.load(out_path)
    with torch.no_grad():
        reference = timm_model.forward_head(timm_model.forward_features(child["pixel_values"]), pre_logits=True)
    diff = (child["pooled"] - reference).abs().max().item()
    print(f"   pooler_output vs timm pre-logits: max abs diff {diff:.2e}")
    parity = read_parity_record(folder)["max_abs_diff"]
    print(f"   converter's own check: max abs diff {max(parity.values()):.2e} over {len(parity)} outputs")
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    settings = {k: v for k, v in processor.to_dict().items() if k in ("size", "crop_pct", "crop_mode", "resample")}
    print(f"   image processor: {type(processor).__name__} {settings}")
    if diff > 1e-4:
        raise SystemExit(f"parity failed: {diff:.3e}")


if __name__ == "__main__":
    main()
