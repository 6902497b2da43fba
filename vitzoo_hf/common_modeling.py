"""Model plumbing every family shares: the PreTrainedModel flags and the Backbone set-up.

A family's ``<X>PreTrainedModel`` lists :class:`VitzooPreTrainedMixin` before transformers' ``PreTrainedModel``
and its ``<X>Backbone`` lists :class:`VitzooBackboneMixin` first (see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from transformers import AutoBackbone, AutoConfig

from .common_compat import init_backbone


class VitzooPreTrainedMixin:
    """Class flags of every family's ``PreTrainedModel`` (the family adds ``config_class``, ``base_model_prefix``,
    ``_no_split_modules``, its attention flags and ``_init_weights``)."""

    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    # Loading a classification folder into the headless classes leaves the head out, by design.
    _keys_to_ignore_on_load_unexpected = [r"^head\.", r"^head_dist\.", r"^head_pool\."]


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


__all__ = ["VitzooBackboneMixin", "VitzooPreTrainedMixin"]
