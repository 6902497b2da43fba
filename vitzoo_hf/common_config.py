"""The config base every vitzoo family inherits: input, classification head, backbone outputs, init.

Each field is written once, in the base that owns it (this file, ``token_config.py`` or ``stage_config.py``);
a family config adds only its own fields. ``from_dict`` upgrades ``config.json`` files written by earlier
releases, so published folders keep loading into the current classes. See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

from transformers import PretrainedConfig
from transformers.activations import ACT2FN

from .common_compat import BackboneConfigMixin, set_backbone_outputs
from .common_heads import HEAD_TYPES

AUTO_CLASS_NAMES = ("AutoConfig", "AutoModel", "AutoModelForImageClassification", "AutoBackbone")
# Names of release 0.1's head poolings, read from old config.json files.
RENAMED_POOLINGS = {"cls": "token", "mean": "avg", "cls_mean": "token_avg"}


def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"Unknown {name} {value!r}; expected one of {', '.join(repr(c) for c in choices)}.")


class VitzooConfig(BackboneConfigMixin, PretrainedConfig):
    r"""Options of every family (family configs document their architecture fields).

    Input: ``image_size`` (pretrained input size), ``num_channels``. Training: ``drop_path_rate``,
    ``initializer_range``. Head of ``ForImageClassification``: ``head_type`` ("linear", "mlp", "none"),
    ``head_pooling`` (None = the model's own pooler output; else one of the family's ``head_poolings``),
    ``head_hidden_sizes``, ``head_act``, ``head_dropout``, ``head_norm``, ``freeze_backbone``; the loss follows
    ``problem_type``. Backbone: ``out_features``/``out_indices`` over the family's ``stage_names``.
    """

    model_type = "vitzoo"
    # Pools a head may read besides the model's own pooler output; a family base sets them.
    head_poolings = ()

    def __init__(
        self,
        image_size: int | list[int] = 224,
        num_channels: int = 3,
        drop_path_rate: float = 0.0,
        initializer_range: float = 0.02,
        head_type: str = "linear",
        head_pooling: str | None = None,
        head_hidden_sizes: list[int] | None = None,
        head_act: str = "gelu",
        head_dropout: float = 0.0,
        head_norm: bool = False,
        freeze_backbone: bool = False,
        out_features: list[str] | None = None,
        out_indices: list[int] | None = None,
        **kwargs,
    ) -> None:
        check_choice("head_type", head_type, HEAD_TYPES)
        if head_pooling in RENAMED_POOLINGS:
            raise ValueError(
                f"head_pooling={head_pooling!r} is now called {RENAMED_POOLINGS[head_pooling]!r} (one vocabulary "
                "with global_pool); config.json files that use the old name are upgraded when loaded."
            )
        check_choice("head_pooling", head_pooling, (None, *self.head_poolings))
        check_choice("head_act", head_act, ACT2FN)
        self.image_size = image_size
        self.num_channels = num_channels
        self.drop_path_rate = drop_path_rate
        self.initializer_range = initializer_range
        self.head_type = head_type
        self.head_pooling = head_pooling
        self.head_hidden_sizes = list(head_hidden_sizes or [])
        self.head_act = head_act
        self.head_dropout = head_dropout
        self.head_norm = head_norm
        self.freeze_backbone = freeze_backbone
        self.stage_names = self.backbone_stage_names()
        set_backbone_outputs(self, out_features, out_indices)
        kwargs.setdefault("auto_map", self.auto_map_entries())
        super().__init__(**kwargs)

    def __init_subclass__(cls, **kwargs) -> None:
        """transformers 5 gives a config class without its own ``__init__`` a generated one that skips the
        inherited fields; a family config that only sets ``model_type`` must inherit ours instead."""
        inherits_init = "__init__" not in cls.__dict__
        super().__init_subclass__(**kwargs)
        if inherits_init and "__init__" in cls.__dict__:
            del cls.__init__

    def backbone_stage_names(self) -> list[str]:
        """``stem`` then one name per block or stage, in forward order; a family base defines them."""
        raise NotImplementedError

    @classmethod
    def auto_map_entries(cls) -> dict[str, str]:
        """All four Auto entries (``save_pretrained`` alone would record only the saving class), from the
        family's naming rule: ``vitzoo_<family>`` lives in ``configuration_<family>.py``/``modeling_<family>.py``
        and its classes are ``<Prefix>Config``, ``<Prefix>Model``..."""
        family = cls.model_type.removeprefix("vitzoo_")
        prefix = cls.__name__.removesuffix("Config")
        return {
            "AutoConfig": f"configuration_{family}.{cls.__name__}",
            "AutoModel": f"modeling_{family}.{prefix}Model",
            "AutoModelForImageClassification": f"modeling_{family}.{prefix}ForImageClassification",
            "AutoBackbone": f"modeling_{family}.{prefix}Backbone",
        }

    @classmethod
    def upgrade_saved_fields(cls, fields: dict) -> dict:
        """Fields of a ``config.json`` from an earlier release, in today's names; bases extend it."""
        pooling = fields.get("head_pooling")
        if pooling in RENAMED_POOLINGS:
            fields["head_pooling"] = RENAMED_POOLINGS[pooling]
        return fields

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        saved = config_dict.get("model_type")
        if saved is not None and saved != cls.model_type:  # transformers only warns, then builds a wrong model
            raise ValueError(
                f"This config is for model_type {saved!r}, not {cls.model_type!r} ({cls.__name__}): load it with the "
                "class its auto_map names, e.g. AutoConfig.from_pretrained(path, trust_remote_code=True)."
            )
        # Derived every time: a stale copy from an older release must not win over the current rule.
        fields = {k: v for k, v in config_dict.items() if k != "stage_names"}
        return super().from_dict(cls.upgrade_saved_fields(fields), **kwargs)


__all__ = ["AUTO_CLASS_NAMES", "VitzooConfig", "check_choice"]
