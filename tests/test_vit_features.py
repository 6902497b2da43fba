"""Heads, pooling, losses, freezing, bad input and training paths of the vit family."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.helpers import enable_checkpointing, make_timm, vitzoo_from_timm
from vitzoo_hf import VitzooViTConfig, VitzooViTForImageClassification, VitzooViTModel


def tiny_config(**overrides) -> VitzooViTConfig:
    fields = dict(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=3,
    )
    return VitzooViTConfig(**{**fields, **overrides})


def images(batch: int = 4, size: int = 32) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize(
    ("pooling", "pooled"),
    [
        ("token", lambda h, m: m.vit.fc_norm(h[:, 0])),
        ("avg", lambda h, m: m.vit.fc_norm(h[:, 1:].mean(1))),
        ("max", lambda h, m: m.vit.fc_norm(h[:, 1:].amax(1))),
        ("avgmax", lambda h, m: m.vit.fc_norm((h[:, 1:].amax(1) + h[:, 1:].mean(1)) / 2)),
        ("token_avg", lambda h, m: torch.cat([h[:, 0], h[:, 1:].mean(1)], dim=-1)),
    ],
)
def test_head_pooling_feeds_the_head_what_it_names(pooling, pooled) -> None:
    model = VitzooViTForImageClassification(tiny_config(head_pooling=pooling)).eval()
    x = images()
    with torch.no_grad():
        hidden = model.vit(x).last_hidden_state
        torch.testing.assert_close(model(x).logits, model.head(pooled(hidden, model)))
    assert model.head.in_features == (64 if pooling == "token_avg" else 32)


def test_map_pooling_builds_its_own_pool_or_reuses_the_models() -> None:
    own = VitzooViTForImageClassification(tiny_config(head_pooling="map"))
    assert own.head_pool is not None and own.vit.attn_pool is None
    reused = VitzooViTForImageClassification(tiny_config(head_pooling="map", global_pool="map"))
    assert reused.head_pool is None and reused.vit.attn_pool is not None
    assert own(images()).logits.shape == reused(images()).logits.shape == (4, 3)


def test_mlp_head_layers_and_none_head() -> None:
    model = VitzooViTForImageClassification(
        tiny_config(head_type="mlp", head_hidden_sizes=[48, 24], head_norm=True, head_act="silu", head_dropout=0.1)
    )
    linears = [m for m in model.head.layers if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(32, 48), (48, 24), (24, 3)]
    assert sum(isinstance(m, nn.LayerNorm) for m in model.head.layers) == 2
    identity = VitzooViTForImageClassification(tiny_config(head_type="none", num_labels=32)).eval()
    with torch.no_grad():
        torch.testing.assert_close(identity(images()).logits, identity.vit(images()).pooler_output)


@pytest.mark.parametrize(
    ("problem_type", "num_labels", "labels", "reference"),
    [
        ("single_label_classification", 3, torch.tensor([0, 2, 1, 2]), lambda z, y: F.cross_entropy(z, y)),
        (
            "multi_label_classification",
            3,
            torch.tensor([[1.0, 0, 1], [0, 0, 1], [1, 1, 1], [0, 0, 0]]),
            lambda z, y: F.binary_cross_entropy_with_logits(z, y),
        ),
        ("regression", 1, torch.tensor([0.5, -1.0, 2.0, 0.0]), lambda z, y: F.mse_loss(z.squeeze(-1), y)),
    ],
)
def test_loss_follows_problem_type(problem_type, num_labels, labels, reference) -> None:
    model = VitzooViTForImageClassification(tiny_config(problem_type=problem_type, num_labels=num_labels)).eval()
    out = model(images(), labels=labels)
    torch.testing.assert_close(out.loss, reference(out.logits, labels))


def test_freeze_backbone_by_config_and_method_trains_only_the_head() -> None:
    model = VitzooViTForImageClassification(tiny_config(freeze_backbone=True))
    assert not any(p.requires_grad for p in model.vit.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    before = {k: v.clone() for k, v in model.vit.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(images(), labels=torch.tensor([0, 1, 2, 0])).loss.backward()
    optimizer.step()
    for key, value in model.vit.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    model.unfreeze_backbone()
    assert all(p.requires_grad for p in model.parameters()) and not model.config.freeze_backbone


def test_custom_head_by_subclassing() -> None:
    """The README's recipe: replace ``head`` with any module mapping pooled features to logits."""

    class CosineHead(nn.Module):
        def __init__(self, dim: int, classes: int) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.randn(classes, dim))

        def forward(self, pooled: torch.Tensor) -> torch.Tensor:
            return 10 * F.normalize(pooled, dim=-1) @ F.normalize(self.weight, dim=-1).T

    class CosineClassifier(VitzooViTForImageClassification):
        def __init__(self, config) -> None:
            super().__init__(config)
            self.head = CosineHead(config.hidden_size, config.num_labels)

    model = CosineClassifier(tiny_config())
    out = model(images(), labels=torch.tensor([0, 1, 2, 0]))
    assert out.logits.shape == (4, 3) and out.logits.abs().max() <= 10 + 1e-4
    out.loss.backward()
    assert model.head.weight.grad is not None


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    timm_model = make_timm("dinov2_reg")
    grads = []
    for checkpointing in (False, True):
        model = vitzoo_from_timm(timm_model, "classifier").train()
        if checkpointing:
            enable_checkpointing(model)
            assert all(block.gradient_checkpointing for block in model.vit.blocks)
        model(images(), labels=torch.tensor([0, 1, 2, 3])).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m(torch.randn(1, 1, 32, 32)), "has 1 channels but the model expects 3"),
        (lambda m: m(torch.randn(1, 3, 48, 48)), "Pass interpolate_pos_encoding=True"),
        (lambda m: m(torch.randn(1, 3, 36, 40), interpolate_pos_encoding=True), "not divisible by the patch size"),
        (lambda m: m(torch.randn(3, 32, 32)), "must be a 4D tensor"),
        (lambda m: m.head(torch.randn(2, 16)), "expects 32 input features but got 16"),
    ],
)
def test_bad_input_errors_name_the_problem(call, message) -> None:
    model = VitzooViTForImageClassification(tiny_config())
    with pytest.raises(ValueError, match=message):
        call(model)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"head_type": "conv"}, "Unknown head_type 'conv'; expected one of 'linear', 'mlp', 'none'"),
        ({"head_pooling": "gem"}, "Unknown head_pooling 'gem'"),
        ({"global_pool": "attn"}, "Unknown global_pool 'attn'"),
        ({"class_token": False}, "global_pool='token' needs a class token"),
        ({"head_type": "mlp"}, "head_type='mlp' needs head_hidden_sizes"),
        ({"class_token": False, "global_pool": "avg", "head_pooling": "token"}, "head_pooling='token' needs a class"),
        ({"head_pooling": "cls_mean"}, "head_pooling='cls_mean' is now called 'token_avg'"),
        ({"num_attention_heads": 5}, r"hidden_size \(32\) must be divisible by num_attention_heads \(5\)"),
    ],
)
def test_bad_config_errors_name_the_problem(overrides, message) -> None:
    with pytest.raises(ValueError, match=message):
        VitzooViTForImageClassification(tiny_config(**overrides))


class BrightnessImages(torch.utils.data.Dataset):
    """Learnable toy task: the label is whether the image is bright or dark."""

    def __init__(self, count: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.labels = torch.randint(0, 2, (count,), generator=generator)
        noise = torch.randn(count, 3, 32, 32, generator=generator) * 0.3
        self.pixels = noise + (self.labels.float() * 2 - 1).view(-1, 1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.pixels[index], "labels": self.labels[index]}


def test_trainer_learns_a_toy_task(tmp_path) -> None:
    from transformers import Trainer, TrainingArguments

    torch.manual_seed(0)
    model = VitzooViTForImageClassification(tiny_config(num_labels=2))
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=16,
        max_steps=12,
        learning_rate=3e-3,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=BrightnessImages(192))
    trainer.train()
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    assert len(losses) == 12 and all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3, losses
    eval_set = BrightnessImages(64)
    with torch.no_grad():
        accuracy = (model.eval()(eval_set.pixels).logits.argmax(-1) == eval_set.labels).float().mean()
    assert accuracy > 0.9


def test_model_without_pooling_returns_no_pooler_output() -> None:
    model = VitzooViTModel(tiny_config(global_pool="")).eval()
    out = model(images())
    assert out.pooler_output is None and out.last_hidden_state.shape == (4, 17, 32)
    with pytest.raises(ValueError, match="set head_pooling"):
        VitzooViTForImageClassification(tiny_config(global_pool=""))(images())
