"""Data-parallel fine-tuning with accelerate, with gradient accumulation; runs the same on one process, several
CPU processes or several GPUs:

    accelerate launch --multi_gpu --num_processes 2 examples/train_accelerate.py --model out/vit-s16 \\
        --data data/toy --output-dir runs/accelerate --grad-accum 2 [--cpu]

``--cpu`` runs the processes on the CPU with the gloo backend (accelerate's own ``--cpu`` launch flag starts a
single process unless MPI is set up), which is how the tests run it.

The main process prints one JSON line: world size, optimizer steps, losses, validation accuracy gathered across
processes, and whether every process ended with the same weights. The trained model is saved with its code.
"""

from __future__ import annotations

import hashlib
import json
import math

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from image_folder import classifier_for, collate, load_image_folder, training_parser
from torch.utils.data import DataLoader


def weights_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> dict:
    parser = training_parser(__doc__, batch_size=4, epochs=3, learning_rate=1e-3)  # batch size per process
    parser.add_argument("--grad-accum", type=int, default=2, help="batches per optimizer step")
    parser.add_argument("--cpu", action="store_true", help="CPU processes talking over gloo, even with GPUs present")
    args = parser.parse_args(argv)

    accelerator = Accelerator(gradient_accumulation_steps=args.grad_accum, cpu=args.cpu)
    set_seed(args.seed)
    dataset, labels, _ = load_image_folder(args.data, args.model)
    model = classifier_for(args.model, labels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    train = DataLoader(dataset["train"], batch_size=args.batch_size, shuffle=True, collate_fn=collate)
    validation = DataLoader(dataset["validation"], batch_size=args.batch_size, collate_fn=collate)
    model, optimizer, train, validation = accelerator.prepare(model, optimizer, train, validation)

    losses, optimizer_steps = [], 0
    for _ in range(args.epochs):
        model.train()
        for batch in train:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
            optimizer_steps += accelerator.sync_gradients  # the wrapped optimizer steps only on these
            losses.append(accelerator.gather(loss.detach()).mean().item())

    model.eval()
    correct = total = 0
    for batch in validation:
        with torch.no_grad():
            logits = model(pixel_values=batch["pixel_values"]).logits
        predictions, references = accelerator.gather_for_metrics((logits.argmax(-1), batch["labels"]))
        correct += (predictions == references).sum().item()
        total += references.numel()

    digests = accelerator.gather_for_metrics([weights_digest(accelerator.unwrap_model(model))], use_gather_object=True)
    accelerator.wait_for_everyone()
    accelerator.unwrap_model(model).save_pretrained(
        args.output_dir, is_main_process=accelerator.is_main_process, save_function=accelerator.save
    )
    summary = {
        "world_size": accelerator.num_processes,
        "batches_per_epoch": len(train),
        "expected_optimizer_steps": args.epochs * math.ceil(len(train) / args.grad_accum),
        "optimizer_steps": optimizer_steps,
        "losses": losses,
        "val_accuracy": correct / total,
        "val_examples": total,
        "same_weights_on_every_process": len(set(digests)) == 1,
        "saved": str(args.output_dir),
    }
    if accelerator.is_main_process:
        print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
