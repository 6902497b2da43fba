"""Folders written by release 0.1 (before the shared layer was split and fields renamed) still load in-library
into today's classes and give the same outputs: the outputs that release gave, and timm's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

import vitzoo_hf
from conversion.families import family_for
from tests.helpers import make_timm

FIXTURES = Path(__file__).parent / "fixtures" / "configs_0_1"
FOLDERS = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())
# Release 0.1 names that today's configs spell another way.
OLD_FIELDS = {"scale_attn_inner", "block_type"}


def inputs() -> dict[str, torch.Tensor]:
    """The inputs the fixtures' expected outputs were computed on."""
    return {
        "native": torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)),
        "other": torch.randn(2, 3, 48, 40, generator=torch.Generator().manual_seed(2)),
    }


def outputs(folder: Path) -> dict[str, torch.Tensor]:
    model, info = AutoModel.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"], info
    model.eval()
    with_head = "native.logits" in load_file(str(folder / "expected_outputs.safetensors"))
    classifier = AutoModelForImageClassification.from_pretrained(folder).eval() if with_head else None
    result = {}
    with torch.no_grad():
        for name, x in inputs().items():
            out = model(x, interpolate_pos_encoding=True)
            result[f"{name}.last_hidden_state"] = out.last_hidden_state
            if out.pooler_output is not None:
                result[f"{name}.pooler_output"] = out.pooler_output
            if classifier is not None:
                result[f"{name}.logits"] = classifier(x, interpolate_pos_encoding=True).logits
    return result


def test_every_family_of_release_0_1_has_a_fixture() -> None:
    saved = {json.loads((FIXTURES / name / "config.json").read_text())["model_type"] for name in FOLDERS}
    assert saved == {"vitzoo_vit", "vitzoo_eva"} and saved <= {f"vitzoo_{name}" for name in vitzoo_hf.FAMILIES}


@pytest.mark.parametrize("name", FOLDERS)
def test_release_0_1_folder_gives_its_outputs_today(name: str, tmp_path: Path) -> None:
    folder = FIXTURES / name
    expected = load_file(str(folder / "expected_outputs.safetensors"))
    ours = outputs(folder)
    assert set(ours) == set(expected)
    for key, value in expected.items():
        # The recorded outputs came from another CPU: float32 matmul kernels differ by machine (the same code gives
        # 1.4e-6 here on an AVX-512 EPYC), so the bound is the tiny-model parity bound, not bit equality.
        torch.testing.assert_close(ours[key], value, atol=1e-5, rtol=1e-5, msg=key)

    # Saved again, the folder speaks today's names and still gives the same outputs.
    auto_class = AutoModelForImageClassification if "native.logits" in expected else AutoModel
    auto_class.from_pretrained(folder).save_pretrained(tmp_path / "resaved")
    resaved = json.loads((tmp_path / "resaved" / "config.json").read_text())
    assert not OLD_FIELDS & set(resaved)
    assert resaved["head_pooling"] in (None, *AutoConfig.from_pretrained(folder).head_poolings)
    (tmp_path / "resaved" / "expected_outputs.safetensors").write_bytes(
        (folder / "expected_outputs.safetensors").read_bytes()
    )
    again = outputs(tmp_path / "resaved")
    for key in again:
        torch.testing.assert_close(again[key], ours[key], atol=0, rtol=0, msg=key)


@pytest.mark.parametrize("name", [n for n in FOLDERS if n != "dinov2_reg_mlp_cls_mean"])
def test_release_0_1_folder_matches_timm_today(name: str) -> None:
    """The fixtures hold tiny timm variants (tests/helpers.py): timm given their weights back equals today's classes."""
    folder = FIXTURES / name
    headless = "native.logits" not in load_file(str(folder / "expected_outputs.safetensors"))
    timm_model = make_timm(name, dynamic=True, **({"num_classes": 0} if headless else {}))
    weights = load_file(str(folder / "model.safetensors"))
    family = family_for(timm_model)
    timm_model.load_state_dict({k: weights[family.convert_key(k, not headless)] for k in timm_model.state_dict()})
    ours = outputs(folder)
    with torch.no_grad():
        for input_name, x in inputs().items():
            features = timm_model.forward_features(x)
            torch.testing.assert_close(ours[f"{input_name}.last_hidden_state"], features, atol=1e-5, rtol=1e-5)
            pooled = timm_model.forward_head(features, pre_logits=True)
            torch.testing.assert_close(ours[f"{input_name}.pooler_output"], pooled, atol=1e-5, rtol=1e-5)
            if not headless:
                logits = timm_model.forward_head(features)
                torch.testing.assert_close(ours[f"{input_name}.logits"], logits, atol=1e-5, rtol=1e-5)


def test_old_head_pooling_names_are_upgraded_on_load() -> None:
    config = AutoConfig.from_pretrained(FIXTURES / "dinov2_reg_mlp_cls_mean")
    assert config.head_pooling == "token_avg" and config.post_norm is False
    eva = AutoConfig.from_pretrained(FIXTURES / "eva02_clip_scale_attn")
    assert eva.scale_attn_norm is True and not hasattr(eva, "scale_attn_inner")
