"""Configuration of the ``vitzoo_convnext`` family: every timm ``ConvNeXt`` (ConvNeXt, ConvNeXt-V2, DINOv3 ConvNeXt,
the OpenCLIP ConvNeXt towers, the ``_ols``/``_rms``/``_hnf``/``_mlp`` variants)."""

from __future__ import annotations

from transformers.activations import ACT2FN

# Every sibling the config needs is imported here by name: some transformers releases copy only direct imports.
from .common_compat import BackboneConfigMixin  # noqa: F401
from .common_config import VitzooConfig, check_choice  # noqa: F401
from .common_heads import HEAD_TYPES  # noqa: F401
from .common_layers import Activation  # noqa: F401
from .stage_config import StageConfig
from .stage_layers import CHANNEL_NORMS

STEM_TYPES = ("patch", "overlap", "overlap_tiered", "overlap_act")


class VitzooConvNextConfig(StageConfig):
    r"""A timm ConvNeXt: the stage-family fields (see ``StageConfig``; ``hidden_sizes`` is timm's ``dims``) plus
    (timm argument in brackets) ``stem_type`` ("patch": one strided conv; "overlap", "overlap_tiered",
    "overlap_act": two 3x3 stride-2 convs, the ``_ols`` models), ``patch_size`` (patch stem),
    ``stem_mid_channels`` (overlap stems' first conv; None: ``hidden_sizes[0]``), ``kernel_sizes`` (depthwise
    kernel per stage), ``mlp_ratio``, ``conv_mlp`` (1x1 convs and NCHW norms instead of Linear layers on
    channels-last tensors), ``conv_bias``, ``use_grn`` (ConvNeXt-V2's global response norm),
    ``layer_scale_init_value`` [ls_init_value; None: no LayerScale], ``hidden_act`` [act_layer], ``norm_type``
    ("layernorm", "rmsnorm", "simplenorm") and ``layer_norm_eps`` [norm_layer, norm_eps], ``head_norm_first``
    (the final norm on the map before pooling, the ``_hnf`` models; else after pooling), ``head_hidden_size``
    (an MLP pre-logits layer, the ``_mlp`` models).

    ``pooler_output`` is timm's pre-logits: pool, norm (unless ``head_norm_first``), then the MLP if any.
    """

    model_type = "vitzoo_convnext"

    def __init__(
        self,
        stem_type: str = "patch",
        patch_size: int = 4,
        stem_mid_channels: int | None = None,
        kernel_sizes: list[int] = (7, 7, 7, 7),
        mlp_ratio: float = 4.0,
        conv_mlp: bool = False,
        conv_bias: bool = True,
        use_grn: bool = False,
        layer_scale_init_value: float | None = 1e-6,
        hidden_act: str = "gelu",
        norm_type: str = "layernorm",
        layer_norm_eps: float = 1e-6,
        head_norm_first: bool = False,
        head_hidden_size: int | None = None,
        **kwargs,
    ) -> None:
        check_choice("stem_type", stem_type, STEM_TYPES)
        check_choice("norm_type", norm_type, CHANNEL_NORMS)
        check_choice("hidden_act", hidden_act, ACT2FN)
        if head_norm_first and head_hidden_size:
            raise ValueError("head_hidden_size (an MLP pre-logits layer) needs head_norm_first=False, as in timm.")
        kernel_sizes = list(kernel_sizes)
        if len(kernel_sizes) != len(kwargs.get("depths", (3, 3, 9, 3))):
            raise ValueError(f"kernel_sizes lists {len(kernel_sizes)} values; give one per stage.")
        kwargs.setdefault("stem_stride", patch_size if stem_type == "patch" else 4)
        self.stem_type = stem_type
        self.patch_size = patch_size
        self.stem_mid_channels = stem_mid_channels
        self.kernel_sizes = kernel_sizes
        self.mlp_ratio = mlp_ratio
        self.conv_mlp = conv_mlp
        self.conv_bias = conv_bias
        self.use_grn = use_grn
        self.layer_scale_init_value = layer_scale_init_value
        self.hidden_act = hidden_act
        self.norm_type = norm_type
        self.layer_norm_eps = layer_norm_eps
        self.head_norm_first = head_norm_first
        self.head_hidden_size = head_hidden_size
        super().__init__(**kwargs)

    @property
    def pooled_width(self) -> int:
        """Width of ``pooler_output``: the MLP pre-logits' if any, else the last stage's."""
        return self.head_hidden_size or self.hidden_sizes[-1]


__all__ = ["VitzooConvNextConfig"]
