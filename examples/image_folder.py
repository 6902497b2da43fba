"""What the training examples share: an image folder read by `datasets`, preprocessed by the model's own stock
image processor, and a classifier with a fresh head sized to the folder's classes."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from datasets import DatasetDict, load_dataset
from transformers import AutoImageProcessor, AutoModelForImageClassification, BaseImageProcessor, PreTrainedModel


def load_image_folder(data_dir: str | Path, model: str | Path) -> tuple[DatasetDict, list[str], BaseImageProcessor]:
    """``data_dir`` holds ``train/<class>/*`` and ``validation/<class>/*``; images are decoded and
    preprocessed lazily, batch by batch, with the processor saved next to ``model`` (returned too, so a
    script can save it with its trained model)."""
    processor = AutoImageProcessor.from_pretrained(model, trust_remote_code=True)
    dataset = load_dataset("imagefolder", data_dir=str(data_dir))
    labels = dataset["train"].features["label"].names

    def transform(batch: dict) -> dict:
        images = [image.convert("RGB") for image in batch["image"]]
        return {"pixel_values": processor(images, return_tensors="pt")["pixel_values"], "labels": batch["label"]}

    return dataset.with_transform(transform), labels, processor


def collate(examples: list[dict]) -> dict[str, torch.Tensor]:
    return {
        "pixel_values": torch.stack([example["pixel_values"] for example in examples]),
        "labels": torch.tensor([example["labels"] for example in examples]),
    }


def classifier_for(model: str | Path, labels: list[str], **config_overrides) -> PreTrainedModel:
    """The model with a head for ``labels`` (a new one unless the saved head already has these classes).

    ``config_overrides`` take any head option: ``head_type``, ``head_pooling``, ``freeze_backbone``, ...
    """
    return AutoModelForImageClassification.from_pretrained(
        model,
        trust_remote_code=True,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: index for index, label in enumerate(labels)},
        ignore_mismatched_sizes=True,
        **config_overrides,
    )


def training_parser(
    description: str, batch_size: int, epochs: float | None = None, learning_rate: float | None = None
) -> argparse.ArgumentParser:
    """The options every training example takes; ``epochs``/``learning_rate`` are added when given a default."""
    parser = argparse.ArgumentParser(description=description.splitlines()[0])
    parser.add_argument("--model", required=True, help="a converted folder or Hub repo id")
    parser.add_argument("--data", required=True, type=Path, help="image folder with train/ and validation/")
    parser.add_argument("--output-dir", required=True, type=Path)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--seed", type=int, default=0)
    if epochs is not None:
        parser.add_argument("--epochs", type=type(epochs), default=epochs)
    if learning_rate is not None:
        parser.add_argument("--learning-rate", type=float, default=learning_rate)
    return parser
