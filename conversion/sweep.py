"""Coverage sweep: every pretrained tag of the timm modules of every registered family, converted and verified.

    python -m conversion.sweep [--depth 2] [--family NAME] [--filter SUBSTRING] [--workers 2] [--json FILE]

Each tag is built with ``pretrained=False`` and its own pretrained config (input size, classes, mean/std),
cut to its first blocks per group (the family's ``truncate``, on the built model: every constructor and
builder argument intact), given random weights, saved as a checkpoint and run through the real converter (with the
same cut), including its clean-process verification. Prints ``N/M converted with parity`` and each failure with
its reason.
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

from conversion.convert_timm import convert, family_of
from conversion.families import conversions
from conversion.staging import exit_on_termination
from conversion.truncation import build_empty, materialize
from conversion.verify import die_with_parent


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--family", default=None, help="only the tags of this family's timm modules")
    parser.add_argument("--filter", default=None, help="only tags containing this substring")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="write every result here")
    args = parser.parse_args(argv)
    tags = supported_tags(args.filter, args.family)
    exit_on_termination()
    results = []
    with multiprocessing.Pool(args.workers, initializer=die_with_parent) as pool:
        try:
            for result in pool.imap(partial(sweep_one, depth=args.depth), tags):
                results.append(result)
                print(f"{'ok  ' if result[1] else 'FAIL'} {result[0]}: {result[2]} ({result[3]:.0f} s)", flush=True)
        except KeyboardInterrupt as interrupt:  # SIGTERM or Ctrl-C: no worker goes on converting on its own
            pool.terminate()  # SIGTERM to each worker: its conversion under way removes its staging
            pool.join()
            print(f"interrupted ({interrupt or 'Ctrl-C'}) after {len(results)}/{len(tags)} tags", file=sys.stderr)
            return 130
    passed = sum(ok for _, ok, _, _ in results)
    print(f"\n{passed}/{len(results)} converted with parity")
    for tag, ok, reason, _ in results:
        if not ok:
            print(f"  {tag}: {reason}")
    if args.json:
        args.json.write_text(
            json.dumps([dict(zip(("tag", "ok", "detail", "seconds"), r, strict=True)) for r in results], indent=1)
        )
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
