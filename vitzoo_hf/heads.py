"""Classification heads and token pooling shared by every vitzoo family.

A family's ``ForImageClassification`` asks :func:`pool_tokens` for the head input and :class:`ClassifierHead`
for the logits, so every family offers the same head and pooling options through its config.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.modeling_outputs import ImageClassifierOutput

NO_HEAD = (
    "This model has no classification head (num_labels=0: it was converted from a timm model without a "
    "classifier). Ask for one: AutoModelForImageClassification.from_pretrained(path, trust_remote_code=True, "
    "num_labels=N, ignore_mismatched_sizes=True) creates a new N-class linear head to train (add head_type='mlp', "
    "head_hidden_sizes=[...] for another). For features, load it with AutoModel."
)


def pool_tokens(
    pooling: str,
    last_hidden_state: torch.Tensor,
    num_prefix_tokens: int,
    fc_norm: nn.Module,
    attn_pool: nn.Module | None = None,
) -> torch.Tensor:
    """Head input from the token sequence.

    ``cls`` is token 0, ``mean`` the mean of the patch tokens, ``cls_mean`` their concatenation (DINOv2's
    linear-probe recipe), ``map`` attention pooling over the patch tokens. ``fc_norm`` is the model's
    post-pool norm (identity when the model norms before pooling), applied as timm applies it.
    """
    if pooling in ("cls", "cls_mean") and num_prefix_tokens == 0:
        raise ValueError(f"head_pooling={pooling!r} needs a class token but this model has none; use 'mean' or 'map'.")
    patches = last_hidden_state[:, num_prefix_tokens:]
    if pooling == "cls":
        return fc_norm(last_hidden_state[:, 0])
    if pooling == "mean":
        return fc_norm(patches.mean(dim=1))
    if pooling == "cls_mean":
        return torch.cat([fc_norm(last_hidden_state[:, 0]), fc_norm(patches.mean(dim=1))], dim=-1)
    if pooling == "map":
        return attn_pool(patches)
    raise ValueError(f"Unknown head_pooling {pooling!r}; expected 'cls', 'mean', 'cls_mean' or 'map'.")


def pooled_width(pooling: str | None, hidden_size: int) -> int:
    return 2 * hidden_size if pooling == "cls_mean" else hidden_size


class ClassifierHead(nn.Module):
    """``linear``: one Linear; ``mlp``: [Linear -> (LayerNorm) -> act -> dropout] per hidden size, then Linear;
    ``none``: the pooled features are the logits (timm's ``num_classes=0``)."""

    def __init__(
        self,
        head_type: str,
        in_features: int,
        num_labels: int,
        hidden_sizes: list[int],
        act: str,
        dropout: float,
        norm: bool,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.dropout = nn.Dropout(dropout)
        if head_type == "none":
            self.layers = nn.Identity()
            return
        if head_type == "linear":
            if hidden_sizes:
                raise ValueError("head_hidden_sizes is set but head_type='linear'; use head_type='mlp'.")
            self.layers = nn.Linear(in_features, num_labels)
            return
        if head_type != "mlp":
            raise ValueError(f"Unknown head_type {head_type!r}; expected 'linear', 'mlp' or 'none'.")
        if not hidden_sizes:
            raise ValueError("head_type='mlp' needs head_hidden_sizes, e.g. [1024].")
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), nn.LayerNorm(size) if norm else nn.Identity(), ACT2FN[act]]
            layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, num_labels))
        self.layers = nn.Sequential(*layers)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        if pooled.shape[-1] != self.in_features:
            raise ValueError(
                f"The head expects {self.in_features} input features but got {pooled.shape[-1]}: it was built for "
                "another hidden size or pooling. Rebuild it, e.g. from_pretrained(..., ignore_mismatched_sizes=True)."
            )
        return self.layers(self.dropout(pooled))


class ImageClassifierMixin:
    """``ForImageClassification`` of any family: a configurable head over a chosen pooling.

    The family's class builds its base model at ``base_model_prefix``, then calls :meth:`init_head` with a
    factory for a fresh attention pool (used when ``head_pooling="map"`` and the model has none).
    """

    def init_head(self, config, make_attn_pool) -> None:
        # transformers picks the loss from the class name; pin it so user subclasses keep it too.
        self.loss_type = "ForImageClassification"
        self.num_labels = config.num_labels
        pooling = config.head_pooling
        if pooling in ("cls", "cls_mean") and not config.class_token:
            raise ValueError(
                f"head_pooling={pooling!r} needs a class token but class_token=False; use 'mean' or 'map'."
            )
        width = pooled_width(pooling, config.hidden_size)
        if config.head_type == "none" and config.num_labels != width:
            raise ValueError(
                f"head_type='none' makes the {width} pooled features the logits, but num_labels={config.num_labels}. "
                f"Pass num_labels={width}, or head_type='linear' (or 'mlp') for a trainable "
                f"{config.num_labels}-class head."
            )
        if config.head_type != "none" and config.num_labels < 1:
            raise ValueError(NO_HEAD)
        # "map" pooling on a model without its own attention pool trains a fresh one here.
        self.head_pool = make_attn_pool() if pooling == "map" and config.global_pool != "map" else None
        head_args = (
            config.head_type,
            width,
            config.num_labels,
            config.head_hidden_sizes,
            config.head_act,
            config.head_dropout,
            config.head_norm,
        )
        self.head = ClassifierHead(*head_args)
        # DeiT: a second head reads the distillation token and eval logits average both (as timm).
        two_heads = getattr(config, "distilled", False) and config.head_type == "linear" and pooling is None
        self.head_dist = ClassifierHead(*head_args) if two_heads else None

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
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        config, encoder = self.config, self.base_model
        return_dict = return_dict if return_dict is not None else config.return_dict
        outputs = encoder(
            pixel_values,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            interpolate_pos_encoding=interpolate_pos_encoding,
            return_dict=True,
        )
        tokens = outputs.last_hidden_state
        if self.head_dist is not None:
            logits = (self.head(tokens[:, 0]) + self.head_dist(tokens[:, 1])) / 2
        elif config.head_pooling is None:
            if outputs.pooler_output is None:
                raise ValueError("global_pool='' gives no pooled output: set head_pooling for the head.")
            logits = self.head(outputs.pooler_output)
        else:
            attn_pool = self.head_pool if self.head_pool is not None else encoder.attn_pool
            pooled = pool_tokens(config.head_pooling, tokens, config.num_prefix_tokens, encoder.fc_norm, attn_pool)
            logits = self.head(pooled)
        loss = self.loss_function(labels, logits, config) if labels is not None else None
        output = ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )
        return output if return_dict else output.to_tuple()


__all__ = ["ClassifierHead", "ImageClassifierMixin", "pool_tokens", "pooled_width"]
