"""Configuration of the ``vitzoo_vit`` family: every timm ``VisionTransformer``/``VisionTransformerDistilled``.

One config drives ViT, DeiT (distilled), DeiT3, DINO, DINOv2 (+registers), CLIP, SigLIP/SigLIP2, AIMv2,
BEiT3-style and I-JEPA/MAE variants through flags that mirror timm's constructor arguments.
"""

from __future__ import annotations

from .attention_layers import MLP_TYPES  # noqa: F401

# Every sibling the config needs is imported here by name: some transformers releases copy only direct imports.
from .common_compat import BackboneConfigMixin  # noqa: F401
from .common_config import Field, VitzooConfig  # noqa: F401
from .common_heads import HEAD_TYPES  # noqa: F401
from .common_layers import NORMS  # noqa: F401
from .token_config import TokenConfig, norms_after_pooling


class VitzooViTConfig(TokenConfig):
    r"""A timm Vision Transformer: the token-family fields plus ViT's own."""

    model_type = "vitzoo_vit"
    config_fields = dict(
        proj_bias=Field(True, "biases of the attention output and MLP projections"),
        distilled=Field(False, "DeiT's distillation token and second head (logits average both, as timm's eval)"),
    )

    def check_fields(self) -> None:
        if self.distilled and (not self.class_token or self.global_pool != "token" or self.num_register_tokens):
            raise ValueError(
                "distilled=True (DeiT) reads the class and distillation tokens: it needs class_token=True, "
                "global_pool='token' and no register tokens."
            )
        super().check_fields()

    @property
    def num_prefix_tokens(self) -> int:
        """Class, distillation and register tokens in front of the patch tokens."""
        return super().num_prefix_tokens + int(self.distilled)

    @classmethod
    def upgrade_saved_fields(cls, fields: dict) -> dict:
        """Release 0.1 vit configs (they carry ``block_type``) read ``final_norm`` as timm's ViT does: one norm,
        moved after pooling when ``fc_norm`` is on. Today the two norms are separate fields."""
        if "block_type" in fields:
            pool, fc_norm = fields.get("global_pool", "token"), fields.get("fc_norm")
            final_norm = fields.get("final_norm", True)
            use_fc_norm = norms_after_pooling(pool, fc_norm)
            fields["final_norm"], fields["fc_norm"] = final_norm and not use_fc_norm, final_norm and use_fc_norm
        return super().upgrade_saved_fields(fields)


__all__ = ["VitzooViTConfig"]
