"""Configuration of the ``vitzoo_convnext`` family: every timm ``ConvNeXt`` (ConvNeXt, ConvNeXt-V2, DINOv3 ConvNeXt,
the OpenCLIP ConvNeXt towers, the ``_ols``/``_rms``/``_hnf``/``_mlp`` variants)."""

from __future__ import annotations

from transformers.activations import ACT2FN

# Every sibling the config needs is imported here by name: some transformers releases copy only direct imports.
from .common_compat import BackboneConfigMixin  # noqa: F401
from .common_config import Field, VitzooConfig  # noqa: F401
from .common_heads import HEAD_TYPES  # noqa: F401
from .common_layers import Activation  # noqa: F401
from .stage_config import StageConfig
from .stage_layers import CHANNEL_NORMS

STEM_TYPES = ("patch", "overlap", "overlap_tiered", "overlap_act")


class VitzooConvNextConfig(StageConfig):
    r"""A timm ConvNeXt: the stage-family fields (``hidden_sizes`` is timm's ``dims``) plus ConvNeXt's own.
    ``pooler_output`` is timm's pre-logits: pool, norm (unless ``head_norm_first``), then the MLP if any."""

    model_type = "vitzoo_convnext"
    config_fields = dict(
        stem_type=Field(
            "patch",
            '"patch" (one strided conv) or two 3x3 stride-2 convs: "overlap", "overlap_tiered", "overlap_act"',
            STEM_TYPES,
        ),
        patch_size=Field(4, "the patch stem's kernel and stride"),
        stem_mid_channels=Field(None, "overlap stems' first conv; None: hidden_sizes[0]"),
        kernel_sizes=Field((7, 7, 7, 7), "depthwise kernel per stage"),
        mlp_ratio=Field(4.0, "MLP width over block width"),
        conv_mlp=Field(False, "1x1 convs and NCHW norms instead of Linear layers on channels-last tensors"),
        conv_bias=Field(True, "bias of the depthwise conv"),
        use_grn=Field(False, "ConvNeXt-V2's global response norm in the MLP"),
        layer_scale_init_value=Field(1e-6, "LayerScale's initial value; None: no LayerScale [ls_init_value]"),
        hidden_act=Field("gelu", "MLP activation [act_layer]", ACT2FN),
        norm_type=Field("layernorm", '"layernorm", "rmsnorm" or "simplenorm" [norm_layer]', CHANNEL_NORMS),
        layer_norm_eps=Field(1e-6, "norm epsilon [norm_eps]"),
        head_norm_first=Field(False, "the final norm on the map before pooling (the _hnf models); else after"),
        head_hidden_size=Field(None, "an MLP pre-logits layer's width (the _mlp models)"),
        stem_stride=Field(lambda config: config.patch_size if config.stem_type == "patch" else 4, "stem stride"),
    )

    def check_fields(self) -> None:
        if self.head_norm_first and self.head_hidden_size:
            raise ValueError("head_hidden_size (an MLP pre-logits layer) needs head_norm_first=False, as in timm.")
        if len(self.kernel_sizes) != len(self.depths):
            raise ValueError(f"kernel_sizes lists {len(self.kernel_sizes)} values; give one per stage.")
        super().check_fields()

    @property
    def pooled_width(self) -> int:
        """Width of ``pooler_output``: the MLP pre-logits' if any, else the last stage's."""
        return self.head_hidden_size or self.hidden_sizes[-1]


__all__ = ["VitzooConvNextConfig"]
