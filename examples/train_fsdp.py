"""Sharded fine-tuning with accelerate's FSDP2: every block (the model's ``_no_split_modules``) is its own FSDP unit
and activation-checkpointing unit; the sharded checkpoint is consolidated and saved with ``save_pretrained``.

On a multi-GPU node (the config file holds the FSDP2 settings; see examples/accelerate/):

    accelerate launch --config_file examples/accelerate/fsdp2.yaml examples/train_fsdp.py --model out/vit-l16 \\
        --data data/toy --output-dir runs/fsdp

Across nodes, the same command on every node with ``--num_machines``, ``--machine_rank`` and
``--main_process_ip`` (examples/accelerate/slurm_fsdp2.sh). ``--cpu`` runs the same FSDP2 preparation on CPU
processes over gloo, which is how the tests run it: accelerate (1.16) turns FSDP on only for GPU-like devices and
otherwise falls back to DDP or, under ``accelerate launch --use_fsdp`` on a machine without GPUs, to unconnected
single processes, so ``--cpu`` selects accelerate's FSDP mode itself (see ``image_folder.select_fsdp_on_cpu``).

``--reference`` runs one process with the same global batches as gradient accumulation (what the sharded run must
reproduce). The main process prints one JSON line: losses, the FSDP units, and the saved folders.
"""

from __future__ import annotations

import json
import os
import shutil

import torch
from accelerate import Accelerator, FullyShardedDataParallelPlugin
from accelerate.utils import merge_fsdp_weights, set_seed
from image_folder import (
    average_buffers,
    classifier_for,
    collate,
    fsdp_units,
    load_image_folder,
    select_fsdp_on_cpu,
    sharded_training_parser,
    step_losses,
)
from safetensors.torch import load_file
from torch.utils.data import DataLoader


def fsdp_accelerator(cpu: bool, grad_accum: int) -> Accelerator:
    """The accelerator in FSDP2 mode: block-level auto-wrap from ``_no_split_modules``, activation checkpointing
    per block, sharded state dicts. Under ``accelerate launch`` with an FSDP config, the config's settings."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        return Accelerator(gradient_accumulation_steps=grad_accum)  # the plugin comes from the launcher's config
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2,
        auto_wrap_policy="transformer_based_wrap",  # the classes named by the model's _no_split_modules
        activation_checkpointing=True,
        state_dict_type="SHARDED_STATE_DICT",
        reshard_after_forward=True,
    )
    accelerator = Accelerator(cpu=cpu, fsdp_plugin=plugin, gradient_accumulation_steps=grad_accum)
    if cpu:
        select_fsdp_on_cpu(accelerator, plugin)
    return accelerator


def main(argv: list[str] | None = None) -> dict:
    parser = sharded_training_parser(__doc__)
    parser.add_argument(
        "--optimizer", choices=["adamw", "sgd"], default="adamw",
        help="sgd for comparing runs: Adam's normalised step turns rounding in near-zero gradients into lr-sized moves",
    )  # fmt: skip
    args = parser.parse_args(argv)

    set_seed(args.seed)
    dataset, labels, _ = load_image_folder(args.data, args.model)
    dtype = torch.float64 if args.float64 else torch.float32
    model = classifier_for(args.model, labels).to(dtype)
    # No shuffling: batch i goes to process i % world size, so the reference's accumulated batches are the same.
    train = DataLoader(dataset["train"], batch_size=args.batch_size, collate_fn=collate)
    if args.reference:
        accelerator = Accelerator(cpu=args.cpu, gradient_accumulation_steps=2)
    else:
        accelerator = fsdp_accelerator(args.cpu, grad_accum=1)
    optimizer = (torch.optim.AdamW if args.optimizer == "adamw" else torch.optim.SGD)(
        model.parameters(), lr=args.learning_rate
    )
    model, optimizer, train = accelerator.prepare(model, optimizer, train)

    model.train()
    losses: list[float] = []
    batches = iter(train)
    for _ in range(args.steps * accelerator.gradient_accumulation_steps):
        with accelerator.accumulate(model):
            batch = next(batches)
            loss = model(pixel_values=batch["pixel_values"].to(dtype), labels=batch["labels"]).loss
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
        losses.append(accelerator.reduce(loss.detach(), reduction="mean").item())
    losses = step_losses(losses, args.reference)

    saved = args.output_dir / "model"
    summary: dict = {"world_size": accelerator.num_processes, "losses": losses, "units": fsdp_units(model)}
    summary["saved"] = str(saved)
    if args.reference:
        accelerator.unwrap_model(model).save_pretrained(saved)
    else:
        # The sharded checkpoint, as accelerate writes it (DCP shards per process), then consolidated two ways:
        # merged from the shards offline (`accelerate merge-weights`) and gathered in memory (get_state_dict).
        average_buffers(model)
        accelerator.save_state(args.output_dir / "state")
        full = accelerator.get_state_dict(model)  # gathered to the main process, full tensors on the CPU
        merged = args.output_dir / "merged"
        merge_fsdp_weights(args.output_dir / "state" / "pytorch_model_fsdp_0", merged)  # every process: a barrier
        if accelerator.is_main_process:
            base = classifier_for(args.model, labels).to(dtype)  # the same architecture, unsharded, for save_pretrained
            base.load_state_dict(load_file(merged / "model.safetensors"), strict=True)
            base.save_pretrained(saved)
            shutil.rmtree(merged)
            state = base.state_dict()
            summary["merged_equals_gathered"] = set(full) == set(state) and all(
                torch.equal(tensor, full[name]) for name, tensor in state.items()
            )
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        print(json.dumps(summary))
    accelerator.end_training()
    return summary


if __name__ == "__main__":
    main()
