"""Every timm pretrained tag: whether vitzoo_hf converts it, and what it is (size, cost, input, classes, data).

    python -m conversion.catalog [PATTERN] [--family F] [--pretrained-on DATASET] [--max-params N]
        [--with-head | --headless] [--status S] [--json]
    python -m conversion.catalog --profile-all [--workers N] [--profiles-file F]   # fill the profile cache
    python -m conversion.catalog --write-coverage docs/COVERAGE.md

Status comes from the coverage sweeps' results (``bench/results/sweep*.json``, written by ``conversion.sweep``):
``verified`` (converted with parity by the last sweep), ``not swept`` (its timm module belongs to a family, the
sweep has not run on it) or ``refused`` (with the reason: the sweep's, or no family for its timm module yet).
Parameters, GMACs and activations are meta-device counts (``conversion.profile``), cached per timm version:
``conversion/catalog_profiles.json`` ships them for the timm the repo pins, others are computed once into
``$VITZOO_HF_CACHE`` (default ``~/.cache/vitzoo_hf``).
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import multiprocessing
import os
import re
import shutil
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import timm
from timm.models import get_pretrained_cfg

from conversion.families import conversions
from conversion.profile import Profile, datasets_of, profile
from conversion.sharding import write_json_atomically

RESULTS_DIR = Path(__file__).resolve().parents[1] / "bench" / "results"
SHIPPED_PROFILES = Path(__file__).with_name("catalog_profiles.json")
STATUSES = ("verified", "not swept", "refused")
COVERAGE_BEGIN, COVERAGE_END = "<!-- catalog:coverage:begin -->", "<!-- catalog:coverage:end -->"
EXAMPLES = """examples (vitzoo-catalog is the same as python -m conversion.catalog):
  vitzoo-catalog 'convnext_*' --pretrained-on imagenet-22k
  vitzoo-catalog --family efficientnet --max-params 10M --status verified
  vitzoo-catalog resnet50 --json | jq '.[0]'
"""


@dataclass(frozen=True)
class CatalogEntry:
    """One pretrained tag. ``detail``: the parity the sweep measured, or why the tag is refused."""

    tag: str
    architecture: str
    module: str
    family: str | None
    status: str
    detail: str | None
    params: int | None
    gmacs: float | None
    activations_m: float | None
    input_size: tuple[int, int]
    crop_pct: float | None
    num_classes: int
    datasets: tuple[str, ...]
    license: str | None
    source: str | None


def timm_modules() -> dict[str, str]:
    """Each pretrained tag's timm module (``timm.models.<module>``)."""
    return {tag: module for module in timm.list_modules() for tag in timm.list_models(module=module, pretrained=True)}


def sweep_results(results_dir: Path = RESULTS_DIR) -> dict[str, dict]:
    """The sweeps' last word on each tag, from every ``sweep*.json`` in ``results_dir``."""
    results: dict[str, dict] = {}
    for path in sorted(results_dir.glob("sweep*.json")):
        try:
            records = json.loads(path.read_text())
            results.update({r["tag"]: r for r in records})
        except (ValueError, KeyError, TypeError) as error:
            message = f"{path} is not a sweep results file ({error!r}); write it with conversion.sweep --json."
            raise SystemExit(message) from error
    return results


def profile_cache() -> Path:
    root = Path(os.environ.get("VITZOO_HF_CACHE") or Path.home() / ".cache" / "vitzoo_hf")
    return root / f"catalog_profiles-timm-{timm.__version__}.json"


def _read_profiles(path: Path) -> dict[str, Profile | None]:
    """A profile file's entries for the installed timm (None: timm cannot build the tag on the meta device)."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        if data.get("timm") != timm.__version__:
            return {}
        return {tag: Profile(*values) if values else None for tag, values in data["profiles"].items()}
    except (ValueError, TypeError, KeyError, AttributeError):  # a damaged cache is rebuilt, not trusted
        return {}


def _profile_tag(tag: str) -> tuple[str, Profile | None]:
    try:
        return tag, profile(tag)
    except Exception:  # a model timm cannot build on the meta device: no figures
        return tag, None


def profiles(tags: Iterable[str], workers: int = 1, path: Path | None = None) -> dict[str, Profile | None]:
    """Each tag's profile: from the shipped file, then the user cache, computing (and caching) the rest."""
    path = path or profile_cache()
    cached = _read_profiles(path)
    known = {**_read_profiles(SHIPPED_PROFILES), **cached}
    missing = [t for t in tags if t not in known]
    if missing:
        print(f"profiling {len(missing)} tag(s) on the meta device (cached for next time) ...", file=sys.stderr)
        with multiprocessing.Pool(workers) if workers > 1 else contextlib.nullcontext() as pool:
            found_all = pool.imap_unordered(_profile_tag, missing) if pool else map(_profile_tag, missing)
            for done, (tag, found) in enumerate(found_all, start=1):
                known[tag] = cached[tag] = found
                if done % 50 == 0 or done == len(missing):  # an interrupted fill keeps what it measured
                    save_profiles(path, cached)
    return {t: known.get(t) for t in tags}


def save_profiles(path: Path, found: dict[str, Profile | None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = {tag: list(asdict(p).values()) if p else None for tag, p in sorted(found.items())}
    write_json_atomically(path, {"timm": timm.__version__, "profiles": rows})


def _status(tag: str, module: str, family: str | None, results: dict[str, dict]) -> tuple[str, str | None]:
    if family is None:
        return "refused", f"no vitzoo_hf family for timm.models.{module} yet"
    if tag not in results:
        return "not swept", None
    result = results[tag]
    return ("verified" if result["ok"] else "refused"), result["detail"]


def parse_count(text: str) -> int:
    """``30M``, ``1.5B``, ``500k`` or a plain number of parameters."""
    match = re.fullmatch(r"\s*([\d.]+)\s*([kKmMbBgG]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a parameter count; write e.g. 25M, 1.5B or 25000000.")
    scale = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9}[match[2].lower()]
    return int(float(match[1]) * scale)


def catalog(
    pattern: str | None = None,
    family: str | None = None,
    pretrained_on: str | None = None,
    max_params: int | None = None,
    with_head: bool | None = None,
    status: str | None = None,
    results_dir: Path = RESULTS_DIR,
    measured: bool = True,
) -> list[CatalogEntry]:
    """The pretrained tags matching every filter given. ``pattern``: a wildcard (``vit_*``) or a substring;
    ``pretrained_on``: a dataset as ``CatalogEntry.datasets`` names it (``imagenet-22k``); ``with_head``: True for
    classifiers, False for feature extractors; ``measured=False`` leaves the profile figures out (None), so no tag
    is profiled."""
    families = {hooks.name: hooks for hooks in conversions()}
    if family is not None and family not in families:
        raise ValueError(f"Unknown family {family!r}; registered: {', '.join(families)}.")
    if status is not None and status not in STATUSES:
        raise ValueError(f"Unknown status {status!r}; one of: {', '.join(STATUSES)}.")
    module_family = {m: hooks.name for hooks in families.values() for m in hooks.timm_modules}
    modules, results = timm_modules(), sweep_results(results_dir)
    wildcard = pattern is not None and any(c in pattern for c in "*?[")
    chosen = []
    for tag in sorted(modules):
        if pattern is not None and not (fnmatch.fnmatch(tag, pattern) if wildcard else pattern in tag):
            continue
        tag_family = module_family.get(modules[tag])
        if family is not None and tag_family != family:
            continue
        cfg = get_pretrained_cfg(tag).to_dict()
        if with_head is not None and bool(cfg.get("num_classes")) != with_head:
            continue
        datasets = tuple(datasets_of(cfg.get("tag")))
        if pretrained_on is not None and pretrained_on.lower() not in datasets:
            continue
        tag_status, detail = _status(tag, modules[tag], tag_family, results)
        if status is not None and tag_status != status:
            continue
        chosen.append((tag, cfg, tag_family, tag_status, detail, datasets))
    if max_params is not None and not measured:
        raise ValueError("max_params needs the profile figures (measured=True).")
    sizes = profiles([tag for tag, *_ in chosen]) if measured else {}
    entries = []
    for tag, cfg, tag_family, tag_status, detail, datasets in chosen:
        size = sizes.get(tag)
        if max_params is not None and (size is None or size.params > max_params):
            continue
        entries.append(
            CatalogEntry(
                tag=tag,
                architecture=cfg["architecture"],
                module=modules[tag],
                family=tag_family,
                status=tag_status,
                detail=detail,
                params=size.params if size else None,
                gmacs=size.gmacs if size else None,
                activations_m=size.activations_m if size else None,
                input_size=tuple(cfg["input_size"][1:]),
                crop_pct=cfg.get("crop_pct"),
                num_classes=int(cfg.get("num_classes") or 0),
                datasets=datasets,
                license=cfg.get("license"),
                source=cfg.get("hf_hub_id") or cfg.get("origin_url") or cfg.get("url") or None,
            )
        )
    return entries


def _cell(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(entries: list[CatalogEntry], width: int) -> str:
    """A table cut to ``width``: the least needed columns (crop, license, classes, size) go first, then the tag is
    shortened; the status (with a refusal's reason) takes what is left."""
    columns = {
        "tag": [e.tag for e in entries],
        "family": [e.family or "-" for e in entries],
        "params M": [_cell(e.params / 1e6 if e.params is not None else None) for e in entries],
        "GMACs": [_cell(e.gmacs, 2) for e in entries],
        "size": ["x".join(map(str, e.input_size)) for e in entries],
        "classes": [str(e.num_classes) for e in entries],
        "crop": [_cell(e.crop_pct, 3) for e in entries],
        "license": [(e.license or "-")[:16] for e in entries],
    }
    status = [e.status + (f": {e.detail}" if e.status == "refused" and e.detail else "") for e in entries]
    widths = {name: max(len(name), *map(len, cells)) for name, cells in columns.items()}
    for dropped in ("crop", "license", "classes", "size"):
        if sum(widths.values()) + 2 * len(widths) + 10 <= width:
            break
        del columns[dropped], widths[dropped]
    widths["tag"] = max(20, min(widths["tag"], width - sum(widths.values()) + widths["tag"] - 2 * len(widths) - 10))
    right = {"params M", "GMACs", "size", "classes", "crop"}
    lines = []
    for i in range(-1, len(entries)):
        cells = []
        for name, values in columns.items():
            text = name if i < 0 else values[i]
            text = text if len(text) <= widths[name] else text[: widths[name] - 1] + "~"
            cells.append(text.rjust(widths[name]) if name in right else text.ljust(widths[name]))
        line = "  ".join(cells) + "  " + ("status" if i < 0 else status[i])
        lines.append(line if len(line) <= width else line[: width - 1] + "~")
    return "\n".join(lines)


def coverage_markdown(entries: list[CatalogEntry]) -> str:
    """Per family: timm modules, architectures, tags, verified, refused with reasons, share of all timm tags."""
    total = len(entries)
    by_family: dict[str, list[CatalogEntry]] = defaultdict(list)
    for entry in entries:
        by_family[entry.family or ""].append(entry)
    lines = [
        "| family | timm modules | architectures | tags | verified | not swept | refused "
        "| verified share of all timm tags |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for hooks in conversions():
        own = by_family.get(hooks.name, [])
        counts = Counter(e.status for e in own)
        lines.append(
            f"| `{hooks.name}` | {', '.join(f'`{m}`' for m in hooks.timm_modules)} "
            f"| {len({e.architecture for e in own})} | {len(own)} | {counts['verified']} | {counts['not swept']} "
            f"| {counts['refused']} | {100 * counts['verified'] / total:.1f}% |"
        )
    verified = sum(e.status == "verified" for e in entries)
    lines += ["", f"**{verified} of timm {timm.__version__}'s {total} pretrained tags ({100 * verified / total:.1f}%) "
              "convert with parity.**", ""]  # fmt: skip
    for hooks in conversions():
        refused = [e for e in by_family.get(hooks.name, []) if e.status == "refused"]
        if refused:
            lines += [f"Refused in `{hooks.name}`:", "", "| tag | reason |", "|---|---|"]
            lines += [f"| `{e.tag}` | {(e.detail or '').replace('|', '/')} |" for e in refused]
            lines.append("")
    elsewhere = Counter(e.module for e in by_family.get("", []))
    lines += ["timm modules with no family yet, by pretrained tags:", ""]
    lines.append(", ".join(f"`{module}` {count}" for module, count in elsewhere.most_common()))
    return "\n".join(lines)


def write_coverage(doc: Path, entries: list[CatalogEntry]) -> bool:
    """Replace the generated part of ``doc``; True when it changed."""
    text = doc.read_text()
    if COVERAGE_BEGIN not in text or COVERAGE_END not in text:
        raise SystemExit(f"{doc} has no {COVERAGE_BEGIN} ... {COVERAGE_END} block for the generated coverage.")
    head, rest = text.split(COVERAGE_BEGIN, 1)
    _, tail = rest.split(COVERAGE_END, 1)
    new = f"{head}{COVERAGE_BEGIN}\n{coverage_markdown(entries)}\n{COVERAGE_END}{tail}"
    doc.write_text(new)
    return new != text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("pattern", nargs="?", help="a wildcard (vit_*) or a substring of the tag")
    parser.add_argument("--family", help=f"one of: {', '.join(h.name for h in conversions())}")
    parser.add_argument("--pretrained-on", metavar="DATASET", help="a dataset the tag names (imagenet-22k, laion-2b)")
    parser.add_argument("--max-params", type=parse_count, metavar="N", help="at most N parameters (25M, 1.5B)")
    head = parser.add_mutually_exclusive_group()
    head.add_argument("--with-head", dest="with_head", action="store_const", const=True, help="classifiers only")
    head.add_argument("--headless", dest="with_head", action="store_const", const=False, help="feature extractors")
    parser.add_argument("--status", choices=STATUSES)
    parser.add_argument("--json", action="store_true", help="JSON, one object per tag")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the sweep*.json results are")
    parser.add_argument("--profile-all", action="store_true", help="profile every tag not yet cached, then stop")
    parser.add_argument("--profiles-file", type=Path, help="with --profile-all: the cache to fill (default: user's)")
    parser.add_argument("--workers", type=int, default=1, help="processes for --profile-all")
    parser.add_argument("--write-coverage", type=Path, metavar="DOC", help="regenerate DOC's coverage block")
    args = parser.parse_args(argv)
    if args.profile_all:
        path = args.profiles_file or profile_cache()
        found = profiles(sorted(timm_modules()), workers=args.workers, path=path)
        print(f"{sum(p is not None for p in found.values())}/{len(found)} tags profiled ({path})")
        return 0
    if args.write_coverage is not None:
        changed = write_coverage(args.write_coverage, catalog(results_dir=args.results_dir, measured=False))
        print(f"{args.write_coverage}: {'regenerated' if changed else 'already current'}")
        return 0
    try:
        entries = catalog(
            args.pattern, args.family, args.pretrained_on, args.max_params, args.with_head, args.status,
            args.results_dir,
        )  # fmt: skip
    except ValueError as error:
        parser.error(str(error))
    if not entries:
        print("no pretrained timm tag matches", file=sys.stderr)
        return 1
    try:
        if args.json:
            print(json.dumps([asdict(e) for e in entries], indent=1))
        else:
            print(table(entries, shutil.get_terminal_size((160, 24)).columns))
            counts = Counter(e.status for e in entries)
            print(f"\n{len(entries)} tag(s): " + ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s]))
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
