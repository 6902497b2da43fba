"""Verify converted folders, then publish them to the Hugging Face Hub.

    python push_to_hub.py DIR [DIR ...] --repo-id ORG/NAME [--dry-run] [--private] [--revision BRANCH] [--create-pr]
    python push_to_hub.py DIR [DIR ...] --org ORG   # one repo per folder, named after it

A DIR that holds converted folders (rather than being one) stands for all of them. Before anything is
uploaded, every folder is validated (files, auto_map and architectures against the code files, import rules
of the remote code, model card metadata) and loaded as remote code in a clean process where it must run with
no missing or mismatched weights. The token comes from huggingface_hub's standard places (HF_TOKEN, the login
cache); it is never taken on the command line nor printed. Unchanged folders are a no-op. After each upload
the commit hash is printed with a usage snippet pinned to it.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import CommitOperationAdd, HfApi, ModelCard, get_token
from huggingface_hub.errors import HfHubHTTPError
from safetensors import SafetensorError, safe_open
from tqdm.auto import tqdm

from conversion.model_card import REPO_ID_PLACEHOLDER
from conversion.parity_record import read_parity_record, stale_parity_problems, weight_files
from conversion.remote_code import import_problems
from conversion.verify import run_folder

REQUIRED = ("config.json", "preprocessor_config.json", "README.md")
AUTO_CLASSES = ("AutoConfig", "AutoModel", "AutoModelForImageClassification", "AutoBackbone")
REPO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


class PublishError(RuntimeError):
    """A folder that must not be published, or a publication that failed; the message says why."""


@dataclass
class Target:
    folder: Path
    repo_id: str


def _classes_in(path: Path) -> set[str]:
    return {node.name for node in ast.parse(path.read_text()).body if isinstance(node, ast.ClassDef)}


def _has_head(config: dict) -> bool:
    return any(name.endswith("ForImageClassification") for name in config.get("architectures") or [])


def validate(folder: Path) -> list[str]:
    """Everything that can be checked without running the model; an empty list means publishable so far."""
    problems = [f"missing {name}" for name in REQUIRED if not (folder / name).is_file()]
    if problems:
        return problems
    config = json.loads((folder / "config.json").read_text())
    auto_map = config.get("auto_map", {})
    problems += [f"config.json auto_map lacks {cls}" for cls in AUTO_CLASSES if cls not in auto_map]
    references = list(auto_map.values()) + [
        f"{auto_map.get('AutoModel', 'x.y').split('.')[0]}.{name}" for name in config.get("architectures") or []
    ]
    if not config.get("architectures"):
        problems.append("config.json has no architectures")
    for reference in references:
        module, _, cls = reference.rpartition(".")
        code = folder / f"{module}.py"
        if not code.is_file():
            problems.append(f"{reference} points to missing code file {code.name}")
        elif cls not in _classes_in(code):
            problems.append(f"{reference}: {code.name} defines no class {cls}")
    for code in sorted(folder.glob("*.py")):
        problems += import_problems(code)
    for weights in weight_files(folder):
        try:
            with safe_open(str(weights), framework="pt") as handle:
                if not list(handle.keys()):
                    problems.append(f"{weights.name} holds no tensors")
        except (SafetensorError, OSError) as error:
            problems.append(f"{weights.name} is not a readable safetensors file ({error})")
    problems += stale_parity_problems(folder)
    card = ModelCard.load(folder / "README.md")
    for field in ("library_name", "pipeline_tag", "tags"):
        if not getattr(card.data, field, None):
            problems.append(f"model card metadata lacks {field}")
    return problems


def smoke_test(folder: Path) -> None:
    """Load through the Auto classes with trust_remote_code in a clean process and run one batch."""
    config = json.loads((folder / "config.json").read_text())
    size = config["image_size"]
    height, width = (size, size) if isinstance(size, int) else size
    with_head = _has_head(config)
    pixels = torch.randn(1, config.get("num_channels", 3), height, width)
    outputs = run_folder(folder, {"native": pixels}, with_head)
    if not all(torch.isfinite(value).all() for value in outputs.values()):
        raise PublishError(f"{folder} produces non-finite outputs")


def upload_set(folder: Path) -> list[Path]:
    """The files a publication sends: the folder's files, none hidden or under a hidden folder (caches)."""
    files = (p for p in folder.rglob("*") if p.is_file())
    return sorted(p for p in files if not any(part.startswith(".") for part in p.relative_to(folder).parts))


def operations(target: Target) -> list[CommitOperationAdd]:
    """One add per file of the upload set; the card's usage snippet gets the real repo id."""
    adds = []
    for path in upload_set(target.folder):
        name = path.relative_to(target.folder).as_posix()
        content: Path | bytes = path
        if name == "README.md":
            content = path.read_text().replace(f'"{REPO_ID_PLACEHOLDER}"', f'"{target.repo_id}"').encode()
        adds.append(CommitOperationAdd(path_in_repo=name, path_or_fileobj=content))
    return adds


def commit_plan(target: Target, revision: str | None) -> list[str]:
    files = upload_set(target.folder)
    lines = [f"repo {target.repo_id} @ {revision or 'main'}: {len(files)} files"]
    lines += [f"  {p.relative_to(target.folder)}  {p.stat().st_size:,} bytes" for p in files]
    return lines


def commit_message(folder: Path) -> str:
    config = json.loads((folder / "config.json").read_text())
    tag = config.get("timm_pretrained_tag")
    name = config.get("timm_model_name", folder.name) + (f".{tag}" if tag else "")
    record = read_parity_record(folder) or {}
    worst = max(record.get("max_abs_diff", {"none": float("nan")}).values())
    return f"Upload {name} (vitzoo_hf, timm {config.get('timm_version', '?')}, parity max abs diff {worst:.1e})"


def publish(api: HfApi, target: Target, private: bool, revision: str | None, create_pr: bool) -> tuple[str, bool]:
    """Create the repo if needed and commit the folder; returns (commit sha, changed)."""
    api.create_repo(target.repo_id, private=private, exist_ok=True)
    if revision:
        api.create_branch(target.repo_id, branch=revision, exist_ok=True)
    try:
        before = api.model_info(target.repo_id, revision=revision).sha
    except HfHubHTTPError:
        before = None
    info = api.create_commit(
        repo_id=target.repo_id,
        operations=operations(target),
        revision=revision,
        commit_message=commit_message(target.folder),
        create_pr=create_pr,
    )
    return info.oid, info.oid != before


def usage_snippet(target: Target, sha: str) -> str:
    config = json.loads((target.folder / "config.json").read_text())
    auto = "AutoModelForImageClassification" if _has_head(config) else "AutoModel"
    return (
        f"from transformers import {auto}\n"
        f'model = {auto}.from_pretrained("{target.repo_id}", trust_remote_code=True, revision="{sha}")'
    )


def expand(paths: list[Path]) -> list[Path]:
    """A folder that is not itself converted stands for the converted folders inside it."""
    folders = []
    for path in paths:
        if (path / "config.json").is_file():
            folders.append(path)
        else:
            inner = sorted(p for p in path.iterdir() if (p / "config.json").is_file()) if path.is_dir() else []
            if not inner:
                raise PublishError(f"{path} is neither a converted folder nor a folder of them")
            folders += inner
    return folders


def targets_for(folders: list[Path], repo_id: str | None, org: str | None) -> list[Target]:
    if repo_id is not None:
        if len(folders) != 1:
            raise PublishError(f"--repo-id names one repo but {len(folders)} folders were given; use --org ORG.")
        return [Target(folders[0], repo_id)]
    names = [folder.name for folder in folders]
    bad = [name for name in names if not REPO_NAME.match(name)]
    if bad:
        raise PublishError(f"folder names not usable as repo names: {bad} (letters, digits, '.', '_', '-'; <= 96)")
    return [Target(folder, f"{org}/{folder.name}") for folder in folders]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--repo-id", help="ORG/NAME for a single folder")
    where.add_argument("--org", help="one repo per folder under this organisation, named after the folder")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the commit plan, upload nothing")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--revision", help="branch to commit to (created if missing)")
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    args = parser.parse_args(argv)
    try:
        targets = targets_for(expand(args.folders), args.repo_id, args.org)
        for target in targets:  # refuse everything before uploading anything
            problems = validate(target.folder)
            if problems:
                raise PublishError(f"{target.folder} is not publishable:\n  " + "\n  ".join(problems))
            smoke_test(target.folder)
    except (PublishError, RuntimeError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.dry_run:
        for target in targets:
            print("\n".join(commit_plan(target, args.revision)))
        print("dry run: nothing uploaded")
        return 0
    if get_token() is None:
        print(
            "error: no Hugging Face token: set HF_TOKEN or run `hf auth login` (never pass it here).", file=sys.stderr
        )
        return 1
    api = HfApi()
    done, failed = [], None
    for target in tqdm(targets, desc="publishing", unit="repo"):
        try:
            sha, changed = publish(api, target, args.private, args.revision, args.create_pr)
        except HfHubHTTPError as error:
            failed = (target, str(error).splitlines()[0])
            break
        done.append((target, sha, changed))
        state = "published" if changed else "unchanged (already on the Hub): nothing published"
        print(f"{target.repo_id}: {state} at {sha}\n{usage_snippet(target, sha)}")
    print("| repo | commit | status |\n|---|---|---|")
    for target, sha, changed in done:
        print(f"| {target.repo_id} | {sha} | {'published' if changed else 'unchanged'} |")
    if failed is not None:
        left = [t.repo_id for t in targets[len(done) + 1 :]]
        print(f"| {failed[0].repo_id} | - | failed: {failed[1]} |")
        print(f"stopped; earlier repos are intact; not attempted: {left}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
