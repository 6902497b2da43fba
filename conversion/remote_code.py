"""The rules for files that ship as Hub remote code (docs/ARCHITECTURE.md), checked on the syntax tree."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

# numpy is a dependency of transformers itself; Pillow is not, so it is imported inside ``try``.
ALLOWED_ROOTS = frozenset(sys.stdlib_module_names) | {"torch", "transformers", "numpy", "__future__"}


# Modules through which a code file could start processes, open connections, or read and write outside its
# folder; a model's code needs none of them, and a folder using them is refused (guarded by ``try`` or not).
FORBIDDEN_MODULES = frozenset(
    {
        "os", "subprocess", "socket", "ssl", "ctypes", "cffi", "multiprocessing", "pty", "shutil", "pathlib",
        "tempfile", "glob", "http", "urllib", "ftplib", "smtplib", "telnetlib", "asyncio", "importlib", "pickle",
        "marshal", "shelve", "webbrowser", "signal", "sys", "builtins", "io", "runpy", "code", "codeop",
    }
)  # fmt: skip
FORBIDDEN_CALLS = frozenset({"eval", "exec", "compile", "__import__", "open", "breakpoint"})


def import_problems(path: Path) -> list[str]:
    """What in ``path`` would break on the Hub or must not run on a user's machine: imports of other packages
    (beyond stdlib, torch, transformers and numpy; optional extras inside ``try`` are fine), sibling imports not
    of the form ``from .sibling import Name`` (one level, same folder), process/network/filesystem modules and
    dynamic-code calls (``FORBIDDEN_MODULES``, ``FORBIDDEN_CALLS``), and syntax errors."""
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except (SyntaxError, UnicodeDecodeError, ValueError) as error:
        line = getattr(error, "lineno", "?")
        return [f"{path.name}:{line} is not valid Python ({getattr(error, 'msg', error)})"]
    guarded = {id(node) for t in ast.walk(tree) if isinstance(t, ast.Try) for node in ast.walk(t)}
    problems = []
    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                root = alias.name.split(".")[0]
                if root in FORBIDDEN_MODULES:
                    problems.append(
                        f"{where} imports {alias.name}: process, network and filesystem modules are refused"
                    )
                elif root not in ALLOWED_ROOTS and id(node) not in guarded:
                    problems.append(f"{where} imports {alias.name}: only stdlib, torch and transformers")
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                root = (node.module or "").split(".")[0]
                if root in FORBIDDEN_MODULES:
                    problems.append(
                        f"{where} imports from {node.module}: process, network and filesystem modules are refused"
                    )
                elif root not in ALLOWED_ROOTS and id(node) not in guarded:
                    problems.append(f"{where} imports from {node.module}: only stdlib, torch and transformers")
            elif node.level > 1 or not node.module or "." in node.module:
                problems.append(f"{where} relative import must be 'from .sibling import Name'")
            elif not (path.parent / f"{node.module}.py").is_file():
                problems.append(f"{where} imports missing sibling {node.module}.py")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS:
            problems.append(f"{where} calls {node.func.id}(): dynamic code and file access are refused in model code")
    return problems


def sibling_closure(paths: list[Path]) -> list[Path]:
    """``paths`` and every file they reach through ``from .sibling import ...``: the code files a folder ships."""
    found: dict[Path, None] = {}
    pending = [Path(p) for p in paths]
    while pending:
        path = pending.pop()
        if path in found:
            continue
        found[path] = None
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                pending.append(path.parent / f"{node.module}.py")
    return sorted(found, key=lambda p: p.name)
