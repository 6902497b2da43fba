"""Coverage sweep: every pretrained tag of the timm modules of every registered family, converted and verified.

    python -m conversion.sweep [--depth 2] [--family NAME] [--filter SUBSTRING] [--workers 2] [--json FILE]
        [--shard K/N --results-dir DIR]
    python -m conversion.sweep --merge DIR [--json FILE]

Each tag is built with ``pretrained=False`` and its own pretrained config (input size, classes, mean/std),
cut to its first blocks per group (the family's ``truncate``, on the built model: every constructor and
builder argument intact), given random weights, saved as a checkpoint and run through the real converter (with the
same cut), including its clean-process verification. Prints ``N/M converted with parity`` and each failure with
its reason.

Past one machine: ``--shard K/N`` takes every N-th tag from the K-th (see ``conversion/sharding.py``; a Slurm array
passes ``--shard $SLURM_ARRAY_TASK_ID/N``) and writes ``DIR/sweep-K-of-N.json`` after every tag, so a killed shard
rerun with the same arguments skips what it verified and retries the rest. ``--merge DIR`` checks that every shard
of the split has run to the end on the same selection and writes the summary (``--json``, the form
``bench/results/sweep_*.json`` and the coverage docs read).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file

from conversion import sharding
from conversion.convert_timm import convert, family_of
from conversion.families import conversions
from conversion.staging import exit_on_termination
from conversion.truncation import build_empty, materialize
from conversion.verify import die_with_parent

RESULTS_STEM = "sweep"


def supported_tags(substring: str | None = None, family: str | None = None) -> list[str]:
    known = conversions()
    if family is not None and family not in {c.name for c in known}:
        raise SystemExit(f"Unknown family {family!r}; registered: {', '.join(c.name for c in known)}.")
    modules = sorted({m for c in known if family in (None, c.name) for m in c.timm_modules})
    tags = sorted(timm.list_models(module=modules, pretrained=True))
    return [t for t in tags if substring is None or substring in t]


def sweep_one(tag: str, depth: int) -> tuple[str, bool, str, float]:
    start = time.perf_counter()
    try:
        hooks = family_of(tag)
        model = build_empty(tag, **hooks.reference_kwargs(tag))
        blocks = min(depth, hooks.num_blocks(model))
        model = materialize(hooks.truncate(model, blocks))
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for tensor in model.state_dict(keep_vars=True).values():
                if tensor.is_floating_point():
                    tensor.add_(torch.randn(tensor.shape, generator=generator) * 0.02)
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = Path(tmp) / "checkpoint.safetensors"
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(checkpoint))
            del model
            result = convert(tag, Path(tmp) / "out", checkpoint=checkpoint, blocks=blocks)
        return tag, True, f"max abs diff {max(result.parity.values()):.1e}", time.perf_counter() - start
    except Exception as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [""]
        # A clean-process failure carries the child's traceback: its last line is the actual cause.
        reason = lines[0][:160] + (f" ... {lines[-1][:200]}" if len(lines) > 1 else "")
        return tag, False, f"{type(error).__name__}: {reason}", time.perf_counter() - start


def _summary(results: list[dict]) -> int:
    """Print the pass count and each failure; 0 when every tag passed."""
    passed = sum(r["ok"] for r in results)
    print(f"\n{passed}/{len(results)} converted with parity")
    for r in results:
        if not r["ok"]:
            print(f"  {r['tag']}: {r['detail']}")
    return 0 if passed == len(results) else 1


def _resume(path: Path, selection: dict, tags: list[str]) -> list[dict]:
    """The verified results a shard's earlier run left in ``path`` (failures are retried); a file written for
    another selection is refused rather than mixed in."""
    if not path.is_file():
        return []
    try:
        previous = json.loads(path.read_text())
        recorded, results = (previous["selection"], previous["items"]), previous["results"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SystemExit(
            f"{path} is not a sweep results file ({error!r}); move it away or choose another --results-dir."
        ) from error
    if recorded != (selection, tags):
        raise SystemExit(
            f"{path} was written by a sweep of another selection ({recorded[0]}, {len(recorded[1])} tags; this run: "
            f"{selection}, {len(tags)} tags). Choose another --results-dir, or delete the file to start this shard "
            "over."
        )
    return [r for r in results if r["ok"] and r["tag"] in tags]


def merge(folder: Path, json_path: Path | None) -> int:
    """Combine the shard files in ``folder`` into one summary (``json_path``); 2 for an incomplete set."""
    try:
        records = sharding.read_shards(folder, RESULTS_STEM)
    except ValueError as error:
        raise SystemExit(str(error)) from error
    problems = sharding.incomplete(records, "tag")
    if problems:
        selection = next(iter(records.values()))["selection"]
        print(f"Incomplete sweep in {folder} ({selection}); rerun these shards (each resumes), then merge again:",
              file=sys.stderr)  # fmt: skip
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    results = sorted((r for record in records.values() for r in record["results"]), key=lambda r: r["tag"])
    if json_path:
        sharding.write_json_atomically(json_path, results)
    return _summary(results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--family", default=None, help="only the tags of this family's timm modules")
    parser.add_argument("--filter", default=None, help="only tags containing this substring")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="write every result here (with --merge: the summary)")
    parser.add_argument(
        "--shard",
        type=sharding.parse_shard,
        default=sharding.WHOLE,
        help="K/N: only shard K of N of the tags (needs --results-dir)",
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=None,
        help="write this shard's results to DIR/sweep-K-of-N.json after every tag; a rerun skips the verified ones",
    )
    parser.add_argument("--merge", type=Path, default=None, metavar="DIR", help="combine DIR's shard results; no sweep")
    args = parser.parse_args(argv)
    if args.merge is not None:
        return merge(args.merge, args.json)
    if args.shard != sharding.WHOLE and args.results_dir is None:
        parser.error(
            "--shard needs --results-dir: each shard writes DIR/sweep-K-of-N.json and --merge DIR combines them"
        )
    tags = args.shard.take(supported_tags(args.filter, args.family))
    selection = dict(family=args.family, filter=args.filter, depth=args.depth, timm=timm.__version__)
    path = None if args.results_dir is None else sharding.shard_file(args.results_dir, RESULTS_STEM, args.shard)
    results = [] if path is None else _resume(path, selection, tags)
    done = {r["tag"] for r in results}
    if done:
        print(f"resuming shard {args.shard}: {len(done)}/{len(tags)} tags already verified in {path}", flush=True)
    if path is not None:
        sharding.write_json_atomically(path, sharding.shard_record(selection, args.shard, tags, results))
    exit_on_termination()
    with multiprocessing.Pool(args.workers, initializer=die_with_parent) as pool:
        try:
            todo = [t for t in tags if t not in done]
            for tag, ok, detail, seconds in pool.imap(partial(sweep_one, depth=args.depth), todo):
                results.append(dict(tag=tag, ok=ok, detail=detail, seconds=seconds))
                if path is not None:
                    sharding.write_json_atomically(path, sharding.shard_record(selection, args.shard, tags, results))
                print(f"{'ok  ' if ok else 'FAIL'} {tag}: {detail} ({seconds:.0f} s)", flush=True)
        except KeyboardInterrupt as interrupt:  # SIGTERM or Ctrl-C: no worker goes on converting on its own
            pool.terminate()  # SIGTERM to each worker: its conversion under way removes its staging
            pool.join()
            print(f"interrupted ({interrupt or 'Ctrl-C'}) after {len(results)}/{len(tags)} tags", file=sys.stderr)
            return 130
    results.sort(key=lambda r: r["tag"])
    if args.json:
        sharding.write_json_atomically(args.json, results)
    return _summary(results)


if __name__ == "__main__":
    sys.exit(main())
