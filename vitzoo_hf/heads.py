"""Classification heads and token pooling shared by every vitzoo family.

A family's ``ForImageClassification`` asks :func:`pool_tokens` for the head input and :class:`ClassifierHead`
for the logits, so every family offers the same head and pooling options through its config.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.activations import ACT2FN


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


def freeze(module: nn.Module, frozen: bool) -> None:
    for parameter in module.parameters():
        parameter.requires_grad_(not frozen)


__all__ = ["ClassifierHead", "freeze", "pool_tokens", "pooled_width"]
