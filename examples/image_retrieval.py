"""Image retrieval from pooled embeddings: `pipeline("image-feature-extraction", pool=True)` embeds a folder of
images into an index (one safetensors file), then a query image finds its nearest neighbours by cosine similarity.

    python examples/image_retrieval.py index --model out/dinov2-b-reg4 --images photos/ --index out/photos.safetensors
    python examples/image_retrieval.py search --index out/photos.safetensors --query photo.jpg --top-k 5

The pooled embedding is the model's ``pooler_output`` (DINOv2/DINOv3: the normed CLS token; SigLIP: the
attention pool), the feature timm's ``forward_head(..., pre_logits=True)`` gives.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import Pipeline, pipeline

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def extractor(model: str, batch_size: int = 16) -> Pipeline:
    return pipeline("image-feature-extraction", model=model, trust_remote_code=True, batch_size=batch_size)


def embed(features: Pipeline, images: list[Image.Image | str]) -> torch.Tensor:
    """(N, D) unit-length pooled embeddings."""
    pooled = features(images, pool=True, return_tensors=True)
    return F.normalize(torch.cat([p.reshape(1, -1) for p in pooled]).float(), dim=-1)


def build_index(model: str, folder: Path, index: Path, batch_size: int = 16) -> int:
    paths = sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise SystemExit(f"No images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}.")
    embeddings = embed(extractor(model, batch_size), [Image.open(path).convert("RGB") for path in paths])
    index.parent.mkdir(parents=True, exist_ok=True)
    save_file({"embeddings": embeddings}, index, metadata={"model": model, "paths": json.dumps(paths)})
    return len(paths)


def search(index: Path, query: Image.Image, top_k: int, model: str | None = None) -> list[tuple[str, float]]:
    """The ``top_k`` (path, cosine similarity) pairs, best first; the model defaults to the index's own."""
    with safe_open(index, framework="pt") as handle:
        metadata = handle.metadata()
    embeddings = load_file(index)["embeddings"]
    scores = embeddings @ embed(extractor(model or metadata["model"]), [query.convert("RGB")])[0]
    best = scores.topk(min(top_k, len(scores)))
    paths = json.loads(metadata["paths"])
    return [(paths[i], score) for i, score in zip(best.indices.tolist(), best.values.tolist(), strict=True)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("index", help="embed every image under a folder")
    build.add_argument("--model", required=True, help="a converted folder or Hub repo id")
    build.add_argument("--images", required=True, type=Path)
    build.add_argument("--index", required=True, type=Path)
    build.add_argument("--batch-size", type=int, default=16)
    query = commands.add_parser("search", help="nearest images to a query image")
    query.add_argument("--index", required=True, type=Path)
    query.add_argument("--query", required=True, type=Path)
    query.add_argument("--top-k", type=int, default=5)
    query.add_argument("--model", default=None, help="default: the model the index was built with")
    args = parser.parse_args(argv)
    if args.command == "index":
        count = build_index(args.model, args.images, args.index, args.batch_size)
        print(json.dumps({"indexed": count, "index": str(args.index)}))
    else:
        results = search(args.index, Image.open(args.query), args.top_k, args.model)
        print(json.dumps([{"path": path, "score": round(score, 6)} for path, score in results]))


if __name__ == "__main__":
    main()
