"""The docs' Python snippets run as pasted, on a tiny folder of every family each one claims to cover.

Each ```python block in README.md and docs/*.md is preceded by ``<!-- test: FAMILY ... -->``; a block without one
fails here, so a snippet cannot be added untested. A page's snippets run in order, per family, in one namespace
(as a reader pastes them one after another), given ``folder`` (a saved tiny folder with its code files),
``images`` (two PIL images of odd sizes) and ``labels`` (their class ids).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vitzoo_hf
from conversion.families import conversions
from conversion.token_families import TokenHooks
from tests.helpers import save_tiny_folder

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SNIPPET = re.compile(r"(?:<!-- test: (?P<families>[a-z_ ]+) -->\n)?```python\n(?P<code>.*?)```", re.DOTALL)
# One tiny variant per family (its first showcase variant); token families at depth 12, as the block indices in the
# snippets name.
TINY_FOLDERS = {
    hooks.name: (hooks.showcase_variants[0], {"depth": 12} if isinstance(hooks, TokenHooks) else {})
    for hooks in conversions()
}


def snippets(page: Path) -> list[tuple[set[str] | None, str]]:
    return [
        (set(m["families"].split()) if m["families"] else None, m["code"]) for m in SNIPPET.finditer(page.read_text())
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_python_snippet_names_the_families_it_is_tested_on(page: Path) -> None:
    for families, code in snippets(page):
        assert families is not None, f"{page.name}: a python snippet without <!-- test: ... -->:\n{code[:300]}"
        assert families <= set(vitzoo_hf.FAMILIES), families


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    made = {}
    for family, (variant, extra) in TINY_FOLDERS.items():
        made[family] = tmp_path_factory.mktemp(family) / variant
        save_tiny_folder(variant, made[family], **extra)
    return made


def runs() -> list[tuple[Path, str]]:
    """(page, family) for every family some snippet of the page names."""
    return [
        (page, family) for page in PAGES for family in sorted(set().union(*(f or set() for f, _ in snippets(page))))
    ]


@pytest.mark.parametrize(("page", "family"), runs(), ids=lambda v: v.name if isinstance(v, Path) else v)
def test_snippets_run_as_pasted(page: Path, family: str, folders) -> None:
    rng = np.random.default_rng(0)
    images = [Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)) for h, w in ((45, 61), (70, 50))]
    namespace = {"folder": str(folders[family]), "images": images, "labels": torch.tensor([0, 1])}
    try:
        for number, (families, code) in enumerate(snippets(page)):
            if family in families:
                exec(compile(code, f"{page.name} snippet {number}", "exec"), namespace)
    finally:  # snippets register the folder's remote-code classes with the Auto classes: give them back ours
        for registered in list(vitzoo_hf.FAMILIES.values()):
            vitzoo_hf.register_family(registered)
