"""Reading timm modules into config fields: the pieces every family's conversion hooks share."""

from __future__ import annotations

from torch import nn


class UnsupportedArchitecture(ValueError):
    """The timm model uses a layer or flag the target family does not implement."""


class ConversionError(RuntimeError):
    """A conversion that cannot produce a verified folder; the message says why and what to do."""


def present(module: nn.Module | None) -> bool:
    return module is not None and not isinstance(module, nn.Identity)


def activation_name(act: nn.Module) -> str:
    """transformers ``ACT2FN`` key of a timm activation module."""
    name = type(act).__name__
    if isinstance(act, nn.GELU):
        return "gelu_pytorch_tanh" if act.approximate == "tanh" else "gelu"
    names = {"GELU": "gelu", "GELUTanh": "gelu_pytorch_tanh", "QuickGELU": "quick_gelu", "SiLU": "silu", "ReLU": "relu",
             "ReLU6": "relu6", "Hardswish": "hardswish"}  # fmt: skip
    if name not in names:
        raise UnsupportedArchitecture(f"activation {name} is not supported (supported: {', '.join(names)}).")
    return names[name]


def norm_spec(norm: nn.Module) -> tuple[str, float]:
    name = type(norm).__name__
    if isinstance(norm, nn.LayerNorm):
        if norm.bias is None or not norm.elementwise_affine:
            raise UnsupportedArchitecture(f"norm layer {name} without affine weight and bias is not supported.")
        return "layernorm", float(norm.eps)
    if name == "RmsNorm" or isinstance(norm, nn.RMSNorm):
        if getattr(norm, "weight", None) is None:
            raise UnsupportedArchitecture(f"norm layer {name} without a weight is not supported.")
        return "rmsnorm", float(norm.eps)
    raise UnsupportedArchitecture(f"norm layer {name} is not supported (LayerNorm and RmsNorm are).")


def square_or_pair(size: tuple[int, int]) -> int | list[int]:
    """An int for square sizes: transformers' dense models (DPT, DepthAnything) read ``patch_size`` as one."""
    return int(size[0]) if size[0] == size[1] else [int(size[0]), int(size[1])]


def head_fields(classifier: nn.Module) -> dict:
    """Head fields of a timm classifier Linear (Identity: a model without classifier)."""
    if not isinstance(classifier, (nn.Linear, nn.Identity)):
        raise UnsupportedArchitecture(f"classifier {type(classifier).__name__} is not supported (Linear is).")
    num_classes = classifier.out_features if isinstance(classifier, nn.Linear) else 0
    # A headless model gets no labels (num_labels=0): asking for N labels later creates a fresh N-class head.
    return dict(head_type="linear", num_labels=num_classes)
