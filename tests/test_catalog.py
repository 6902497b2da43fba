"""conversion.catalog and conversion.profile: every timm pretrained tag with its status (from the sweeps' results),
size and cost; the counts against timm's own published model cards; the shipped profile cache against fresh
counts; the filters; the generated coverage docs against the results they come from."""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import timm

from conversion import catalog as catalog_module
from conversion.catalog import (
    SHIPPED_PROFILES,
    catalog,
    coverage_markdown,
    parse_count,
    sweep_results,
    timm_modules,
)
from conversion.profile import datasets_of, profile

ROOT = Path(__file__).resolve().parents[1]

# Figures printed on timm's own Hub model cards (Params (M), GMACs, Activations (M)), counted there with fvcore:
# an outside source for what conversion.profile counts on the meta device.
TIMM_CARDS = {
    "resnet50.a1_in1k": (25.6, 4.1, 11.1),
    "vit_base_patch16_224.augreg2_in21k_ft_in1k": (86.6, 17.6, 23.9),
    "convnext_tiny.fb_in1k": (28.6, 4.5, 13.4),
    "efficientnet_b0.ra_in1k": (5.3, 0.4, 6.7),
}


@pytest.mark.parametrize("tag", sorted(TIMM_CARDS))
def test_profiles_count_what_timm_cards_print(tag: str) -> None:
    counted = profile(tag)
    # the cards print one decimal; fvcore and torch's counter may part on the last one
    assert (counted.params / 1e6, counted.gmacs, counted.activations_m) == pytest.approx(TIMM_CARDS[tag], abs=0.1)


def test_the_shipped_profiles_cover_every_tag_and_match_fresh_counts() -> None:
    """Every pretrained tag of the pinned timm is in the shipped file (so the full catalog profiles nothing), and a
    sample of them, one per timm module, counts the same today."""
    shipped = json.loads(SHIPPED_PROFILES.read_text())
    assert shipped["timm"] == timm.__version__
    modules = timm_modules()
    assert set(shipped["profiles"]) == set(modules)
    by_module: dict[str, list[str]] = {}
    for tag, module in sorted(modules.items()):
        by_module.setdefault(module, []).append(tag)
    sample = [random.Random(0).choice(tags) for tags in by_module.values()]
    for tag in sample[::6]:
        fresh = profile(tag)
        assert shipped["profiles"][tag] == [fresh.params, fresh.gmacs, fresh.activations_m], tag


def test_the_full_catalog_profiles_nothing_and_filters_narrow_it(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VITZOO_HF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(catalog_module, "profile", lambda tag: pytest.fail(f"profiled {tag}"))
    everything = catalog()
    assert len(everything) == len(timm.list_models(pretrained=True))
    assert all(e.params is not None for e in everything) and not (tmp_path / "cache").exists()
    checks = {
        "vit_*": lambda e: e.tag.startswith("vit_"),
        "resnet50": lambda e: "resnet50" in e.tag,
    }
    for pattern, holds in checks.items():
        found = catalog(pattern)
        assert found and all(holds(e) for e in found)
        assert len(found) == sum(holds(e) for e in everything)
    assert {e.family for e in catalog(family="convnext")} == {"convnext"}
    in22k = catalog(pretrained_on="imagenet-22k")
    assert in22k and all("imagenet-22k" in e.datasets for e in in22k)
    small = catalog(max_params=parse_count("5M"))
    assert small and all(e.params <= 5_000_000 for e in small)
    assert len(small) == sum(e.params <= 5_000_000 for e in everything)
    headless, heads = catalog(with_head=False), catalog(with_head=True)
    assert all(e.num_classes == 0 for e in headless) and all(e.num_classes > 0 for e in heads)
    assert len(headless) + len(heads) == len(everything)
    refused = catalog(family="efficientnet", status="refused")
    assert refused and all(e.status == "refused" and e.detail for e in refused)
    with pytest.raises(ValueError, match="Unknown family 'swin'; registered: vit, eva"):
        catalog(family="swin")
    with pytest.raises(ValueError, match="Unknown status 'ok'; one of: verified, not swept, refused"):
        catalog(status="ok")


def test_status_comes_from_the_sweep_results(tmp_path: Path) -> None:
    (tmp_path / "sweep_x.json").write_text(
        json.dumps([
            {"tag": "resnet18.a1_in1k", "ok": True, "detail": "max abs diff 0.0e+00", "seconds": 1},
            {"tag": "resnet18.a2_in1k", "ok": False, "detail": "UnsupportedArchitecture: made up", "seconds": 1},
        ])
    )  # fmt: skip
    entries = {e.tag: e for e in catalog("resnet18.", results_dir=tmp_path, measured=False)}
    assert (entries["resnet18.a1_in1k"].status, entries["resnet18.a1_in1k"].detail) == (
        "verified", "max abs diff 0.0e+00"
    )  # fmt: skip
    assert (entries["resnet18.a2_in1k"].status, entries["resnet18.a2_in1k"].detail) == (
        "refused", "UnsupportedArchitecture: made up"
    )  # fmt: skip
    assert entries["resnet18.a3_in1k"].status == "not swept" and entries["resnet18.a3_in1k"].detail is None
    swin = catalog("swin_tiny_patch4_window7_224.ms_in1k", results_dir=tmp_path, measured=False)[0]
    assert swin.family is None and swin.status == "refused"
    assert swin.detail == "no vitzoo_hf family for timm.models.swin_transformer yet"
    (tmp_path / "sweep_bad.json").write_text("{not json")
    with pytest.raises(SystemExit, match=r"sweep_bad\.json is not a sweep results file"):
        sweep_results(tmp_path)


def test_the_coverage_docs_are_generated_from_the_results() -> None:
    """docs/COVERAGE.md's summary is what --write-coverage makes of bench/results today (regenerate it with
    ``python -m conversion.catalog --write-coverage docs/COVERAGE.md``)."""
    doc = (ROOT / "docs" / "COVERAGE.md").read_text()
    block = doc.split(catalog_module.COVERAGE_BEGIN, 1)[1].split(catalog_module.COVERAGE_END, 1)[0]
    entries = catalog(measured=False)
    assert block.strip() == coverage_markdown(entries).strip()
    results = sweep_results()
    verified = sum(r["ok"] for r in results.values())
    assert f"**{verified} of timm {timm.__version__}'s {len(entries)} pretrained tags" in block


def test_datasets_are_read_from_the_tag() -> None:
    assert datasets_of("augreg2_in21k_ft_in1k") == ["imagenet-21k", "imagenet-1k"]
    assert datasets_of("laion2b_s34b_b88k") == ["laion-2b"] and datasets_of("a1_in1k") == ["imagenet-1k"]
    assert datasets_of("sam_in1k") == ["imagenet-1k"]  # SAM is an optimizer there, not the SA-1B data
    assert datasets_of(None) == [] and datasets_of("fb") == []


def test_parse_count_takes_suffixes_and_refuses_words() -> None:
    assert [parse_count(t) for t in ("25M", "1.5B", "500k", "1000")] == [25_000_000, 1_500_000_000, 500_000, 1000]
    with pytest.raises(argparse.ArgumentTypeError, match=r"'lots' is not a parameter count; write e\.g\. 25M"):
        parse_count("lots")


def test_the_command_prints_a_table_that_fits_and_json(tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "90", "VITZOO_HF_CACHE": str(tmp_path)}
    command = [sys.executable, "-m", "conversion.catalog"]
    shown = subprocess.run([*command, "convnext_tiny*"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split()[:4] == ["tag", "family", "params", "M"] and all(len(line) <= 90 for line in lines)
    assert any(line.startswith("convnext_tiny.fb_in1k ") and "verified" in line for line in lines)
    listed = subprocess.run([*command, "convnext_tiny.fb_in1k", "--json"], cwd=ROOT, env=env, capture_output=True)
    assert listed.returncode == 0
    (entry,) = json.loads(listed.stdout)
    assert entry["tag"] == "convnext_tiny.fb_in1k" and entry["family"] == "convnext" and entry["params"] > 28e6
    assert entry["input_size"] == [224, 224] and entry["source"] == "timm/convnext_tiny.fb_in1k"
    nothing = subprocess.run([*command, "no_such_model*"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert nothing.returncode == 1 and "no pretrained timm tag matches" in nothing.stderr


def test_the_pick_page_is_generated_from_the_catalog_and_bench() -> None:
    """docs/PICK.md is what ``python -m conversion.pick --write docs/PICK.md`` makes today; every tag it names is
    verified, and every small-and-fast row is under 1 GMAC."""
    from conversion.pick import pick_markdown

    entries = catalog()
    page = (ROOT / "docs" / "PICK.md").read_text()
    assert page == pick_markdown(entries)
    by_tag = {e.tag: e for e in entries}
    named = [line.split("`")[1] for line in page.splitlines() if line.startswith("| `")]
    assert named and all(by_tag[tag].status == "verified" for tag in named)
    fast = page.split("## Small and fast", 1)[1]
    assert all(by_tag[line.split("`")[1]].gmacs < 1 for line in fast.splitlines() if line.startswith("| `"))
