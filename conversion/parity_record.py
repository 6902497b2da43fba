"""The parity record of a converted folder: what was verified against timm, bound to the exact weight files.

It lives in its own file (``vitzoo_parity.json``), not in ``config.json``: ``save_pretrained`` after a fine-tune
copies the config into the new folder, and a claim about timm's weights must not travel with other weights. The
record holds the SHA-256 of every weight file, so weights re-saved over a converted folder make it visibly stale
(the publisher refuses it).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

PARITY_FILE = "vitzoo_parity.json"


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files a folder's weights live in (the shards an index names, or the single file)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return [folder / name for name in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    return [folder / "model.safetensors"]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_parity_record(folder: Path, record: dict) -> dict:
    """Write ``record`` plus the hashes of the folder's weight files; returns what was written."""
    record = {**record, "weights": {path.name: sha256(path) for path in weight_files(folder)}}
    (folder / PARITY_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


def read_parity_record(folder: Path) -> dict | None:
    path = folder / PARITY_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def stale_parity_problems(folder: Path, hashes: dict[str, str] | None = None) -> list[str]:
    """Weight files that differ from the ones the record was verified on (empty when the record holds);
    ``hashes`` (file name -> SHA-256) saves reading the weights again where they were just hashed."""
    record = read_parity_record(folder)
    if record is None:
        return []
    recorded = record.get("weights") or {}
    if not recorded:
        return [f"{PARITY_FILE} names no weight files, so its parity claim is bound to nothing. Reconvert."]
    current = {
        path.name: (hashes or {}).get(path.name) or sha256(path) for path in weight_files(folder) if path.is_file()
    }
    changed = sorted(name for name in set(recorded) | set(current) if recorded.get(name) != current.get(name))
    if not changed:
        return []
    return [
        f"{PARITY_FILE} was verified on other weights than {', '.join(changed)} now holds (re-saved after "
        "conversion?): its parity claim no longer holds. Reconvert, or delete the file and the card's parity section."
    ]


CARD_SECTION = "## Parity with timm"
CARD_ROW = re.compile(r"^\| `(?P<output>[^`]+)` \| (?P<value>[^|]+?) \|$", re.MULTILINE)


def card_problems(folder: Path) -> list[str]:
    """The card's parity table must be the record's, figure for figure; a card that claims parity with no record
    (deleted, or never written) is refused."""
    card = folder / "README.md"
    text = card.read_text() if card.is_file() else ""
    claims = CARD_SECTION in text
    record = read_parity_record(folder)
    if record is None:
        if claims:
            return [
                f"README.md claims parity with timm ({CARD_SECTION!r}) but {PARITY_FILE} is missing: reconvert, or "
                "remove that section from the card."
            ]
        return []
    if not claims:
        return []
    table = {m["output"]: m["value"].strip() for m in CARD_ROW.finditer(text.split(CARD_SECTION, 1)[1])}
    expected = {key: f"{value:.2e}" for key, value in (record.get("max_abs_diff") or {}).items()}
    if table != expected:
        differ = sorted(k for k in set(table) | set(expected) if table.get(k) != expected.get(k))
        return [
            f"README.md's parity table differs from {PARITY_FILE} for {', '.join(differ)}: one was edited. "
            "Reconvert, or make the card's table the record's."
        ]
    return []
