"""Fine-tune a converted model on an image folder with transformers' Trainer, evaluate, save, reload.

    python examples/train_trainer.py --model out/vit-s16 --data data/toy --output-dir runs/trainer

Prints one JSON line: the training losses, validation accuracy before and after training, and the accuracy of the
reloaded folder (equal to the trained model's: the folder holds everything, code included).
"""

from __future__ import annotations

import json

import numpy as np
from image_folder import classifier_for, collate, load_image_folder, training_parser
from transformers import AutoModelForImageClassification, EvalPrediction, Trainer, TrainingArguments, set_seed


def accuracy(prediction: EvalPrediction) -> dict[str, float]:
    return {"accuracy": float((np.argmax(prediction.predictions, axis=-1) == prediction.label_ids).mean())}


def main(argv: list[str] | None = None) -> dict:
    args = training_parser(__doc__, batch_size=8, epochs=3.0, learning_rate=1e-3).parse_args(argv)

    dataset, labels, processor = load_image_folder(args.data, args.model)
    set_seed(args.seed)  # the new head is drawn here, before Trainer seeds: --seed must decide it too
    model = classifier_for(args.model, labels)
    training = TrainingArguments(
        output_dir=str(args.output_dir),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        eval_strategy="epoch",
        save_strategy="no",
        logging_steps=1,
        remove_unused_columns=False,  # the transform reads the "image" column
        report_to=[],
        seed=args.seed,
    )
    trainer = Trainer(
        model=model,
        args=training,
        train_dataset=dataset["train"],
        eval_dataset=dataset["validation"],
        data_collator=collate,
        compute_metrics=accuracy,
        processing_class=processor,  # save_model writes preprocessor_config.json with the weights
    )
    before = trainer.evaluate()["eval_accuracy"]
    trainer.train()
    after = trainer.evaluate()["eval_accuracy"]

    final = args.output_dir / "final"
    trainer.save_model(final)  # weights, config with the label names, the model's code files, the processor
    reloaded = AutoModelForImageClassification.from_pretrained(final, trust_remote_code=True)
    reloaded_accuracy = Trainer(
        model=reloaded,
        args=training,
        eval_dataset=dataset["validation"],
        data_collator=collate,
        compute_metrics=accuracy,
    ).evaluate()["eval_accuracy"]

    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    summary = {
        "losses": losses,
        "accuracy_before": before,
        "accuracy_after": after,
        "accuracy_reloaded": reloaded_accuracy,
        "saved": str(final),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
