"""Sharded fine-tuning with transformers' Trainer: FSDP2 (``fsdp_config``) or DeepSpeed ZeRO-2/3 (a DeepSpeed config
from examples/deepspeed/), both through accelerate. Under FSDP2 every block (the model's ``_no_split_modules``) is an
FSDP unit with activation checkpointing; under ZeRO the optimizer state (2) and the parameters too (3) are
partitioned. ``save_model`` gathers the full weights into a folder that ``from_pretrained`` loads; under ZeRO the
sharded checkpoint is also consolidated with DeepSpeed's ``zero_to_fp32`` and checked against it.

On a multi-GPU node (``torchrun --nproc_per_node 8`` or ``deepspeed --num_gpus 8`` work the same way; across nodes,
see examples/accelerate/slurm_fsdp2.sh):

    accelerate launch --num_processes 8 examples/train_trainer_sharded.py --engine fsdp2 --model out/vit-l16 \\
        --data data/toy --output-dir runs/trainer-fsdp
    accelerate launch --num_processes 8 examples/train_trainer_sharded.py --engine zero3 --model out/vit-l16 \\
        --data data/toy --output-dir runs/trainer-zero3

``--cpu`` runs it on CPU processes over gloo, which is how the tests run it. DeepSpeed runs there as it is (its CPU
accelerator falls back to gloo). accelerate keeps CPU processes on DDP although Trainer gives it an FSDP plugin, so
for FSDP2 ``--cpu`` selects accelerate's FSDP mode (``CPUFSDPTrainer``). ``--reference`` runs one process with the
same global batches as gradient accumulation. The main process prints one JSON line: losses, what was sharded, and
the saved folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from accelerate import FullyShardedDataParallelPlugin
from image_folder import (
    classifier_for,
    collate,
    fsdp_units,
    load_image_folder,
    select_fsdp_on_cpu,
    sharded_training_parser,
)
from transformers import AutoConfig, Trainer, TrainingArguments, set_seed

FSDP_CONFIG = {
    "version": 2,
    "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",  # no transformer_layer_cls_to_wrap: the _no_split_modules, the blocks
    "activation_checkpointing": True,  # FSDP's own, per unit (not Trainer's gradient_checkpointing)
    "state_dict_type": "FULL_STATE_DICT",  # save_model gathers it on the main process
    "reshard_after_forward": True,
}
DEEPSPEED_CONFIGS = Path(__file__).resolve().parent / "deepspeed"


class CPUFSDPTrainer(Trainer):
    """Trainer whose accelerator runs FSDP on CPU processes (see ``image_folder.select_fsdp_on_cpu``)."""

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        select_fsdp_on_cpu(self.accelerator, FullyShardedDataParallelPlugin(**self.args.fsdp_plugin_args))
        self.is_fsdp_enabled = True


def engine_arguments(args) -> dict:
    """The TrainingArguments that select the engine (none for the one-process reference)."""
    if args.reference:
        return {}
    if args.engine == "fsdp2":
        return {"fsdp": True, "fsdp_config": FSDP_CONFIG}
    return {"deepspeed": str(args.deepspeed_config or DEEPSPEED_CONFIGS / f"{args.engine}.json")}


def parameter_share(model: torch.nn.Module) -> float:
    """The share of the parameters' elements this process holds: 1 unless ZeRO-3 partitioned them."""
    sizes = [
        (p.ds_tensor.numel(), p.ds_numel) if hasattr(p, "ds_tensor") else (p.numel(),) * 2 for p in model.parameters()
    ]
    return sum(held for held, _ in sizes) / sum(total for _, total in sizes)


def what_was_sharded(trainer: Trainer) -> dict:
    """FSDP2: the units. ZeRO: the stage and the share of the parameters this process holds."""
    if trainer.is_fsdp_enabled:
        return {"units": fsdp_units(trainer.model_wrapped)}
    if trainer.is_deepspeed_enabled:
        engine = trainer.model_wrapped
        return {"zero_stage": engine.zero_optimization_stage(), "parameter_share_held": parameter_share(engine.module)}
    return {}


def check_zero_init(args, labels: list[str]) -> None:
    """``--zero-init`` needs ZeRO-3, and a folder whose head already has the data's classes: transformers (5.24, 5.25)
    loads into a partitioned model only a checkpoint that matches it exactly (no ``ignore_mismatched_sizes``)."""
    if args.engine != "zero3":
        raise SystemExit(f"--zero-init partitions the model as it loads, which only ZeRO-3 does, not {args.engine}.")
    config = AutoConfig.from_pretrained(args.model, trust_remote_code=True)
    saved = [config.id2label[i] for i in sorted(config.id2label)]
    if saved != labels:
        raise SystemExit(
            f"--zero-init: {args.model}'s head has {len(saved)} classes {saved[:5]}, the data has {len(labels)} "
            f"{labels[:5]}. transformers loads into a ZeRO-3-partitioned model only a checkpoint that matches it "
            "exactly, so a new head cannot be made while loading. Fine-tune without --zero-init (each process "
            "loads the whole model, then DeepSpeed partitions it), or start from a folder with these classes."
        )


def consolidated_equals_saved(checkpoint: Path, saved: Path) -> bool:
    """DeepSpeed's offline consolidation of the ZeRO shards (what ``zero_to_fp32.py`` in the checkpoint runs) holds
    the tensors ``save_model`` gathered."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from safetensors.torch import load_file

    consolidated = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint))
    gathered = load_file(saved / "model.safetensors")
    return set(consolidated) == set(gathered) and all(torch.equal(consolidated[k], v) for k, v in gathered.items())


def main(argv: list[str] | None = None) -> dict:
    parser = sharded_training_parser(__doc__)
    parser.add_argument("--engine", choices=["fsdp2", "zero2", "zero3"], default="fsdp2")
    parser.add_argument(
        "--deepspeed-config", type=Path, help="a DeepSpeed config instead of examples/deepspeed/<engine>.json"
    )
    parser.add_argument(
        "--zero-init", action="store_true",
        help="ZeRO-3: load the model already partitioned (deepspeed.zero.Init), for models too large for one process",
    )  # fmt: skip
    parser.add_argument(
        "--fixed-order", action="store_true",
        help="shuffle the images once, by the seed, and keep that order: a --reference run then sees the same batches",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.cpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed's device, read when it is first imported

    # Seeded before the new head is initialised: FSDP shards each process's own copy of the model (DDP would
    # broadcast rank 0's), so every process must build the same one.
    set_seed(args.seed)
    dataset, labels, processor = load_image_folder(args.data, args.model)
    train = dataset["train"].shuffle(seed=args.seed) if args.fixed_order else dataset["train"]
    dtype = torch.float64 if args.float64 else torch.float32
    zero_init = args.zero_init and not args.reference  # the reference runs without DeepSpeed
    if zero_init:
        check_zero_init(args, labels)
    else:  # before TrainingArguments: once a ZeRO-3 config is in them, from_pretrained partitions as it loads
        model = classifier_for(args.model, labels).to(dtype)
    training = TrainingArguments(
        output_dir=str(args.output_dir),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=2 if args.reference else 1,
        learning_rate=args.learning_rate,
        lr_scheduler_type="constant",
        optim="sgd",
        logging_steps=1,
        save_strategy="steps",  # one checkpoint, at the end: under ZeRO, the sharded one
        save_steps=args.steps,
        remove_unused_columns=False,  # the transform reads the "image" column
        report_to=[],
        seed=args.seed,
        use_cpu=args.cpu,
        train_sampling_strategy="sequential" if args.fixed_order else "random",
        **engine_arguments(args),
    )
    loaded = {}
    if zero_init:
        import deepspeed

        # deepspeed.comm over the processes accelerate connected (accelerate does this itself only on GPUs): the
        # partitioning at load reads its world size
        deepspeed.init_distributed(dist_backend=training.distributed_state.backend)
        model = classifier_for(args.model, labels).to(dtype)  # deepspeed.zero.Init: built and loaded partitioned
        loaded = {"parameter_share_held_at_load": parameter_share(model)}
    fsdp_on_cpu = args.cpu and args.engine == "fsdp2" and not args.reference
    trainer = (CPUFSDPTrainer if fsdp_on_cpu else Trainer)(
        model=model, args=training, train_dataset=train, data_collator=collate, processing_class=processor
    )
    trainer.train()
    saved = args.output_dir / "final"
    trainer.save_model(saved)  # every process: the full weights are gathered, the main process writes them
    summary = {
        "world_size": trainer.accelerator.num_processes,
        "losses": [entry["loss"] for entry in trainer.state.log_history if "loss" in entry],
        **what_was_sharded(trainer),
        **loaded,
        "saved": str(saved),
    }
    if trainer.is_deepspeed_enabled and trainer.is_world_process_zero():
        checkpoint = args.output_dir / f"checkpoint-{args.steps}"
        summary["consolidated_equals_saved"] = consolidated_equals_saved(checkpoint, saved)
    if trainer.is_world_process_zero():
        print(json.dumps(summary))
    # Every process past its last collective (rank 0 also consolidates) before any closes the group: a process
    # tearing down its gloo group while a peer is still in ZeRO-3 work can abort at exit.
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()  # the process group, closed before the interpreter exits
    return summary


if __name__ == "__main__":
    main()
