"""The import rules for files that ship as Hub remote code (DESIGN.md), checked on the syntax tree."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

# numpy is a dependency of transformers itself; Pillow is not, so it is imported inside ``try``.
ALLOWED_ROOTS = frozenset(sys.stdlib_module_names) | {"torch", "transformers", "numpy", "__future__"}


def import_problems(path: Path) -> list[str]:
    """Imports in ``path`` that would break on the Hub: other packages (beyond stdlib, torch, transformers and
    numpy), or sibling imports not of the form ``from .sibling import Name`` (one level, same folder). Optional
    extras inside ``try`` are fine."""
    tree = ast.parse(path.read_text(), filename=str(path))
    guarded = {id(node) for t in ast.walk(tree) if isinstance(t, ast.Try) for node in ast.walk(t)}
    problems = []
    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] not in ALLOWED_ROOTS and id(node) not in guarded:
                    problems.append(f"{where} imports {alias.name}: only stdlib, torch and transformers")
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if (node.module or "").split(".")[0] not in ALLOWED_ROOTS and id(node) not in guarded:
                    problems.append(f"{where} imports from {node.module}: only stdlib, torch and transformers")
            elif node.level > 1 or not node.module or "." in node.module:
                problems.append(f"{where} relative import must be 'from .sibling import Name'")
            elif not (path.parent / f"{node.module}.py").is_file():
                problems.append(f"{where} imports missing sibling {node.module}.py")
    return problems
