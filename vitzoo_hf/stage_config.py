"""The config base of the stage families (convnext, resnet, ...): a stem, then stages of NCHW feature maps.

Fields every stage family has, each written once; a family config adds its block's own options.
"""

from __future__ import annotations

from .common_config import VitzooConfig, check_choice

# Pools over a feature map, timm's names (``global_pool`` and ``head_pooling`` alike).
STAGE_POOLS = ("avg", "max", "avgmax")


class StageConfig(VitzooConfig):
    r"""Stage-family architecture: ``depths`` (blocks per stage), ``hidden_sizes`` (channels out of each stage),
    ``stem_channels`` (channels out of the stem; None: ``hidden_sizes[0]``), ``stem_stride`` and ``stage_strides``
    (the downsampling of the stem and of each stage), ``global_pool`` ("avg", "max", "avgmax", "": none).

    ``head_pooling``: None (the model's own pooler output) or a pool of the final map. Backbone: ``stage_names``
    are "stem" and "stage1".."stageN"; each map keeps its own channels (``num_features``) and stride.
    """

    head_poolings = STAGE_POOLS
    # Where the stem's map is taken in a family whose stem ends in a pool: "conv" (before it) or "pool" (after).
    stem_output = "conv"

    def __init__(
        self,
        depths: list[int] = (3, 3, 9, 3),
        hidden_sizes: list[int] = (96, 192, 384, 768),
        stem_channels: int | None = None,
        stem_stride: int = 4,
        stage_strides: list[int] = (1, 2, 2, 2),
        global_pool: str = "avg",
        **kwargs,
    ) -> None:
        check_choice("global_pool", global_pool, (*STAGE_POOLS, ""))
        if not len(depths) == len(hidden_sizes) == len(stage_strides):
            raise ValueError(
                f"depths ({len(depths)}), hidden_sizes ({len(hidden_sizes)}) and stage_strides ({len(stage_strides)}) "
                "must list one value per stage."
            )
        self.depths = list(depths)
        self.hidden_sizes = list(hidden_sizes)
        self.stem_channels = stem_channels
        self.stem_stride = stem_stride
        self.stage_strides = list(stage_strides)
        self.global_pool = global_pool
        super().__init__(**kwargs)

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
