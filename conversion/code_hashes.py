"""Which code files the publisher may run without asking: byte-identical copies of a vitzoo_hf release's files.

``code_hashes.json`` holds, per release, the SHA-256 of every code file a converted folder can carry (all of
``vitzoo_hf/`` but its ``__init__.py``), including every version a commit of that release ever had, so folders
converted by older releases and by any commit of this one still publish without ``--trust-code``. A test fails
when a code file changes and its hash is not recorded:

    python -m conversion.code_hashes --update    # record the current files under the current version
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import cache
from importlib.metadata import version
from pathlib import Path

from conversion.parity_record import sha256

HASHES_FILE = Path(__file__).with_name("code_hashes.json")
PACKAGE = Path(__file__).resolve().parents[1] / "vitzoo_hf"


def shipped_files() -> list[Path]:
    """The files of the package that converted folders carry (the package's ``__init__`` never ships)."""
    return sorted(path for path in PACKAGE.glob("*.py") if path.name != "__init__.py")


def read_hashes() -> dict[str, dict[str, list[str]]]:
    return json.loads(HASHES_FILE.read_text()) if HASHES_FILE.is_file() else {}


@cache
def known() -> dict[str, frozenset[str]]:
    """File name -> every recorded SHA-256 of it, over all releases."""
    names: dict[str, set[str]] = {}
    for files in read_hashes().values():
        for name, digests in files.items():
            names.setdefault(name, set()).update(digests)
    return {name: frozenset(digests) for name, digests in names.items()}


def unknown_code(folder: Path) -> list[str]:
    """The ``*.py`` files of ``folder`` that are not byte-identical to a release's file of the same name."""
    return [p.name for p in sorted(folder.glob("*.py")) if sha256(p) not in known().get(p.name, frozenset())]


def unrecorded() -> list[str]:
    """Current code files whose hash ``code_hashes.json`` lacks."""
    return [p.name for p in shipped_files() if sha256(p) not in known().get(p.name, frozenset())]


def update() -> list[str]:
    """Add the current files' hashes under the installed version; returns the names added."""
    hashes, release = read_hashes(), version("vitzoo-hf")
    files = hashes.setdefault(release, {})
    added = []
    for path in shipped_files():
        digests = files.setdefault(path.name, [])
        if (digest := sha256(path)) not in digests:
            digests.append(digest)
            added.append(path.name)
    HASHES_FILE.write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
    known.cache_clear()
    return added


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--update", action="store_true", help="record the current files' hashes")
    args = parser.parse_args(argv)
    if args.update:
        print(f"recorded: {', '.join(update()) or 'nothing new'}")
        return 0
    missing = unrecorded()
    print(f"unrecorded: {', '.join(missing)}" if missing else "every code file is recorded")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
