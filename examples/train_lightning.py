"""Two-stage fine-tuning with Lightning: train the head on a frozen backbone, then everything at a lower learning
rate; bf16-mixed precision, checkpoints with resume, and `load_from_checkpoint`.

    python examples/train_lightning.py --model out/vit-s16 --data data/toy --output-dir runs/lightning
    # interrupted? the same command with --resume continues each stage from its last checkpoint

Prints one JSON line: losses per stage, validation accuracy, the checkpoint paths.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch
from image_folder import classifier_for, collate, load_image_folder, training_parser
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader


class ImageClassifier(L.LightningModule):
    """Wraps the HF classifier; the hyperparameters are all `load_from_checkpoint` needs to rebuild it."""

    def __init__(self, model: str, labels: list[str], learning_rate: float, freeze_backbone: bool) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = classifier_for(model, labels)
        self.set_stage(learning_rate, freeze_backbone)
        self.losses: list[float] = []

    def set_stage(self, learning_rate: float, freeze_backbone: bool) -> None:
        """Stage 1: head only (the backbone's parameters stop needing gradients); stage 2: everything."""
        self.hparams.learning_rate, self.hparams.freeze_backbone = learning_rate, freeze_backbone
        if freeze_backbone:
            self.model.freeze_backbone()
        else:
            self.model.unfreeze_backbone()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits

    def training_step(self, batch: dict, batch_index: int) -> torch.Tensor:
        loss = self.model(**batch).loss
        self.losses.append(loss.item())
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict, batch_index: int) -> None:
        logits = self(batch["pixel_values"])
        self.log("val_accuracy", (logits.argmax(-1) == batch["labels"]).float().mean(), prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        trainable = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.AdamW(trainable, lr=self.hparams.learning_rate)


def fit_stage(module: ImageClassifier, loaders: tuple, folder: Path, epochs: int, resume: bool) -> L.Trainer:
    """One stage: a Trainer that checkpoints every epoch into ``folder`` (``last.ckpt`` for resuming)."""
    checkpoint = ModelCheckpoint(dirpath=folder, save_last=True, save_top_k=-1, filename="{epoch}")
    trainer = L.Trainer(
        max_epochs=epochs,
        precision="bf16-mixed",
        accelerator="auto",
        callbacks=[checkpoint],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    last = folder / "last.ckpt"
    trainer.fit(module, *loaders, ckpt_path=last if resume and last.exists() else None)
    return trainer


def accuracy(trainer: L.Trainer) -> float | None:
    value = trainer.callback_metrics.get("val_accuracy")
    return None if value is None else value.item()


def main(argv: list[str] | None = None) -> dict:
    parser = training_parser(__doc__, batch_size=8)
    parser.add_argument("--head-epochs", type=int, default=2)
    parser.add_argument("--full-epochs", type=int, default=2)
    parser.add_argument("--head-lr", type=float, default=3e-3)
    parser.add_argument("--full-lr", type=float, default=3e-4)
    parser.add_argument("--resume", action="store_true", help="continue each stage from its last.ckpt")
    args = parser.parse_args(argv)

    L.seed_everything(args.seed, verbose=False)
    dataset, labels, _ = load_image_folder(args.data, args.model)
    loaders = (
        DataLoader(dataset["train"], batch_size=args.batch_size, shuffle=True, collate_fn=collate),
        DataLoader(dataset["validation"], batch_size=args.batch_size, collate_fn=collate),
    )
    module = ImageClassifier(args.model, labels, args.head_lr, freeze_backbone=True)
    backbone_before = {k: v.clone() for k, v in module.model.base_model.state_dict().items()}
    head = fit_stage(module, loaders, args.output_dir / "head", args.head_epochs, args.resume)
    head_losses = list(module.losses)
    backbone_after = module.model.base_model.state_dict()
    frozen = all(torch.equal(value, backbone_after[key]) for key, value in backbone_before.items())
    module.set_stage(args.full_lr, freeze_backbone=False)
    module.losses.clear()
    full = fit_stage(module, loaders, args.output_dir / "full", args.full_epochs, args.resume)

    last = args.output_dir / "full" / "last.ckpt"
    restored = ImageClassifier.load_from_checkpoint(last).eval()
    batch = next(iter(loaders[1]))["pixel_values"]
    with torch.no_grad():
        difference = (restored(batch) - module.eval()(batch)).abs().max().item()
    summary = {
        "head_losses": head_losses,
        "full_losses": module.losses,
        "backbone_frozen_in_head_stage": frozen,
        "head_val_accuracy": accuracy(head),  # None when --resume found the stage already finished
        "val_accuracy": accuracy(full),
        "precision": full.precision,
        "full_epochs_done": full.current_epoch,
        "full_global_step": full.global_step,
        "checkpoint": str(last),
        "restored_learning_rate": restored.hparams.learning_rate,
        "restored_max_abs_diff": difference,
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
