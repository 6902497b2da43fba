"""Sharded fine-tuning with Lightning's ``FSDPStrategy``: the model's blocks (its ``_no_split_modules``) are the
auto-wrap policy and the activation-checkpointing policy; the sharded checkpoint is consolidated with Lightning's
own tool and saved with ``save_pretrained``.

On a multi-GPU node (one process per GPU; across nodes add ``--num-nodes`` and launch under Slurm's ``srun``, which
Lightning detects):

    python examples/train_lightning_fsdp.py --model out/vit-l16 --data data/toy --output-dir runs/lightning-fsdp

``--cpu`` runs the same strategy on CPU processes over gloo, which is how the tests run it: Lightning (2.6) refuses
``FSDPStrategy`` unless the accelerator is CUDA, though FSDP itself runs on CPUs (see ``CPUFSDPStrategy``).
``--reference`` runs one process with the same global batches as gradient accumulation (what the sharded run must
reproduce). The main process prints one JSON line: losses, the FSDP units, and the saved folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import lightning as L
import torch
from image_folder import (
    average_buffers,
    block_classes,
    classifier_for,
    collate,
    fsdp_units,
    load_image_folder,
    sharded_training_parser,
    step_losses,
)
from lightning.pytorch.strategies import FSDPStrategy
from torch.utils.data import DataLoader


class CPUFSDPStrategy(FSDPStrategy):
    """``FSDPStrategy`` on CPU processes. Lightning refuses the exact ``FSDPStrategy`` type without a CUDA
    accelerator, and wraps with ``device_id=root_device.index``, which is None for the CPU, where FSDP then looks for
    an accelerator; given the CPU device explicitly, FSDP shards over gloo. So the wrap (the same policy, every other
    setting Lightning's) is done here with that device, and Lightning applies activation checkpointing to it."""

    def _setup_model(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.distributed.fsdp import FullyShardedDataParallel

        wrapped = FullyShardedDataParallel(
            model,
            cpu_offload=self.cpu_offload,
            mixed_precision=self.mixed_precision_config,
            sharding_strategy=self.sharding_strategy,
            device_id=torch.device("cpu"),
            **self.kwargs,
        )
        with warnings.catch_warnings():  # "the model is already wrapped, the policy will be ignored": it was used
            warnings.filterwarnings("ignore", message=".*auto_wrap_policy.*already wrapped")
            return super()._setup_model(wrapped)


class ImageClassifier(L.LightningModule):
    """The HF classifier. The images are shuffled once, by the seed; each process reads every ``world``-th batch
    from its ``rank`` (as accelerate splits them), so one process accumulating the batches in pairs sees the same
    data in the same groups (which BatchNorm's batch statistics depend on)."""

    def __init__(self, model: torch.nn.Module, dataset, batch_size: int, learning_rate: float, seed: int) -> None:
        super().__init__()
        self.model, self.dataset, self.batch_size = model, dataset, batch_size
        self.learning_rate, self.seed = learning_rate, seed
        self.losses: list[float] = []

    def train_dataloader(self) -> DataLoader:
        world, rank = self.trainer.world_size, self.trainer.global_rank
        order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.seed)).tolist()
        batches = [order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size)]
        return DataLoader(self.dataset, batch_sampler=batches[rank::world], collate_fn=collate)

    def training_step(self, batch: dict, batch_index: int) -> torch.Tensor:
        loss = self.model(**batch).loss
        self.losses.append(self.trainer.strategy.reduce(loss.detach(), reduce_op="mean").item())
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.learning_rate)


def strategy_for(model: torch.nn.Module, cpu: bool, reference: bool) -> L.pytorch.strategies.Strategy | str:
    """Sharded over every process, one FSDP unit and one checkpointing unit per block, sharded checkpoints."""
    if reference:
        return "auto"
    blocks = block_classes(model)
    kind = CPUFSDPStrategy if cpu else FSDPStrategy
    return kind(auto_wrap_policy=blocks, activation_checkpointing_policy=blocks, state_dict_type="sharded")


def main(argv: list[str] | None = None) -> dict:
    parser = sharded_training_parser(__doc__, float64=False)  # Lightning's FSDP precisions stop at 32 bits
    parser.add_argument("--devices", type=int, default=2, help="processes (GPUs, or CPU processes with --cpu)")
    parser.add_argument("--num-nodes", type=int, default=1)
    args = parser.parse_args(argv)

    L.seed_everything(args.seed, verbose=False)
    dataset, labels, _ = load_image_folder(args.data, args.model)
    model = classifier_for(args.model, labels)
    module = ImageClassifier(model, dataset["train"], args.batch_size, args.learning_rate, args.seed)
    trainer = L.Trainer(
        accelerator="cpu" if args.cpu else "auto",
        devices=1 if args.reference else args.devices,
        num_nodes=1 if args.reference else args.num_nodes,
        strategy=strategy_for(model, args.cpu, args.reference),
        max_steps=args.steps,
        accumulate_grad_batches=2 if args.reference else 1,
        use_distributed_sampler=False,  # train_dataloader splits the batches itself
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module)
    losses = step_losses(module.losses, args.reference)

    saved = args.output_dir / "model"
    summary = {"world_size": trainer.world_size, "losses": losses, "units": fsdp_units(trainer.model)}
    summary["saved"] = str(saved)
    if args.reference:
        model.save_pretrained(saved)
    else:
        average_buffers(trainer.model)
        checkpoint = args.output_dir / "sharded.ckpt"  # a folder: one DCP shard per process
        trainer.save_checkpoint(checkpoint)  # every process writes its shard
        trainer.strategy.barrier()
        if trainer.is_global_zero:
            # Lightning's consolidation tool, as a user runs it, then the weights into an unsharded copy
            consolidated = args.output_dir / "consolidated.ckpt"
            tool = [sys.executable, "-m", "lightning.pytorch.utilities.consolidate_checkpoint", str(checkpoint)]
            subprocess.run([*tool, "--output_file", str(consolidated)], check=True)
            state = torch.load(consolidated, weights_only=True)["state_dict"]
            base = classifier_for(args.model, labels)
            base.load_state_dict({k.removeprefix("model."): v for k, v in state.items()}, strict=True)
            base.save_pretrained(saved)
    if trainer.is_global_zero:
        print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
