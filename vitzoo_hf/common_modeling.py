"""Model plumbing every family shares: the PreTrainedModel flags and the Backbone set-up.

A family's ``<X>PreTrainedModel`` lists :class:`VitzooPreTrainedMixin` before transformers' ``PreTrainedModel``
and its ``<X>Backbone`` lists :class:`VitzooBackboneMixin` first (see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from transformers import AutoBackbone, AutoConfig

from .common_compat import init_backbone

# Sanity bounds on the fields that size a model, far beyond any timm model: a value outside is a typo or a damaged
# config.json, refused before anything is allocated (a depth of 10**6 would otherwise build for minutes).
POSITIVE_FIELDS = {"image_size": 16384, "num_channels": 1024, "patch_size": 1024, "hidden_size": 65536,
                   "num_attention_heads": 1024, "hidden_sizes": 65536, "kernel_sizes": 1024}  # fmt: skip
COUNT_FIELDS = {"num_hidden_layers": 1024, "depths": 1024, "intermediate_size": 1 << 20, "num_register_tokens": 1024,
                "head_hidden_sizes": 1 << 20}  # fmt: skip


def check_config_bounds(config) -> None:
    """Refuse absurd sizes (negative, zero where a size must exist, or astronomically large) with the field named."""
    for bounds, low in ((POSITIVE_FIELDS, 1), (COUNT_FIELDS, 0)):
        for name, high in bounds.items():
            value = getattr(config, name, None)
            values = value if isinstance(value, (list, tuple)) else [] if value is None else [value]
            if any(not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high for v in values):
                raise ValueError(
                    f"config {name}={value!r} is outside {low}..{high} (whole numbers): a typo or a damaged "
                    "config.json? These bounds are far beyond any timm model."
                )
    blocks = sum(getattr(config, "depths", None) or [getattr(config, "num_hidden_layers", 0) or 0])
    if blocks > 1024:
        raise ValueError(f"config asks for {blocks} blocks in all (at most 1024): a typo or a damaged config.json?")


class VitzooPreTrainedMixin:
    """Class flags of every family's ``PreTrainedModel`` (the family adds ``config_class``, ``base_model_prefix``,
    ``_no_split_modules``, its attention flags and ``_init_weights``); absurd configs are refused before building."""

    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    # Loading a classification folder into the headless classes leaves the head out, by design.
    _keys_to_ignore_on_load_unexpected = [r"^head\.", r"^head_dist\.", r"^head_pool\."]

    def __init__(self, config, *args, **kwargs) -> None:
        check_config_bounds(config)
        super().__init__(config, *args, **kwargs)


class VitzooBackboneMixin:
    """transformers' backbone API over a family's stages: ``init_backbone`` sets the per-stage widths."""

    def init_backbone(self, config, num_features: list[int]) -> None:
        """``num_features``: channels of ``stem`` and of each stage, in ``config.stage_names`` order."""
        init_backbone(self, config)
        self.num_features = list(num_features)

    @classmethod
    def register_auto_classes(cls) -> None:
        """Teach AutoConfig and AutoBackbone this family in this process, so that transformers' dense models
        (UperNet, DPT, DepthAnything, Mask2Former, DETR) build it from their ``backbone_config`` and reload it.
        ``import vitzoo_hf`` does this for every family; this is the same for a folder loaded as remote code."""
        AutoConfig.register(cls.config_class.model_type, cls.config_class, exist_ok=True)
        AutoBackbone.register(cls.config_class, cls, exist_ok=True)


__all__ = ["VitzooBackboneMixin", "VitzooPreTrainedMixin", "check_config_bounds"]
