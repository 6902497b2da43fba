"""LoRA fine-tuning with PEFT: adapters on the attention and MLP projections of every block, a fully trained new
head, then save the adapter, reload it onto the base model, and merge it into the weights.

    python examples/lora_peft.py --model out/dinov3-s16 --data data/toy --output-dir runs/lora

Target module names (the same in every family, mirroring timm):
  attention  `qkv` (fused) or `q_proj`, `k_proj`, `v_proj` (separate: EVA02-CLIP, Perception Encoder, Sapiens2),
             and the output projection `proj`
  MLP        `fc1`, `fc2`; SwiGLU with separate gate: `fc1_g`, `fc1_x`, `fc2`; ConvNeXt's pointwise `mlp.fc1`,
             `mlp.fc2` (Linear layers, or 1x1 convolutions in the `conv_mlp` models: PEFT adapts both)
  ResNet     the block convolutions `conv1`, `conv2`, `conv3` (ResNeXt's grouped 3x3 `conv2` only at a rank that
             is a multiple of its groups: PEFT's limit)
  EfficientNet / MobileNet  the pointwise convolutions `conv_pw`, `conv_pwl` (MobileNetV4: `pw_exp.conv`,
             `pw_proj.conv`) and, in the V4 hybrids, the multi-query attention's 1x1 projections `query.proj`,
             `key.proj`, `value.proj`, `output.proj`; MixNet's grouped 1x1s and CondConv's routed convs are not
             plain convolutions, so PEFT cannot adapt them and they are left out (as the depthwise convs are)
The regular expression below picks those inside the blocks only (`proj` alone would also match the patch embedding
convolution and the attention-pool head; ConvNeXt's depthwise `conv_dw`, the stems and shortcuts are left as they
are). BatchNorm layers update their running statistics while training, and an adapter holds only what it saves:
they are saved with it (``modules_to_save``), or the reloaded adapter would run on the old statistics.

Prints one JSON line: trainable parameter share, losses, accuracy, and the largest output difference between the
trained adapter, the reloaded adapter and the merged model.
"""

from __future__ import annotations

import json
import re

import torch
from image_folder import classifier_for, collate, load_image_folder, training_parser
from peft import LoraConfig, PeftModel, get_peft_model
from torch.utils.data import DataLoader

BLOCK_PROJECTIONS = (
    r".*blocks\.\d+\.(attn\.(qkv|q_proj|k_proj|v_proj|proj)|mlp\.(fc1|fc1_g|fc1_x|fc2)|conv1|conv2|conv3"
    r"|conv_pw|conv_pwl|pw_exp\.conv|pw_proj\.conv|attn\.(query|key|value|output)\.proj)"
)


def lora_config(model: torch.nn.Module, rank: int) -> LoraConfig:
    """Adapters on the block projections PEFT can adapt at this rank: a grouped conv needs a rank divisible by its
    groups (ResNeXt's 3x3 has 32), so those are left out below that. `head` is new for these classes, so it is
    trained in full and saved with the adapter; so are BatchNorms."""
    targets = [
        name
        for name, module in model.named_modules()
        if re.fullmatch(BLOCK_PROJECTIONS, name)
        and isinstance(module, (torch.nn.Linear, torch.nn.Conv2d))  # not a mixed or routed conv
        and rank % getattr(module, "groups", 1) == 0
    ]
    batch_norms = [name for name, m in model.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    return LoraConfig(
        r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=targets, modules_to_save=["head", *batch_norms]
    )


def main(argv: list[str] | None = None) -> dict:
    parser = training_parser(__doc__, batch_size=8, epochs=3, learning_rate=2e-3)
    parser.add_argument("--rank", type=int, default=8)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    dataset, labels, _ = load_image_folder(args.data, args.model)
    classifier = classifier_for(args.model, labels)
    model = get_peft_model(classifier, lora_config(classifier, args.rank))
    trainable, total = model.get_nb_trainable_parameters()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.learning_rate)
    train = DataLoader(dataset["train"], batch_size=args.batch_size, shuffle=True, collate_fn=collate)
    losses = []
    model.train()
    for _ in range(args.epochs):
        for batch in train:
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())

    validation = collate(list(dataset["validation"]))
    model.eval()
    model.save_pretrained(args.output_dir)  # adapter_config.json + adapter_model.safetensors, the head included
    with torch.no_grad():
        trained = model(pixel_values=validation["pixel_values"]).logits
        reloaded = PeftModel.from_pretrained(classifier_for(args.model, labels), args.output_dir).eval()
        from_adapter = reloaded(pixel_values=validation["pixel_values"]).logits
        merged = reloaded.merge_and_unload().eval()  # a plain model again: LoRA folded into the projections
        from_merged = merged(pixel_values=validation["pixel_values"]).logits
        base = classifier_for(args.model, labels).eval().base_model
        base_features = base(pixel_values=validation["pixel_values"]).pooler_output
        merged_features = merged.base_model(pixel_values=validation["pixel_values"]).pooler_output

    summary = {
        "trainable_parameters": trainable,
        "total_parameters": total,
        "lora_target_modules": sorted(
            {name.split(".")[-2] for name, _ in model.named_modules() if name.endswith("lora_A")}
        ),
        # lora_B starts at zero: one still zero is an adapter the forward never used (a bypassed projection)
        "untrained_adapters": [
            name for name, parameter in model.named_parameters() if "lora_B" in name and not parameter.any()
        ],
        "losses": losses,
        "val_accuracy": (trained.argmax(-1) == validation["labels"]).float().mean().item(),
        "reloaded_max_abs_diff": (from_adapter - trained).abs().max().item(),
        # merging rounds each adapted weight once: relative to the largest logit (at least 1)
        "merged_max_diff": (from_merged - from_adapter).abs().max().item() / max(1.0, from_adapter.abs().max().item()),
        "backbone_change_from_lora": (merged_features - base_features).abs().max().item(),
        "adapter_files": sorted(path.name for path in args.output_dir.iterdir()),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
