"""transformers' ModelTesterMixin, BackboneTesterMixin and ConfigTester run against the vit family."""

from __future__ import annotations

import unittest

import torch

from tests import transformers_suite
from vitzoo_hf import VitzooViTBackbone, VitzooViTConfig, VitzooViTForImageClassification, VitzooViTModel

transformers_suite.load()
transformers_suite.register_model_names(
    "vitzoo_vit", "VitzooViTModel", "VitzooViTForImageClassification", "VitzooViTBackbone"
)

from transformers_tests.test_backbone_common import BackboneTesterMixin  # noqa: E402
from transformers_tests.test_configuration_common import ConfigTester  # noqa: E402
from transformers_tests.test_modeling_common import ModelTesterMixin, floats_tensor  # noqa: E402


class VitzooViTModelTester:
    def __init__(self, parent, **overrides) -> None:
        self.parent = parent
        self.batch_size = 3
        self.is_training = True
        self.image_size = 32
        self.patch_size = 8
        self.num_channels = 3
        self.hidden_size = 32
        self.num_hidden_layers = 2
        self.num_attention_heads = 4
        self.num_labels = 5
        self.overrides = overrides
        self.num_register_tokens = overrides.get("num_register_tokens", 0)
        self.seq_length = (self.image_size // self.patch_size) ** 2 + 1 + self.num_register_tokens

    def get_config(self) -> VitzooViTConfig:
        return VitzooViTConfig(
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

    def prepare_config_and_inputs_for_common(self) -> tuple[VitzooViTConfig, dict[str, torch.Tensor]]:
        pixel_values = floats_tensor([self.batch_size, self.num_channels, self.image_size, self.image_size])
        return self.get_config(), {"pixel_values": pixel_values}

    def prepare_config_and_inputs(self):
        config, inputs = self.prepare_config_and_inputs_for_common()
        labels = torch.randint(0, self.num_labels, (self.batch_size,))
        return config, inputs["pixel_values"], labels


class VitzooViTModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (VitzooViTModel, VitzooViTForImageClassification, VitzooViTBackbone)
    test_resize_embeddings = False
    test_torch_exportable = True
    test_can_init_all_missing_weights_before_2023 = True  # the init-all-weights check, on
    has_attentions = True
    overrides: dict = {}

    def setUp(self) -> None:
        self.model_tester = VitzooViTModelTester(self, **self.overrides)
        self.config_tester = ConfigTester(self, config_class=VitzooViTConfig, has_text_modality=False, hidden_size=48)

    def test_config(self) -> None:
        self.config_tester.run_common_tests()

    def test_model_get_set_embeddings(self) -> None:
        """Vision models expose the patch embedding (a Conv2d), not an nn.Embedding, and no output embeddings."""
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config)
            self.assertIsInstance(model.get_input_embeddings().proj, torch.nn.Conv2d)
            self.assertIsNone(model.get_output_embeddings())

    def test_model_outputs_shapes(self) -> None:
        config, pixel_values, labels = self.model_tester.prepare_config_and_inputs()
        model = VitzooViTForImageClassification(config).eval()
        with torch.no_grad():
            out = model(pixel_values, labels=labels)
        self.assertEqual(out.logits.shape, (self.model_tester.batch_size, self.model_tester.num_labels))
        self.assertTrue(torch.isfinite(out.loss))


class VitzooViTRegistersSwiGLUTest(VitzooViTModelTest):
    """A second flag set through the whole suite: registers, LayerScale, packed SwiGLU, no pos for prefix."""

    overrides = dict(
        num_register_tokens=2,
        layer_scale_init_value=1e-5,
        mlp_type="glu_packed",
        hidden_act="silu",
        no_embed_class=True,
    )


class VitzooViTBackboneTest(BackboneTesterMixin, unittest.TestCase):
    all_model_classes = (VitzooViTBackbone,)
    config_class = VitzooViTConfig
    has_attentions = True

    def setUp(self) -> None:
        self.model_tester = VitzooViTModelTester(self)
