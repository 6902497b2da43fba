"""Write a small, learnable image folder (``train/`` and ``validation/``, one sub-folder per class).

Each class is a colour that dominates its images under heavy noise, drawn at several sizes and aspect ratios,
so every example here can be run end to end on any machine, with no dataset download:

    python examples/make_toy_images.py data/toy
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}
SIZES = [(48, 48), (64, 48), (48, 64), (56, 40)]


def make_image_folder(root: Path, per_class: dict[str, int] | None = None, seed: int = 0) -> Path:
    """``per_class``: images per class for each split (default 24 train, 9 validation)."""
    per_class = per_class or {"train": 24, "validation": 9}
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for name, colour in CLASSES.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                width, height = SIZES[index % len(SIZES)]
                noise = rng.normal(0, 60, size=(height, width, 3))
                pixels = np.clip(np.asarray(colour) * rng.uniform(0.6, 1.2) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{name}_{index:03d}.png")
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--train", type=int, default=24, help="images per class in train/")
    parser.add_argument("--validation", type=int, default=9, help="images per class in validation/")
    args = parser.parse_args(argv)
    make_image_folder(args.root, {"train": args.train, "validation": args.validation})
    print(f"wrote {args.root}")


if __name__ == "__main__":
    main()
