"""The README.md model card of a converted folder: Hub metadata, usage pinned to remote code, parity."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from conversion.profile import Profile, datasets_of
from vitzoo_hf.common_compat import MINIMUM_TRANSFORMERS

SUPPORTED_TRANSFORMERS = f">= {'.'.join(map(str, MINIMUM_TRANSFORMERS))} (4.57.x or any 5.x)"


def paper_ids(pretrained_cfg: dict) -> list[str]:
    """arXiv ids of timm's ``paper_ids`` ("arXiv:2110.00476", several comma-separated, or a list)."""
    ids = pretrained_cfg.get("paper_ids") or []
    ids = ids.split(",") if isinstance(ids, str) else ids
    return [i.strip().split(":", 1)[1] for i in ids if i.strip().lower().startswith("arxiv:")]


def paper_tags(pretrained_cfg: dict) -> list[str]:
    """The Hub links a model to a paper page by ``arxiv:ID`` tags."""
    return [f"arxiv:{i}" for i in paper_ids(pretrained_cfg)]


def model_details(
    config: dict,
    pretrained_cfg: dict,
    num_parameters: int,
    family: str,
    weights: WeightsOrigin,
    measured: Profile,
    datasets: list[str],
) -> str:
    """What timm's own cards list: architecture, size and cost, input, data, papers, the original source."""
    name = config["timm_model_name"]
    tag = config.get("timm_pretrained_tag")
    channels, height, width = pretrained_cfg.get("input_size", (3, 224, 224))
    lines = [
        "## Model details",
        "",
        f"- **timm architecture:** `{name}`" + (f" (pretrained tag `{tag}`)" if tag else ""),
        f"- **vitzoo_hf family:** `{family}`",
        f"- **Parameters:** {num_parameters / 1e6:.2f} M",
        f"- **Image size:** {height} x {width} ({channels} channels)",
    ]
    if measured.gmacs is not None:
        lines.append(
            f"- **GMACs:** {measured.gmacs:.2f}, **activations:** {measured.activations_m:.1f} M (at {height} x "
            f"{width}, batch 1; counted as timm's cards count them)"
        )
    if datasets:
        lines.append("- **Dataset(s), as the pretrained tag names them:** " + ", ".join(datasets))
    lines.append(f"- **Weights:** {weights.description}")
    if weights.base_model:
        how = {"finetune": "fine-tuned from", "quantized": "the weights of"}.get(weights.relation or "", "from")
        lines.append(f"- **Base model:** {how} https://huggingface.co/{weights.base_model}")
    papers = paper_ids(pretrained_cfg)
    if papers:
        lines.append("- **Papers:** " + ", ".join(f"https://arxiv.org/abs/{i}" for i in papers))
    if pretrained_cfg.get("origin_url"):
        lines.append(f"- **Original:** {pretrained_cfg['origin_url']}")
    lines.append("- **Back to timm:** `python -m conversion.to_timm FOLDER --output-dir DIR` (vitzoo_hf)")
    return "\n".join(lines)


@dataclass(frozen=True)
class WeightsOrigin:
    """Where a folder's weights came from, as its card says it: a sentence fragment, the Hub repo they come from,
    if any (the card's ``base_model``), and how (its ``base_model_relation``: ``quantized`` for the same weights in
    another format, ``finetune`` for weights trained from them)."""

    description: str
    base_model: str | None = None
    relation: str | None = None


# The usage snippet's repo id: push_to_hub.py puts the real one in the card it uploads.
REPO_ID_PLACEHOLDER = "REPO_ID"


def write_model_card(
    folder: Path,
    config: dict,
    record: dict,
    pretrained_cfg: dict,
    num_parameters: int,
    weights: WeightsOrigin,
    size_rule: str,
    family: str,
    measured: Profile,
) -> None:
    """``record`` is the folder's parity record (``vitzoo_parity.json``), the card's only source of figures;
    ``weights`` says where the weights came from; ``size_rule`` is the family's declared rule for other input
    sizes (``conversion.families.SIZE_RULES``). Tags say what the repo is (vitzoo_hf remote code of a family and a
    timm architecture, its papers), never ``timm``: timm's discovery lists repos under that tag, and
    ``timm.create_model`` cannot load this one (``conversion.to_timm`` writes one it can). ``measured``: the model's
    parameters, GMACs and activations, counted on the meta device (``conversion.profile``)."""
    name = config["timm_model_name"] + (f".{config['timm_pretrained_tag']}" if config["timm_pretrained_tag"] else "")
    with_head = any(name.endswith("ForImageClassification") for name in config["architectures"])
    datasets = datasets_of(config.get("timm_pretrained_tag"))
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-classification" if with_head else "image-feature-extraction",
        license=pretrained_cfg.get("license"),
        tags=["vitzoo_hf", "custom_code", "vision", family, config["timm_model_name"], *paper_tags(pretrained_cfg)],
        datasets=datasets or None,
        base_model=weights.base_model,
        base_model_relation=weights.relation if weights.base_model else None,
    )
    rows = "\n".join(f"| `{key}` | {value:.2e} |" for key, value in sorted(record["max_abs_diff"].items()))
    scope = record["verified_blocks"]
    if scope != "all":
        scope_note = (
            f"\n\nThe model was too large to verify whole in memory, so the check ran on the {scope} blocks of both "
            "models (all weights were validated by name and shape; every block uses the same mapping). No figure "
            "here is claimed for the whole depth."
        )
    else:
        scope_note = ""
    # Token families resample their position embedding for other sizes (an "interpolated" input); CNNs need nothing.
    tokens = size_rule == "interpolate_pos_encoding"
    other_sizes = (
        "Other sizes: `model(pixel_values, interpolate_pos_encoding=True)` resamples the position embedding exactly "
        "as\ntimm does."
        if tokens
        else "Other sizes: any size timm accepts, directly (no flag)."
    )
    second_input = (
        '"interpolated" is a\nsecond input size against timm built with `dynamic_img_size=True`'
        if tokens
        else '"resized" is a second\ninput size'
    )
    if any(key.startswith("eager.") for key in record["max_abs_diff"]):
        second_input += '; "eager" runs the native size on the eager attention path'
    source = weights.description
    auto_class = "AutoModelForImageClassification" if with_head else "AutoModel"
    fine_tune = (
        ""
        if with_head
        else f"""
To fine-tune a classifier, ask for your classes; a new head is created on these weights:

```python
model = AutoModelForImageClassification.from_pretrained(
    "{REPO_ID_PLACEHOLDER}", trust_remote_code=True, num_labels=10, ignore_mismatched_sizes=True
)
```
"""
    )
    details = model_details(config, pretrained_cfg, num_parameters, family, weights, measured, datasets)
    content = f"""---
{data.to_yaml()}
---

# {name} (vitzoo_hf)

timm's `{name}` as a native Hugging Face model ({num_parameters:,} parameters). It needs only `torch` and
`transformers` {SUPPORTED_TRANSFORMERS}: the modeling code ships in this repository (older releases stop at loading
with a message naming the installed and the minimum version).

```python
from transformers import {auto_class}, AutoImageProcessor

model = {auto_class}.from_pretrained("{REPO_ID_PLACEHOLDER}", trust_remote_code=True)
processor = AutoImageProcessor.from_pretrained("{REPO_ID_PLACEHOLDER}", trust_remote_code=True)
outputs = model(**processor(images, return_tensors="pt"))
```
{fine_tune}
{other_sizes} Features for dense tasks: `AutoBackbone` (see the vitzoo_hf docs/USAGE.md for the route that works with
local folders).

{details}

## Parity with timm

Converted from {source} with timm {config["timm_version"]}. Verified after writing, by loading this folder as
remote code in a clean process and comparing with timm on the same weights (fp32, eval; {second_input}).
Max absolute differences, tolerance
{record["tolerance"]} (the record, with the hashes of the weight files it holds for, is `vitzoo_parity.json`; it
does not apply to weights saved after a fine-tune):

| output | max abs diff |
|---|---|
{rows}{scope_note}
"""
    ModelCard(content).save(folder / "README.md")
