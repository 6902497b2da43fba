"""Convert a manifest of timm models in one run.

    python -m conversion.batch MANIFEST --output-root DIR [--dtype bf16] [--overwrite] [--shard K/N]
    python -m conversion.batch --merge DIR

MANIFEST has one model per line: ``timm_name[.tag] [checkpoint_path]`` (a path with spaces in quotes, as in a
shell); blank lines and ``#`` comments are skipped. Each model goes to DIR/<name>. Folders already converted (a
verified config.json for the same name) are skipped, so an interrupted run resumes. One failure does not stop the
others; the run ends with a table (name, parameters, parity, seconds, status) and exits non-zero if any conversion
failed. SIGTERM stops it like Ctrl-C: the conversion under way leaves nothing behind.

Past one machine: ``--shard K/N`` converts every N-th entry of the manifest from the K-th (see
``conversion/sharding.py``), so N jobs of an array share one manifest and one output root; each writes
``DIR/batch-K-of-N.json`` (its outcomes, after every entry) and resumes as any run does. ``--merge DIR`` prints the
table of the whole run once every shard has finished, and exits non-zero where a shard is missing, unfinished or
failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from conversion import sharding
from conversion.convert_timm import DTYPES, checkpoint_identity, convert
from conversion.parity_record import read_parity_record, stale_parity_problems
from conversion.staging import exit_on_termination


@dataclass
class Entry:
    name: str
    checkpoint: Path | None


@dataclass
class Outcome:
    name: str
    status: str
    parameters: int | None = None
    parity: str = "-"
    seconds: float = 0.0


def read_manifest(path: Path) -> list[Entry]:
    entries = []
    for number, raw in enumerate(Path(path).read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            parts = shlex.split(line)  # a checkpoint path with spaces is quoted, as in a shell
        except ValueError as error:
            raise ValueError(f"{path}:{number}: {error} in {raw!r}") from error
        if len(parts) > 2:
            raise ValueError(
                f"{path}:{number}: expected 'timm_name [checkpoint]', got {raw!r} (quote a path with spaces: "
                '"my dir/ckpt.pth")'
            )
        entries.append(Entry(parts[0], Path(parts[1]) if len(parts) == 2 else None))
    return entries


def finished(folder: Path, name: str, checkpoint: Path | None) -> dict | None:
    """The parity record if ``folder`` already holds a verified conversion of ``name`` from ``checkpoint`` whose
    weights are still the verified ones."""
    try:
        config = json.loads((folder / "config.json").read_text())
        record = read_parity_record(folder)
        if record is None or stale_parity_problems(folder):
            return None
    except (OSError, ValueError):
        return None
    tag = config.get("timm_pretrained_tag")
    converted = config.get("timm_model_name", "") + (f".{tag}" if tag else "")
    same_source = record.get("checkpoint") == checkpoint_identity(checkpoint)
    return record if converted == name and same_source else None


def _parity(max_abs_diff: dict[str, float], scope: str) -> str:
    text = f"{max(max_abs_diff.values()):.1e}"
    return text if scope == "all" else f"{text} ({scope} blocks)"


def convert_entry(entry: Entry, output_root: Path, dtype: str, overwrite: bool) -> Outcome:
    """One manifest entry: skipped when already verified, refused when its folder holds something else, else
    converted; a failure is its outcome, not an exception."""
    folder = output_root / entry.name
    done = None if overwrite else finished(folder, entry.name, entry.checkpoint)
    if done is not None:
        return Outcome(entry.name, "skipped (done)", parity=_parity(done["max_abs_diff"], done["verified_blocks"]))
    if (folder.exists() or folder.is_symlink()) and not overwrite:
        status = f"refused: {folder} exists and is not a verified conversion of this entry (--overwrite replaces it)"
        return Outcome(entry.name, status)
    start = time.perf_counter()
    try:
        result = convert(entry.name, folder, checkpoint=entry.checkpoint, dtype=dtype, overwrite=overwrite)
    except Exception as error:  # one model's failure must not stop the batch
        message = str(error).splitlines()[0][:100]
        return Outcome(entry.name, f"failed: {message}", seconds=time.perf_counter() - start)
    scope = "all" if result.verified_blocks is None else f"first {result.verified_blocks}"
    parity = _parity(result.parity, scope)
    return Outcome(entry.name, "converted", result.num_parameters, parity, time.perf_counter() - start)


def run(
    entries: list[Entry],
    output_root: Path,
    dtype: str,
    overwrite: bool,
    record: Callable[[list[Outcome]], None] | None = None,
) -> list[Outcome]:
    """Convert ``entries`` into ``output_root``; ``record`` is handed the outcomes so far after each entry."""
    outcomes: list[Outcome] = []
    for entry in tqdm(entries, desc="converting", unit="model"):
        outcomes.append(convert_entry(entry, output_root, dtype, overwrite))
        if record is not None:
            record(outcomes)
    return outcomes


def table(outcomes: list[Outcome]) -> str:
    lines = ["| model | parameters | parity (max abs diff) | seconds | status |", "|---|---|---|---|---|"]
    for o in outcomes:
        params = f"{o.parameters / 1e6:.1f} M" if o.parameters else "-"
        lines.append(f"| {o.name} | {params} | {o.parity} | {o.seconds:.1f} | {o.status} |")
    return "\n".join(lines)


RESULTS_STEM = "batch"


def _failed(outcomes: list[Outcome]) -> int:
    return sum(o.status.startswith(("failed", "refused")) for o in outcomes)


def _report(outcomes: list[Outcome]) -> int:
    """Print the table and the count; 1 when any entry failed or was refused."""
    print(table(outcomes))
    failed = _failed(outcomes)
    print(f"{len(outcomes) - failed}/{len(outcomes)} done, {failed} failed")
    return 1 if failed else 0


def merge(output_root: Path) -> int:
    """The table of a sharded run from its shards' files; 2 (naming what is missing) for an unfinished set."""
    try:
        records = sharding.read_shards(output_root, RESULTS_STEM)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    problems = sharding.incomplete(records, "name")
    if problems:
        print(f"error: the run in {output_root} is unfinished; rerun these shards (each resumes), then merge again:",
              file=sys.stderr)  # fmt: skip
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    order = {  # the manifest's order: shard K's i-th entry was the manifest's (K - 1 + i * N)-th
        name: shard.index - 1 + i * shard.count
        for shard, record in records.items()
        for i, name in enumerate(record["items"])
    }
    results = [Outcome(**r) for record in records.values() for r in record["results"]]
    return _report(sorted(results, key=lambda o: (order[o.name], o.name)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest", type=Path, nargs="?")
    parser.add_argument("--output-root", type=Path)
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing folders (by default finished ones are skipped and any other existing folder is refused)",
    )
    parser.add_argument(
        "--shard",
        type=sharding.parse_shard,
        default=sharding.WHOLE,
        help="K/N: only every N-th entry from the K-th (a job array)",
    )
    parser.add_argument("--merge", type=Path, metavar="DIR", help="the table of a sharded run in DIR; converts nothing")
    args = parser.parse_args(argv)
    if args.merge is not None:
        return merge(args.merge)
    if args.manifest is None or args.output_root is None:
        parser.error("give a MANIFEST and --output-root (or --merge DIR for a sharded run's table)")
    exit_on_termination()  # SIGTERM unwinds like Ctrl-C: the conversion under way removes its staging
    try:
        entries = read_manifest(args.manifest)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    record = None
    if args.shard != sharding.WHOLE:
        entries = args.shard.take(entries)
        record = _shard_recorder(args.manifest, args.output_root, args.dtype, args.shard, entries)
        record([])  # the shard has started: a merge names it unfinished rather than never run
    try:
        outcomes = run(entries, args.output_root, args.dtype, args.overwrite, record)
    except KeyboardInterrupt as interrupt:
        print(f"error: interrupted ({interrupt or 'Ctrl-C'}); finished folders are kept, the one under way was "
              "removed; run again to resume", file=sys.stderr)  # fmt: skip
        return 130
    return _report(outcomes)


def _shard_recorder(
    manifest: Path, output_root: Path, dtype: str, shard: sharding.Shard, entries: list[Entry]
) -> Callable[[list[Outcome]], None]:
    """Writes the shard's outcomes to ``OUTPUT_ROOT/batch-K-of-N.json``; the selection names the manifest by its
    content, so shards on different machines (different paths, one manifest) merge, and another manifest does not."""
    selection = dict(manifest_sha256=hashlib.sha256(manifest.read_bytes()).hexdigest(), dtype=dtype)
    path = sharding.shard_file(output_root, RESULTS_STEM, shard)
    names = [entry.name for entry in entries]

    def record(outcomes: list[Outcome]) -> None:
        sharding.write_json_atomically(
            path, sharding.shard_record(selection, shard, names, [asdict(o) for o in outcomes])
        )

    return record


if __name__ == "__main__":
    sys.exit(main())
