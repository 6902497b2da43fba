"""Convert a manifest of timm models in one run.

    python -m conversion.batch MANIFEST --output-root DIR [--dtype bf16] [--overwrite]

MANIFEST has one model per line: ``timm_name[.tag] [checkpoint_path]`` (a path with spaces in quotes, as in a
shell); blank lines and ``#`` comments are skipped. Each model goes to DIR/<name>. Folders already converted (a
verified config.json for the same name) are skipped, so an interrupted run resumes. One failure does not stop the
others; the run ends with a table (name, parameters, parity, seconds, status) and exits non-zero if any conversion
failed. SIGTERM stops it like Ctrl-C: the conversion under way leaves nothing behind.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

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


def run(entries: list[Entry], output_root: Path, dtype: str, overwrite: bool) -> list[Outcome]:
    outcomes = []
    for entry in tqdm(entries, desc="converting", unit="model"):
        folder = output_root / entry.name
        done = None if overwrite else finished(folder, entry.name, entry.checkpoint)
        if done is not None:
            outcomes.append(
                Outcome(entry.name, "skipped (done)", parity=_parity(done["max_abs_diff"], done["verified_blocks"]))
            )
            continue
        if (folder.exists() or folder.is_symlink()) and not overwrite:
            status = (
                f"refused: {folder} exists and is not a verified conversion of this entry (--overwrite replaces it)"
            )
            outcomes.append(Outcome(entry.name, status))
            continue
        start = time.perf_counter()
        try:
            result = convert(entry.name, folder, checkpoint=entry.checkpoint, dtype=dtype, overwrite=overwrite)
        except Exception as error:  # one model's failure must not stop the batch
            message = str(error).splitlines()[0][:100]
            outcomes.append(Outcome(entry.name, f"failed: {message}", seconds=time.perf_counter() - start))
            continue
        scope = "all" if result.verified_blocks is None else f"first {result.verified_blocks}"
        outcomes.append(
            Outcome(
                entry.name,
                "converted",
                result.num_parameters,
                _parity(result.parity, scope),
                time.perf_counter() - start,
            )
        )
    return outcomes


def table(outcomes: list[Outcome]) -> str:
    lines = ["| model | parameters | parity (max abs diff) | seconds | status |", "|---|---|---|---|---|"]
    for o in outcomes:
        params = f"{o.parameters / 1e6:.1f} M" if o.parameters else "-"
        lines.append(f"| {o.name} | {params} | {o.parity} | {o.seconds:.1f} | {o.status} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--output-root", required=True, type=Path)
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing folders (by default finished ones are skipped and any other existing folder is refused)",
    )
    args = parser.parse_args(argv)
    exit_on_termination()  # SIGTERM unwinds like Ctrl-C: the conversion under way removes its staging
    try:
        entries = read_manifest(args.manifest)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    try:
        outcomes = run(entries, args.output_root, args.dtype, args.overwrite)
    except KeyboardInterrupt as interrupt:
        print(f"error: interrupted ({interrupt or 'Ctrl-C'}); finished folders are kept, the one under way was "
              "removed; run again to resume", file=sys.stderr)  # fmt: skip
        return 130
    print(table(outcomes))
    failed = sum(o.status.startswith(("failed", "refused")) for o in outcomes)
    print(f"{len(outcomes) - failed}/{len(outcomes)} done, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
