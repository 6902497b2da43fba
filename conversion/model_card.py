"""The README.md model card of a converted folder: Hub metadata, usage pinned to remote code, parity."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData


def write_model_card(
    folder: Path,
    config: dict,
    pretrained_cfg: dict,
    parity: dict[str, float],
    num_parameters: int,
    checkpoint: Path | None,
) -> None:
    name = config["timm_model_name"] + (f".{config['timm_pretrained_tag']}" if config["timm_pretrained_tag"] else "")
    with_head = any(name.endswith("ForImageClassification") for name in config["architectures"])
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-classification" if with_head else "image-feature-extraction",
        license=pretrained_cfg.get("license"),
        tags=["vitzoo_hf", "timm", "vision", "custom_code"],
        base_model=pretrained_cfg.get("hf_hub_id") if checkpoint is None else None,
    )
    rows = "\n".join(f"| `{key}` | {value:.2e} |" for key, value in sorted(parity.items()))
    scope = config["vitzoo_parity"]["verified_blocks"]
    if scope != "all":
        scope_note = (
            f"\n\nThe model was too large to verify whole in memory, so the check ran on the {scope} blocks of both "
            "models (all weights were validated by name and shape; every block uses the same mapping). No figure "
            "here is claimed for the whole depth."
        )
    else:
        scope_note = ""
    source = f"the local checkpoint `{checkpoint.name}`" if checkpoint else f"timm's pretrained weights for `{name}`"
    auto_class = "AutoModelForImageClassification" if with_head else "AutoModel"
    content = f"""---
{data.to_yaml()}
---

# {name} (vitzoo_hf)

timm's `{name}` as a native Hugging Face model ({num_parameters:,} parameters). It needs only `torch` and
`transformers`: the modeling code ships in this repository.

```python
from transformers import {auto_class}, AutoImageProcessor

model = {auto_class}.from_pretrained("REPO_ID", trust_remote_code=True)
processor = AutoImageProcessor.from_pretrained("REPO_ID")
outputs = model(**processor(images, return_tensors="pt"))
```

Other sizes: `model(pixel_values, interpolate_pos_encoding=True)` resamples the position embedding exactly as
timm does. Features for dense tasks: `AutoBackbone` (see the vitzoo_hf README for the route that works with
local folders).

## Parity with timm

Converted from {source} with timm {config["timm_version"]}. Verified after writing, by loading this folder as
remote code in a clean process and comparing with timm on the same weights (fp32, eval; "interpolated" is a
second input size against timm built with `dynamic_img_size=True`). Max absolute differences, tolerance
{config["vitzoo_parity"]["tolerance"]}:

| output | max abs diff |
|---|---|
{rows}{scope_note}
"""
    ModelCard(content).save(folder / "README.md")
