"""transformers' ModelTesterMixin, BackboneTesterMixin and ConfigTester run against every family."""

from __future__ import annotations

import unittest

import torch

from tests import transformers_suite
from vitzoo_hf import (
    VitzooConvNextBackbone,
    VitzooConvNextConfig,
    VitzooConvNextForImageClassification,
    VitzooConvNextModel,
    VitzooEvaBackbone,
    VitzooEvaConfig,
    VitzooEvaForImageClassification,
    VitzooEvaModel,
    VitzooResNetBackbone,
    VitzooResNetConfig,
    VitzooResNetForImageClassification,
    VitzooResNetModel,
    VitzooViTBackbone,
    VitzooViTConfig,
    VitzooViTForImageClassification,
    VitzooViTModel,
)

transformers_suite.load()
for prefix, model_type in (
    ("VitzooViT", "vitzoo_vit"),
    ("VitzooEva", "vitzoo_eva"),
    ("VitzooConvNext", "vitzoo_convnext"),
    ("VitzooResNet", "vitzoo_resnet"),
):
    transformers_suite.register_model_names(
        model_type, f"{prefix}Model", f"{prefix}ForImageClassification", f"{prefix}Backbone"
    )

from transformers_tests.test_backbone_common import BackboneTesterMixin  # noqa: E402
from transformers_tests.test_configuration_common import ConfigTester  # noqa: E402
from transformers_tests.test_modeling_common import ModelTesterMixin, floats_tensor  # noqa: E402


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


class VitzooModelTester(TesterInputs):
    def __init__(self, parent, config_class=VitzooViTConfig, **overrides) -> None:
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


class VitzooViTModelTest(ClassifierShapes, ModelTesterMixin, unittest.TestCase):
    all_model_classes = (VitzooViTModel, VitzooViTForImageClassification, VitzooViTBackbone)
    config_class = VitzooViTConfig
    test_resize_embeddings = False
    test_torch_exportable = True
    test_can_init_all_missing_weights_before_2023 = True  # the init-all-weights check, on
    has_attentions = True
    overrides: dict = {}

    def setUp(self) -> None:
        self.model_tester = VitzooModelTester(self, self.config_class, **self.overrides)
        self.config_tester = ConfigTester(self, config_class=self.config_class, has_text_modality=False, hidden_size=48)

    def test_config(self) -> None:
        self.config_tester.run_common_tests()

    def test_model_get_set_embeddings(self) -> None:
        """Vision models expose the patch embedding (a Conv2d), not an nn.Embedding, and no output embeddings."""
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config)
            self.assertIsInstance(model.get_input_embeddings().proj, torch.nn.Conv2d)
            self.assertIsNone(model.get_output_embeddings())


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
        self.model_tester = VitzooModelTester(self, self.config_class)


class VitzooEvaDinoV3Test(VitzooViTModelTest):
    """DINOv3-style: RoPE over centered coordinates, registers, LayerScale, bias-free fused qkv."""

    all_model_classes = (VitzooEvaModel, VitzooEvaForImageClassification, VitzooEvaBackbone)
    config_class = VitzooEvaConfig
    overrides = dict(
        num_register_tokens=4,
        layer_scale_init_value=1e-5,
        qkv_bias=False,
        rope_type="dinov3",
        rope_temperature=100.0,
        rope_rotate_half=True,
        use_pos_embed=False,
    )


class VitzooEvaEva02Test(VitzooEvaDinoV3Test):
    """EVA02-style: separate q/k/v (no key bias), SwiGLU with MLP norm, attention-out norm, EVA RoPE."""

    overrides = dict(
        qkv_fused=False,
        mlp_type="swiglu",
        hidden_act="silu",
        scale_mlp_norm=True,
        scale_attn_norm=True,
        rope_type="cat",
        rope_ref_grid=[2, 2],
        global_pool="avg",
        final_norm=False,
        fc_norm=True,
    )


class VitzooEvaGroupedQueryTest(VitzooEvaDinoV3Test):
    """Sapiens2-style: grouped-query attention per block, QK norm, RMSNorm, attention-only LayerScale."""

    overrides = dict(
        attention_type="rope",
        qkv_fused=False,
        num_key_value_heads=[4, 2],
        qk_norm=True,
        norm_type="rmsnorm",
        layer_scale_init_value=1.0,
        attn_only_layer_scale=True,
        rope_type="dinov3",
        rope_rotate_half=True,
        num_register_tokens=2,
    )


class VitzooEvaRopeMixedMapTest(VitzooEvaDinoV3Test):
    """RoPE-Mixed (learned frequencies per block and head) with a MAP attention-pool head and post-norm blocks."""

    overrides = dict(attention_type="rope", rope_type="mixed", rope_temperature=10.0, global_pool="map", post_norm=True)


class VitzooEvaBackboneTest(VitzooViTBackboneTest):
    all_model_classes = (VitzooEvaBackbone,)
    config_class = VitzooEvaConfig


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
            first = next(m for m in model.get_input_embeddings().modules() if not list(m.children()))
            self.assertIsInstance(first, torch.nn.Conv2d)
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


CONVNEXT_FIELDS = dict(depths=[1, 1, 2, 1], hidden_sizes=[8, 16, 24, 32])


class VitzooConvNextModelTest(StageModelTest, unittest.TestCase):
    all_model_classes = (VitzooConvNextModel, VitzooConvNextForImageClassification, VitzooConvNextBackbone)
    config_class = VitzooConvNextConfig
    fields = CONVNEXT_FIELDS


class VitzooConvNextV2OverlapTest(VitzooConvNextModelTest):
    """A second flag set: ConvNeXt-V2 (GRN, no LayerScale), conv MLP, overlapping stem, RMSNorm, MLP head."""

    overrides = dict(
        use_grn=True,
        layer_scale_init_value=None,
        conv_mlp=True,
        stem_type="overlap_act",
        stem_mid_channels=4,
        norm_type="rmsnorm",
        head_hidden_size=12,
    )


class VitzooConvNextBackboneTest(StageBackboneTest, unittest.TestCase):
    all_model_classes = (VitzooConvNextBackbone,)
    config_class = VitzooConvNextConfig
    fields = CONVNEXT_FIELDS


RESNET_FIELDS = dict(depths=[1, 1, 2, 1], hidden_sizes=[16, 32, 48, 64], stem_channels=8)


class VitzooResNetModelTest(StageModelTest, unittest.TestCase):
    """Bottleneck blocks, BatchNorm, the 7x7 stem and its max pool, strided-conv shortcuts."""

    all_model_classes = (VitzooResNetModel, VitzooResNetForImageClassification, VitzooResNetBackbone)
    config_class = VitzooResNetConfig
    fields = RESNET_FIELDS


class VitzooResNetBasicDeepTest(VitzooResNetModelTest):
    """A second flag set: basic blocks, tiered deep stem with a conv instead of the pool, ResNet-D shortcuts, SE,
    blur-pool anti-aliasing, GroupNorm, the stem's map taken after its pool (stride 4)."""

    overrides = dict(
        block_types=["basic"] * 4,
        stem_type="deep_tiered",
        deep_stem_width=8,
        stem_channels=16,
        replace_stem_pool=True,
        avg_down=True,
        attn_type="se",
        se_ratio=0.25,
        aa_type="blurpool",
        norm_type="groupnorm",
        norm_groups=2,
        stem_output="pool",
    )


class VitzooResNetBackboneTest(StageBackboneTest, unittest.TestCase):
    all_model_classes = (VitzooResNetBackbone,)
    config_class = VitzooResNetConfig
    fields = RESNET_FIELDS
