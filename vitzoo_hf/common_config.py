"""The config base every vitzoo family inherits: declared fields, input, classification head, backbone outputs.

A config's fields are declared once each, in the class that owns them (this file, ``token_config.py``,
``stage_config.py`` or the family's): a :class:`Field` with its default, one line of doc and the values it takes.
``VitzooConfig.__init__`` assigns and checks every declared field of the class and its bases, then runs
``check_fields`` (the checks across fields, each class adding its own); the class docstring and signature are
generated from the declarations. This runs the same under transformers 4.57 and 5.x (5.x's dataclass configs are
not used: a family config never annotates a field). ``from_dict`` upgrades ``config.json`` files written by
earlier releases, so published folders keep loading into the current classes. See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

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


@dataclass(frozen=True)
class Field:
    """One config field: its ``default`` (a function of the config for a default that follows other fields, such
    as a stem width from the stem type), one line of ``doc`` (timm's argument in brackets where the name differs)
    and, for a field with a fixed vocabulary, its ``choices``. Tuples and lists are stored as lists (JSON)."""

    default: Any
    doc: str
    choices: tuple | Mapping | None = None

    def value(self, name: str, given: Any, config: VitzooConfig) -> Any:
        """The value to store: ``given``, or the default (computed from ``config`` where it is derived); checked."""
        value = given
        if given is DEFAULT:
            value = self.default(config) if callable(self.default) else self.default
        if self.choices is not None:
            check_choice(name, value, self.choices)
        return list(value) if isinstance(value, tuple) else value


class _Default:
    def __repr__(self) -> str:
        return "<default>"


DEFAULT = _Default()  # a field not given: its declared default applies


class VitzooConfig(BackboneConfigMixin, PretrainedConfig):
    r"""Options of every family (family configs add their architecture fields). The loss of
    ``ForImageClassification`` follows ``problem_type``; the backbone's ``out_features``/``out_indices`` choose
    among the family's ``stage_names``."""

    model_type = "vitzoo"
    # Pools a head may read besides the model's own pooler output; a family base sets them.
    head_poolings = ()
    config_fields: ClassVar[dict[str, Field]] = dict(
        image_size=Field(224, "pretrained input size, or [height, width]"),
        num_channels=Field(3, "input channels [in_chans]"),
        drop_path_rate=Field(0.0, "stochastic depth, rising linearly to this over the blocks"),
        initializer_range=Field(0.02, "std of the truncated-normal init of new weights"),
        head_type=Field(
            "linear", "ForImageClassification's head: linear, MLP, or none (the pooled features)", HEAD_TYPES
        ),
        head_pooling=Field(None, "what the head reads: None, the model's pooler output; else one of head_poolings"),
        head_hidden_sizes=Field((), "widths of an MLP head's hidden layers"),
        head_act=Field("gelu", "activation of an MLP head", ACT2FN),
        head_dropout=Field(0.0, "dropout before the classifier"),
        head_norm=Field(False, "a norm on the pooled features before the head"),
        freeze_backbone=Field(False, "train the head only (every backbone parameter frozen, also after loading)"),
    )

    def __init__(self, out_features: list[str] | None = None, out_indices: list[int] | None = None, **kwargs) -> None:
        fields = type(self).declared_fields()
        given = {name: kwargs.pop(name) for name in fields if name in kwargs}
        derived = [name for name, field in fields.items() if callable(field.default) and name not in given]
        for name, field in fields.items():  # given and plain defaults first: a derived default may read any of them
            if name not in derived:
                setattr(self, name, field.value(name, given.get(name, DEFAULT), self))
        for name in derived:
            setattr(self, name, fields[name].value(name, DEFAULT, self))
        self.check_fields()
        self.stage_names = self.backbone_stage_names()
        set_backbone_outputs(self, out_features, out_indices)
        kwargs.setdefault("auto_map", self.auto_map_entries())
        super().__init__(**kwargs)

    def check_fields(self) -> None:
        """Checks across fields (one field's choices are checked when it is set); a class extends it."""
        if self.head_pooling in RENAMED_POOLINGS:
            raise ValueError(
                f"head_pooling={self.head_pooling!r} is now called {RENAMED_POOLINGS[self.head_pooling]!r} (one "
                "vocabulary with global_pool); config.json files that use the old name are upgraded when loaded."
            )
        check_choice("head_pooling", self.head_pooling, (None, *self.head_poolings))

    def __init_subclass__(cls, **kwargs) -> None:
        """transformers 5 gives a config class without its own ``__init__`` a generated one that skips the
        inherited fields; a family config inherits ours instead. Its docstring and signature list its fields."""
        inherits_init = "__init__" not in cls.__dict__
        super().__init_subclass__(**kwargs)
        if inherits_init and "__init__" in cls.__dict__:
            del cls.__init__
        document_fields(cls)

    @classmethod
    def declared_fields(cls) -> dict[str, Field]:
        """Every field of the class and its bases, bases first; a class may declare a base's field again to give
        it another default."""
        fields: dict[str, Field] = {}
        for klass in reversed(cls.__mro__):
            fields.update(vars(klass).get("config_fields", {}))
        return fields

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


def document_fields(cls: type[VitzooConfig]) -> None:
    """The class docstring's field list and the class signature, from the declarations (its own fields first)."""
    fields = cls.declared_fields()
    own = list(vars(cls).get("config_fields", {}))
    order = own + [name for name in fields if name not in own]
    lines = []
    for name in order:
        field = fields[name]
        default = "derived" if callable(field.default) else repr(field.default)
        lines.append(f"    ``{name}`` ({default}): {field.doc}.")
    summary = inspect.cleandoc(vars(cls).get("__doc__") or "").split("\nFields:")[0]
    cls.__doc__ = f"{summary}\n\nFields:\n" + "\n".join(lines)
    parameters = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=DEFAULT if callable(fields[name].default) else fields[name].default,
        )
        for name in order
    ]
    extra = [
        inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None) for n in ("out_features", "out_indices")
    ]
    cls.__signature__ = inspect.Signature(
        [*parameters, *extra, inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)]
    )


document_fields(VitzooConfig)

__all__ = ["AUTO_CLASS_NAMES", "DEFAULT", "Field", "VitzooConfig", "check_choice"]
