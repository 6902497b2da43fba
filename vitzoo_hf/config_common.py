"""Options every vitzoo family config shares: validation, the classification head, the backbone, auto_map."""

from __future__ import annotations

from .compat import set_backbone_outputs

GLOBAL_POOLS = ("token", "avg", "avgmax", "max", "map", "")
HEAD_TYPES = ("linear", "mlp", "none")
HEAD_POOLINGS = (None, "cls", "mean", "cls_mean", "map")
MLP_TYPES = ("mlp", "glu_packed", "swiglu")
NORM_TYPES = ("layernorm", "rmsnorm")
ACTIVATIONS = ("gelu", "quick_gelu", "gelu_pytorch_tanh", "silu", "relu")


def check_choice(name: str, value, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"Unknown {name} {value!r}; expected one of {', '.join(repr(c) for c in choices)}.")


def check_encoder(config) -> None:
    """Checks on the fields the shared encoder reads."""
    check_choice("global_pool", config.global_pool, GLOBAL_POOLS)
    check_choice("mlp_type", config.mlp_type, MLP_TYPES)
    check_choice("norm_type", config.norm_type, NORM_TYPES)
    check_choice("hidden_act", config.hidden_act, ACTIVATIONS)
    if config.global_pool == "token" and not config.class_token:
        raise ValueError("global_pool='token' needs a class token: set class_token=True or choose another pool.")
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(
            f"hidden_size ({config.hidden_size}) must be divisible by num_attention_heads "
            f"({config.num_attention_heads})."
        )


def set_head_options(
    config,
    head_type: str,
    head_pooling: str | None,
    head_hidden_sizes: list[int] | None,
    head_act: str,
    head_dropout: float,
    head_norm: bool,
    freeze_backbone: bool,
) -> None:
    """The ``ForImageClassification`` head: see the family config docstrings."""
    check_choice("head_type", head_type, HEAD_TYPES)
    check_choice("head_pooling", head_pooling, HEAD_POOLINGS)
    check_choice("head_act", head_act, ACTIVATIONS)
    config.head_type = head_type
    config.head_pooling = head_pooling
    config.head_hidden_sizes = list(head_hidden_sizes or [])
    config.head_act = head_act
    config.head_dropout = head_dropout
    config.head_norm = head_norm
    config.freeze_backbone = freeze_backbone


def set_backbone_options(
    config,
    out_features: list[str] | None,
    out_indices: list[int] | None,
    apply_layernorm: bool,
    reshape_hidden_states: bool,
) -> None:
    """Stages ``stem``, ``stage1``..``stageN`` (stage i = output of block i), as transformers' ViT backbones."""
    config.apply_layernorm = apply_layernorm
    config.reshape_hidden_states = reshape_hidden_states
    config.stage_names = ["stem"] + [f"stage{i}" for i in range(1, config.num_hidden_layers + 1)]
    set_backbone_outputs(config, out_features, out_indices)


def auto_map(family: str, config_class: str, prefix: str) -> dict[str, str]:
    """All four Auto entries; save_pretrained alone would record only the saving class."""
    return {
        "AutoConfig": f"configuration_{family}.{config_class}",
        "AutoModel": f"modeling_{family}.{prefix}Model",
        "AutoModelForImageClassification": f"modeling_{family}.{prefix}ForImageClassification",
        "AutoBackbone": f"modeling_{family}.{prefix}Backbone",
    }
