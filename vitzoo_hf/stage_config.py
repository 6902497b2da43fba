"""The config base of the stage families (convnext, resnet, ...): a stem, then stages of feature maps.

Fields every stage family has, each declared once; a family config adds its block's own options.
"""

from __future__ import annotations

from .common_config import Field, VitzooConfig

# Pools over a feature map, timm's names (``global_pool`` and ``head_pooling`` alike).
STAGE_POOLS = ("avg", "max", "avgmax")


class StageConfig(VitzooConfig):
    r"""Stage-family architecture. ``head_pooling``: None (the model's own pooler output) or a pool of the final
    map. Backbone: ``stage_names`` are "stem" and "stage1".."stageN"; each map keeps its own channels
    (``num_features``) and stride."""

    head_poolings = STAGE_POOLS
    config_fields = dict(
        depths=Field((3, 3, 9, 3), "blocks per stage"),
        hidden_sizes=Field((96, 192, 384, 768), "channels out of each stage"),
        stem_channels=Field(None, "channels out of the stem; None: hidden_sizes[0]"),
        stem_stride=Field(4, "downsampling of the stem"),
        stage_strides=Field((1, 2, 2, 2), "downsampling of each stage"),
        global_pool=Field("avg", 'pooler_output: "avg", "max", "avgmax" or "" (none)', (*STAGE_POOLS, "")),
    )

    def check_fields(self) -> None:
        if not len(self.depths) == len(self.hidden_sizes) == len(self.stage_strides):
            raise ValueError(
                f"depths ({len(self.depths)}), hidden_sizes ({len(self.hidden_sizes)}) and stage_strides "
                f"({len(self.stage_strides)}) must list one value per stage."
            )
        super().check_fields()

    def backbone_stage_names(self) -> list[str]:
        return ["stem"] + [f"stage{i}" for i in range(1, len(self.depths) + 1)]

    @property
    def stem_width(self) -> int:
        return self.hidden_sizes[0] if self.stem_channels is None else self.stem_channels

    @property
    def strides(self) -> list[int]:
        """Total downsampling of the stem and of each stage's output, in ``stage_names`` order."""
        strides = [self.stem_stride]
        for step in self.stage_strides:
            strides.append(strides[-1] * step)
        return strides


__all__ = ["STAGE_POOLS", "StageConfig"]
