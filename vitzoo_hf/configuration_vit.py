"""Configuration of the ``vitzoo_vit`` family: every timm ``VisionTransformer``/``VisionTransformerDistilled``.

One config drives ViT, DeiT (distilled), DeiT3, DINO, DINOv2 (+registers), CLIP, SigLIP/SigLIP2, AIMv2,
BEiT3-style and I-JEPA/MAE variants through flags that mirror timm's constructor arguments.
"""

from __future__ import annotations

from .attention_layers import MLP_TYPES  # noqa: F401

# Every sibling the config needs is imported here by name: some transformers releases copy only direct imports.
from .common_compat import BackboneConfigMixin  # noqa: F401
from .common_config import VitzooConfig  # noqa: F401
from .common_heads import HEAD_TYPES  # noqa: F401
from .common_layers import NORMS  # noqa: F401
from .token_config import TokenConfig, norms_after_pooling


class VitzooViTConfig(TokenConfig):
    r"""A timm Vision Transformer: the token-family fields (see ``TokenConfig``: architecture, head, backbone)
    plus ``proj_bias`` (biases of the attention output and MLP projections) and ``distilled`` (DeiT's
    distillation token and second head; logits average both heads, as timm's eval does).
    """

    model_type = "vitzoo_vit"

    def __init__(self, proj_bias: bool = True, distilled: bool = False, **kwargs) -> None:
        if distilled and (
            not kwargs.get("class_token", True)
            or kwargs.get("global_pool", "token") != "token"
            or kwargs.get("num_register_tokens", 0)
        ):
            raise ValueError(
                "distilled=True (DeiT) reads the class and distillation tokens: it needs class_token=True, "
                "global_pool='token' and no register tokens."
            )
        self.proj_bias = proj_bias
        self.distilled = distilled
        super().__init__(**kwargs)

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
