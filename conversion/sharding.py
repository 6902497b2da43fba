"""Spreading a batch or a sweep over a job array: ``--shard K/N`` takes a deterministic share of the work.

Shard K of N (1-based, so a Slurm array ``--array=1-N`` passes ``$SLURM_ARRAY_TASK_ID/N``) takes items K, K+N,
K+2N, ... of the list in its given order: every item in exactly one shard, shards within one item of each other,
and the same split on every machine for the same list. Each shard writes its own results file; a merge step reads
them all and refuses to summarise an incomplete set.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based
    count: int

    def take(self, items: Sequence[T]) -> list[T]:
        """This shard's share of ``items``: every ``count``-th one, starting at the ``index``-th."""
        return list(items[self.index - 1 :: self.count])

    @property
    def label(self) -> str:
        return f"{self.index}-of-{self.count}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


WHOLE = Shard(1, 1)


def parse_shard(text: str) -> Shard:
    """``K/N`` with 1 <= K <= N, for argparse's ``type=``; anything else is explained."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"expected K/N (shard K of N, 1-based, e.g. 2/8), got {text!r}")
    index, count = int(match[1]), int(match[2])
    if not 1 <= index <= count:
        raise argparse.ArgumentTypeError(
            f"shard {text!r} is out of range: K runs from 1 to N (a job array's task ids 1..N), "
            f"got K={index}, N={count}"
        )
    return Shard(index, count)


SHARD_FILE = re.compile(r"(?P<stem>.+)-(?P<index>\d+)-of-(?P<count>\d+)\.json")


def shard_file(folder: Path, stem: str, shard: Shard) -> Path:
    return Path(folder) / f"{stem}-{shard.label}.json"


def shard_files(folder: Path, stem: str) -> dict[Shard, Path]:
    """The results files ``STEM-K-of-N.json`` in ``folder``, by shard; mixed N are refused by name."""
    found = {}
    for path in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
        match = SHARD_FILE.fullmatch(path.name)
        if match and match["stem"] == stem:
            found[Shard(int(match["index"]), int(match["count"]))] = path
    counts = {shard.count for shard in found}
    if len(counts) > 1:
        names = ", ".join(p.name for p in found.values())
        raise ValueError(f"{folder} holds {stem} results of runs split differently ({names}): keep one split's files.")
    return found


def missing_shards(found: dict[Shard, object]) -> list[Shard]:
    """The shards of the split that have no results file (``found`` non-empty)."""
    count = next(iter(found)).count
    return [Shard(k, count) for k in range(1, count + 1) if Shard(k, count) not in found]


def shard_record(selection: dict, shard: Shard, items: list[str], results: list[dict]) -> dict:
    """What a shard's results file holds: the selection it ran (so a rerun or a merge of another one is
    refused), its share of the items, and one result per item finished so far."""
    return dict(selection=selection, shard=str(shard), items=items, results=results)


def read_shards(folder: Path, stem: str) -> dict[Shard, dict]:
    """Every shard record in ``folder``, refused by name where there is none, one is unreadable, or they come
    from different selections."""
    found = shard_files(folder, stem)
    if not found:
        raise ValueError(f"No results files ({stem}-K-of-N.json) in {folder}: run the shards first.")
    records = {}
    for shard, path in found.items():
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise ValueError(f"{path} is not a shard results file ({error}).") from error
        if not isinstance(record, dict) or {"selection", "items", "results"} - set(record):
            raise ValueError(f"{path} is not a shard results file (no selection, items and results).")
        records[shard] = record
    selections = {json.dumps(r["selection"], sort_keys=True) for r in records.values()}
    if len(selections) > 1:
        raise ValueError(f"The shard files in {folder} come from different runs: {' vs '.join(sorted(selections))}.")
    return records


def incomplete(records: dict[Shard, dict], key: str) -> list[str]:
    """What keeps a set of shard records from being a whole run: shards never run, items without a result
    (``key`` names the item in a result)."""
    problems = [f"shard {shard}: no results file (never run)" for shard in missing_shards(records)]
    for shard in sorted(records, key=lambda s: s.index):
        record = records[shard]
        done = {result[key] for result in record["results"]}
        left = [item for item in record["items"] if item not in done]
        if left:
            problems.append(f"shard {shard}: {len(left)} of {len(record['items'])} without a result (e.g. {left[0]})")
    return problems


def write_json_atomically(path: Path, payload: object) -> None:
    """Replace ``path`` whole: a reader (the merge, a rerun) sees the old content or the new, never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(payload, stream, indent=1)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
