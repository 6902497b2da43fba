"""The classification head of every family: a configurable head over the features the family pools.

A family's ``ForImageClassification`` builds its base model at ``base_model_prefix``, calls
:meth:`ImageClassifierMixin.init_head` with the width of its pooled features and implements
``pool_for_head(outputs, pooling)`` for the ``head_pooling`` choices its config offers (token families: token,
avg, token_avg, map...; stage families: avg, max...). Everything else (head types, checks, loss, freezing) is here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput

NO_HEAD = (
    "This model has no classification head (num_labels=0: it was converted from a timm model without a "
    "classifier). Ask for one: AutoModelForImageClassification.from_pretrained(path, trust_remote_code=True, "
    "num_labels=N, ignore_mismatched_sizes=True) creates a new N-class linear head to train (add head_type='mlp', "
    "head_hidden_sizes=[...] for another). For features, load it with AutoModel."
)


def _linear(width: int, num_labels: int, hidden_sizes: list[int], act: str, dropout: float, norm: bool) -> nn.Module:
    if hidden_sizes:
        raise ValueError("head_hidden_sizes is set but head_type='linear'; use head_type='mlp'.")
    return nn.Linear(width, num_labels)


def _mlp(width: int, num_labels: int, hidden_sizes: list[int], act: str, dropout: float, norm: bool) -> nn.Module:
    if not hidden_sizes:
        raise ValueError("head_type='mlp' needs head_hidden_sizes, e.g. [1024].")
    layers: list[nn.Module] = []
    for size in hidden_sizes:
        layers += [nn.Linear(width, size), nn.LayerNorm(size) if norm else nn.Identity(), ACT2FN[act]]
        layers.append(nn.Dropout(dropout))
        width = size
    layers.append(nn.Linear(width, num_labels))
    return nn.Sequential(*layers)


def _none(width: int, num_labels: int, hidden_sizes: list[int], act: str, dropout: float, norm: bool) -> nn.Module:
    return nn.Identity()


# The one list of head types: configs validate ``head_type`` against it, ClassifierHead builds from it.
HEAD_TYPES = {"linear": _linear, "mlp": _mlp, "none": _none}


class ClassifierHead(nn.Module):
    """``linear``: one Linear; ``mlp``: [Linear -> (LayerNorm) -> act -> dropout] per hidden size, then Linear;
    ``none``: the pooled features are the logits (timm's ``num_classes=0``)."""

    def __init__(self, config, in_features: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.dropout = nn.Dropout(config.head_dropout)
        options = (config.head_hidden_sizes, config.head_act, config.head_dropout, config.head_norm)
        self.layers = HEAD_TYPES[config.head_type](in_features, config.num_labels, *options)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        if pooled.shape[-1] != self.in_features:
            raise ValueError(
                f"The head expects {self.in_features} input features but got {pooled.shape[-1]}: it was built for "
                "another hidden size or pooling. Rebuild it, e.g. from_pretrained(..., ignore_mismatched_sizes=True)."
            )
        return self.layers(self.dropout(pooled))


def classification_loss(
    config, logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch: int | torch.Tensor | None = None
) -> torch.Tensor:
    """The loss ``config.problem_type`` names (inferred on first use as transformers does: one label regression,
    integer labels single-label, else multi-label). Computed here rather than looked up by class name, so
    subclasses under any name keep it; ``num_items_in_batch`` (Trainer's gradient accumulation) averages the
    single-label loss over the whole accumulated batch."""
    num_labels = config.num_labels
    if config.problem_type is None:
        if num_labels == 1:
            config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    labels = labels.to(logits.device)
    if config.problem_type == "regression":
        return F.mse_loss(logits.squeeze(), labels.squeeze()) if num_labels == 1 else F.mse_loss(logits, labels)
    if config.problem_type == "single_label_classification":
        if num_items_in_batch is None:
            return F.cross_entropy(logits.view(-1, num_labels), labels.view(-1))
        total = F.cross_entropy(logits.view(-1, num_labels), labels.view(-1), reduction="sum")
        return total / torch.as_tensor(num_items_in_batch, device=total.device)
    if config.problem_type == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(logits, labels)
    raise ValueError(
        f"Unknown problem_type {config.problem_type!r}; expected 'regression', 'single_label_classification' or "
        "'multi_label_classification'."
    )


class ImageClassifierMixin:
    """``ForImageClassification`` of any family: a configurable head over a chosen pooling."""

    def init_head(self, config, width: int) -> None:
        """``width``: features the family pools for ``config.head_pooling``."""
        self.num_labels = config.num_labels
        if config.head_type == "none" and config.num_labels != width:
            raise ValueError(
                f"head_type='none' makes the {width} pooled features the logits, but num_labels={config.num_labels}. "
                f"Pass num_labels={width}, or head_type='linear' (or 'mlp') for a trainable "
                f"{config.num_labels}-class head."
            )
        if config.head_type != "none" and config.num_labels < 1:
            raise ValueError(NO_HEAD)
        self.head = ClassifierHead(config, width)

    def pool_for_head(self, outputs: BaseModelOutputWithPooling, pooling: str) -> torch.Tensor:
        """Head input for a ``head_pooling`` other than None; the family implements it."""
        raise NotImplementedError

    def classify(self, outputs: BaseModelOutputWithPooling) -> torch.Tensor:
        """Logits from the base model's outputs (a family with two heads, DeiT, overrides it)."""
        if self.config.head_pooling is not None:
            return self.head(self.pool_for_head(outputs, self.config.head_pooling))
        if outputs.pooler_output is None:
            raise ValueError("global_pool='' gives no pooled output: set head_pooling for the head.")
        return self.head(outputs.pooler_output)

    def post_init(self) -> None:
        """transformers' set-up, then ``config.freeze_backbone`` applied: a model built from a config is frozen as
        it is made."""
        super().post_init()
        if self.config.freeze_backbone:
            self.freeze_backbone()

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """transformers' loading, then ``config.freeze_backbone`` applied again: transformers 5 materialises the
        loaded weights as new parameters after ``__init__``, which drops the freezing done there (4.57 kept it)."""
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # output_loading_info=True gives a pair
        if model.config.freeze_backbone:
            model.freeze_backbone()
        return loaded

    def freeze_backbone(self, frozen: bool = True) -> None:
        """Train only the head (linear probing); ``frozen=False`` undoes it."""
        for parameter in self.base_model.parameters():
            parameter.requires_grad_(not frozen)
        self.config.freeze_backbone = frozen

    def unfreeze_backbone(self) -> None:
        self.freeze_backbone(False)

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        """``kwargs`` go to the base model (token families: ``interpolate_pos_encoding``)."""
        config = self.config
        return_dict = return_dict if return_dict is not None else config.return_dict
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        outputs = self.base_model(
            pixel_values,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            **kwargs,
        )
        logits = self.classify(outputs)
        loss = None if labels is None else classification_loss(config, logits, labels, num_items_in_batch)
        output = ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return output if return_dict else output.to_tuple()


__all__ = ["HEAD_TYPES", "NO_HEAD", "ClassifierHead", "ImageClassifierMixin", "classification_loss"]
