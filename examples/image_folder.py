"""What the training examples share: an image folder read by `datasets`, preprocessed by the model's own stock
image processor, and a classifier with a fresh head sized to the folder's classes."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from accelerate import Accelerator, FullyShardedDataParallelPlugin
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


def sharded_training_parser(description: str, float64: bool = True) -> argparse.ArgumentParser:
    """The options of the sharded-training examples: ``--reference`` runs the one-process equivalent that a
    sharded run must reproduce, ``--float64`` (where the engine allows it) compares them beyond float32 rounding."""
    parser = training_parser(description, batch_size=4, learning_rate=1e-3)  # batch size per process
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps")
    parser.add_argument("--cpu", action="store_true", help="CPU processes talking over gloo, even with GPUs present")
    parser.add_argument("--reference", action="store_true", help="one process, no sharding, gradient accumulation")
    if float64:
        parser.add_argument(
            "--float64", action="store_true",
            help="train in float64, to compare with --reference beyond float32 rounding (small BN models amplify it)",
        )  # fmt: skip
    return parser


def step_losses(losses: list[float], reference: bool) -> list[float]:
    """One loss per optimizer step: the ``--reference`` run accumulates two batches per step, so its step loss is
    their mean, as the sharded run's is the mean over its two processes."""
    return [sum(losses[i : i + 2]) / 2 for i in range(0, len(losses), 2)] if reference else losses


def block_classes(model: torch.nn.Module) -> set[type[torch.nn.Module]]:
    """The classes the model names in ``_no_split_modules`` (its blocks): the units to shard and checkpoint.
    Found among the model's modules, since remote-code classes are not importable by name."""
    return {type(module) for module in model.modules() if type(module).__name__ in model._no_split_modules}


WRAPPER_ATTRIBUTES = {"_fsdp_wrapped_module", "_checkpoint_wrapped_module"}  # FSDP1's and checkpointing's


def fsdp_units(model: torch.nn.Module) -> dict[str, str]:
    """Module path -> class of every FSDP unit but the root, under FSDP2 (``fully_shard`` swaps a module's class
    for an ``FSDP<Class>`` subclass) or FSDP1 (a ``FullyShardedDataParallel`` wrapper), seen through checkpoint
    wrappers."""
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

    units = {}
    for name, module in model.named_modules():
        if not name or not isinstance(module, FSDPModule | FullyShardedDataParallel):
            continue
        inner = module.module if isinstance(module, FullyShardedDataParallel) else module
        inner = getattr(inner, "_checkpoint_wrapped_module", inner)
        original = next(cls for cls in type(inner).__mro__ if not issubclass(cls, FSDPModule))
        path = ".".join(part for part in name.split(".") if part not in WRAPPER_ATTRIBUTES)
        units[path] = original.__name__
    return units


def average_buffers(model: torch.nn.Module) -> None:
    """FSDP, unlike DDP, does not broadcast buffers: each process's BatchNorm running statistics follow its own
    batches. Average them over the processes (as timm's ``distribute_bn`` does) so every shard and the checkpoint
    hold one value. Collective: every process calls it."""
    import torch.distributed as dist

    with torch.no_grad():
        for buffer in model.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer)  # a sum: gloo has no average
                buffer.div_(dist.get_world_size())


def select_fsdp_on_cpu(accelerator: Accelerator, plugin: FullyShardedDataParallelPlugin) -> None:
    """accelerate (1.16) enables FSDP only on GPU-like devices and keeps CPU processes on DDP (MULTI_CPU) although
    an FSDP plugin is given; the FSDP2 code path itself (``fully_shard`` over a gloo mesh, DCP checkpoints) runs on
    CPUs. Select it as accelerate's own selection does: in AcceleratorState and in the PartialState it refreshes
    from."""
    from accelerate import PartialState
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.MULTI_CPU:
        accelerator.state.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        accelerator.state.fsdp_plugin = plugin
