"""transformers' ModelTesterMixin, BackboneTesterMixin and ConfigTester run against every family."""

from __future__ import annotations

import unittest

import torch

import vitzoo_hf
from conversion.families import conversions
from conversion.token_families import TokenHooks
from tests import transformers_suite

transformers_suite.load()
for family in vitzoo_hf.FAMILIES.values():
    transformers_suite.register_model_names(
        family.config.model_type, family.model.__name__, family.classifier.__name__, family.backbone.__name__
    )

from transformers_tests.test_backbone_common import BackboneTesterMixin  # noqa: E402
from transformers_tests.test_configuration_common import ConfigTester  # noqa: E402
from transformers_tests.test_modeling_common import ModelTesterMixin, floats_tensor  # noqa: E402


def first_leaf(module: torch.nn.Module) -> torch.nn.Module:
    """The first module without children: what an input embedding applies first (a patch conv, a stem conv)."""
    return next(m for m in module.modules() if not list(m.children()))


class TesterInputs:
    """Inputs the suite asks a tester for; a family's tester adds ``get_config``."""

    def prepare_config_and_inputs_for_common(self):
        pixel_values = floats_tensor([self.batch_size, self.num_channels, self.image_size, self.image_size])
        return self.get_config(), {"pixel_values": pixel_values}

    def prepare_config_and_inputs(self):
        config, inputs = self.prepare_config_and_inputs_for_common()
        labels = torch.randint(0, self.num_labels, (self.batch_size,))
        return config, inputs["pixel_values"], labels


class ClassifierShapes:
    """The classifier's logits and loss on the tester's inputs (``all_model_classes[1]`` is the classifier)."""

    def test_model_outputs_shapes(self) -> None:
        config, pixel_values, labels = self.model_tester.prepare_config_and_inputs()
        model = self.all_model_classes[1](config).eval()
        with torch.no_grad():
            out = model(pixel_values, labels=labels)
        self.assertEqual(out.logits.shape, (self.model_tester.batch_size, self.model_tester.num_labels))
        self.assertTrue(torch.isfinite(out.loss))


class TokenModelTester(TesterInputs):
    """A tiny token-family model for the suite: 2 blocks of width 64 on 32-pixel inputs, patch 8."""

    def __init__(self, parent, config_class, **overrides) -> None:
        self.parent = parent
        self.config_class = config_class
        self.batch_size = 3
        self.is_training = True
        self.image_size = 32
        self.patch_size = 8
        self.num_channels = 3
        self.hidden_size = 64
        self.num_hidden_layers = 2
        self.num_attention_heads = 4
        self.num_labels = 5
        self.overrides = overrides
        self.num_register_tokens = overrides.get("num_register_tokens", 0)
        self.seq_length = (self.image_size // self.patch_size) ** 2 + 1 + self.num_register_tokens

    def get_config(self):
        return self.config_class(
            image_size=self.image_size,
            patch_size=self.patch_size,
            num_channels=self.num_channels,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=37 * 2,
            num_labels=self.num_labels,
            out_features=["stage1", "stage2"],
            **self.overrides,
        )


class TokenModelTest(ClassifierShapes, ModelTesterMixin):
    """The suite over a token family's three classes with one flag set (``overrides``)."""

    test_resize_embeddings = False
    test_torch_exportable = True
    test_can_init_all_missing_weights_before_2023 = True  # the init-all-weights check, on
    has_attentions = True
    overrides: dict = {}

    def setUp(self) -> None:
        self.model_tester = TokenModelTester(self, self.config_class, **self.overrides)
        self.config_tester = ConfigTester(self, config_class=self.config_class, has_text_modality=False, hidden_size=48)

    def test_config(self) -> None:
        self.config_tester.run_common_tests()

    def test_model_get_set_embeddings(self) -> None:
        """The input embedding is the token embedding (a ``_no_split_modules`` unit, the patch conv first), not an
        nn.Embedding, and there are no output embeddings."""
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config)
            embeddings = model.get_input_embeddings()
            self.assertIn(type(embeddings).__name__, model._no_split_modules)
            self.assertIsInstance(first_leaf(embeddings), torch.nn.Conv2d)
            self.assertIsNone(model.get_output_embeddings())


class TokenBackboneTest(BackboneTesterMixin):
    has_attentions = True

    def setUp(self) -> None:
        self.model_tester = TokenModelTester(self, self.config_class)


class StageModelTester(TesterInputs):
    """A tiny stage-family model for the suite: 4 stages on 32-pixel inputs (hidden states are NCHW maps, checked
    by the test class itself)."""

    def __init__(self, parent, config_class, fields: dict, **overrides) -> None:
        self.parent = parent
        self.config_class = config_class
        self.batch_size = 3
        self.is_training = True
        self.image_size = 32
        self.num_channels = 3
        self.num_labels = 5
        self.fields = {**fields, **overrides}

    def get_config(self):
        return self.config_class(
            image_size=self.image_size,
            num_channels=self.num_channels,
            num_labels=self.num_labels,
            out_features=["stage2", "stage3"],
            **self.fields,
        )


class StageModelTest(ClassifierShapes, ModelTesterMixin):
    """The suite over a stage family's three classes; a family sets its classes and tiny ``fields``."""

    test_resize_embeddings = False
    test_torch_exportable = True
    test_can_init_all_missing_weights_before_2023 = True
    has_attentions = False
    fields: dict = {}
    overrides: dict = {}

    def setUp(self) -> None:
        self.model_tester = StageModelTester(self, self.config_class, self.fields, **self.overrides)
        self.config_tester = ConfigTester(
            self,
            config_class=self.config_class,
            has_text_modality=False,
            common_properties=["num_channels", "hidden_sizes", "depths"],
        )

    def test_config(self) -> None:
        self.config_tester.run_common_tests()

    def test_model_get_set_embeddings(self) -> None:
        """The input embedding of a CNN is its stem (a conv first), and there are no output embeddings."""
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config)
            self.assertIsInstance(first_leaf(model.get_input_embeddings()), torch.nn.Conv2d)
            self.assertIsNone(model.get_output_embeddings())

    def test_hidden_states_output(self) -> None:
        """As transformers' own CNN tests: hidden states are the stem's map then each stage's, NCHW, with each
        stage's channels and stride; asked per call or through the config."""
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        size = self.model_tester.image_size
        channels = [config.stem_width, *config.hidden_sizes]
        expected = [(c, size // stride, size // stride) for c, stride in zip(channels, config.strides, strict=True)]
        for model_class in self.all_model_classes:
            for through_config in (False, True):
                config.output_hidden_states = through_config
                model = model_class(config).eval()
                with torch.no_grad():
                    out = model(**inputs, output_hidden_states=None if through_config else True)
                self.assertEqual([tuple(h.shape[1:]) for h in out.hidden_states], expected)
            config.output_hidden_states = False


class StageBackboneTest(BackboneTesterMixin):
    has_attentions = False

    def setUp(self) -> None:
        self.model_tester = StageModelTester(self, self.config_class, self.fields)


def suite_classes() -> dict[str, type]:
    """One test class per family and flag set (``FamilyHooks.suite_configs``) and one backbone test per family, made
    from the registry: a new family is covered by declaring its flag sets beside its hooks."""
    made = {}
    for hooks in conversions():
        family, token = hooks.family, isinstance(hooks, TokenHooks)
        model_base, backbone_base = (
            (TokenModelTest, TokenBackboneTest) if token else (StageModelTest, StageBackboneTest)
        )
        prefix = f"Test{family.config.__name__.removesuffix('Config')}"
        for index, fields in enumerate(hooks.suite_configs):
            flags = dict(overrides=fields) if token else dict(fields=fields)
            attends = hooks.attention if token else hooks.attends(family.config(**fields))  # token: overrides
            common = dict(config_class=family.config, has_attentions=attends)
            made[f"{prefix}Suite{index}"] = type(
                f"{prefix}Suite{index}",
                (model_base, unittest.TestCase),
                dict(all_model_classes=(family.model, family.classifier, family.backbone), **common, **flags),
            )
        fields = {} if token else hooks.suite_configs[0]
        attends = hooks.attention if token else hooks.attends(family.config(**fields))
        common = dict(config_class=family.config, has_attentions=attends)
        made[f"{prefix}BackboneSuite"] = type(
            f"{prefix}BackboneSuite",
            (backbone_base, unittest.TestCase),
            dict(all_model_classes=(family.backbone,), fields=fields, **common),
        )
    return made


globals().update(suite_classes())
