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
from typing import NoReturn

import torch
from huggingface_hub import CommitOperationAdd, HfApi, ModelCard, get_token
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.utils import validate_repo_id
from safetensors import SafetensorError, safe_open
from tqdm.auto import tqdm

from conversion.model_card import REPO_ID_PLACEHOLDER
from conversion.parity_record import read_parity_record, stale_parity_problems, weight_files
from conversion.remote_code import import_problems
from conversion.staging import exit_on_termination, phase
from conversion.verify import run_folder
from vitzoo_hf import AUTO_CLASS_NAMES

REQUIRED = ("config.json", "preprocessor_config.json", "README.md")
# What a converted folder (or a Trainer save of one) holds; anything else needs --allow-extra-files.
FOLDER_FILES = re.compile(
    r"(config\.json|preprocessor_config\.json|README\.md|vitzoo_parity\.json|model\.safetensors"
    r"|model-\d{5}-of-\d{5}\.safetensors|model\.safetensors\.index\.json|[A-Za-z_][A-Za-z0-9_]*\.py)"
)
TOKEN_TEXT = re.compile(r"hf_[A-Za-z0-9_]{8,}")
REPO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


class PublishError(RuntimeError):
    """A folder that must not be published, or a publication that failed; the message says why."""


@dataclass
class Target:
    folder: Path
    repo_id: str


def _classes_in(path: Path) -> set[str]:
    try:
        return {node.name for node in ast.parse(path.read_text()).body if isinstance(node, ast.ClassDef)}
    except (SyntaxError, ValueError):
        return set()  # reported by import_problems


def _has_head(config: dict) -> bool:
    return any(name.endswith("ForImageClassification") for name in config.get("architectures") or [])


def validate(folder: Path, allow_extra_files: bool = False) -> list[str]:
    """Everything that can be checked without running the model; an empty list means publishable so far."""
    problems = upload_set_problems(folder, allow_extra_files)
    problems += [f"missing {name}" for name in REQUIRED if not (folder / name).is_file()]
    if problems:
        return problems
    config = json.loads((folder / "config.json").read_text())
    auto_map = config.get("auto_map", {})
    problems += [f"config.json auto_map lacks {cls}" for cls in AUTO_CLASS_NAMES if cls not in auto_map]
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


def _hidden(path: Path, folder: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(folder).parts)


def upload_set(folder: Path) -> list[Path]:
    """The one definition of what a publication sends (the plan lists exactly it): every file of the folder but
    hidden ones and those under hidden folders (caches, staging). Symbolic links are never followed."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink() and not _hidden(p, folder))


def upload_set_problems(folder: Path, allow_extra_files: bool) -> list[str]:
    """Symbolic links (they could point at a token file) are refused; so are files a converted folder does not
    hold, unless allowed explicitly."""
    problems = [
        f"{p.relative_to(folder)} is a symbolic link; links are never uploaded (copy the file in if it belongs)"
        for p in folder.rglob("*")
        if p.is_symlink() and not _hidden(p, folder)
    ]
    if not allow_extra_files:
        extra = [
            p.relative_to(folder).as_posix()
            for p in upload_set(folder)
            if p.parent != folder or not FOLDER_FILES.fullmatch(p.name)
        ]
        if extra:
            problems.append(
                f"files that are not part of a converted folder: {extra}; remove them, or pass "
                "--allow-extra-files to publish them too"
            )
    return problems


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
    skipped = sorted(p.relative_to(target.folder).as_posix() for p in target.folder.iterdir() if p.name.startswith("."))
    if skipped:
        lines.append(f"  not sent (hidden): {', '.join(skipped)}")
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
    """A folder that is not itself converted stands for the converted folders inside it; hidden ones (a
    converter's staging or an interrupted run's leftovers) are skipped with a note."""
    folders = []
    for path in paths:
        if (path / "config.json").is_file():
            folders.append(path)
        else:
            children = sorted(path.iterdir()) if path.is_dir() else []
            for hidden in (p for p in children if p.name.startswith(".") and p.is_dir()):
                print(f"note: skipping hidden folder {hidden} (staging or leftovers of an interrupted conversion)")
            inner = [p for p in children if not p.name.startswith(".") and (p / "config.json").is_file()]
            if not inner:
                raise PublishError(f"{path} is neither a converted folder nor a folder of them")
            folders += inner
    return folders


def check_repo_id(repo_id: str, flag: str) -> str:
    """ORG/NAME, validated by huggingface_hub's own rules, before anything runs."""
    org, _, name = repo_id.partition("/")
    try:
        if not org or not name or "/" in name:
            raise HFValidationError("it must have the form ORG/NAME")
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise PublishError(f"{flag} {repo_id!r} is not a valid repo id: {str(error).splitlines()[0]}") from error
    return repo_id


def targets_for(folders: list[Path], repo_id: str | None, org: str | None) -> list[Target]:
    if repo_id is not None:
        if len(folders) != 1:
            raise PublishError(f"--repo-id names one repo but {len(folders)} folders were given; use --org ORG.")
        return [Target(folders[0], check_repo_id(repo_id, "--repo-id"))]
    names = [folder.name for folder in folders]
    bad = [name for name in names if not REPO_NAME.match(name)]
    if bad:
        raise PublishError(f"folder names not usable as repo names: {bad} (letters, digits, '.', '_', '-'; <= 96)")
    return [Target(folder, check_repo_id(f"{org}/{folder.name}", "--org")) for folder in folders]


class RedactingParser(argparse.ArgumentParser):
    """argparse echoes unrecognised arguments in its error; a token pasted on the command line must not be."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {redact(message)}\n")


def redact(text: str) -> str:
    return TOKEN_TEXT.sub("hf_***", text)


def main(argv: list[str] | None = None) -> int:
    parser = RedactingParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--repo-id", help="ORG/NAME for a single folder")
    where.add_argument("--org", help="one repo per folder under this organisation, named after the folder")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the commit plan, upload nothing")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--revision", help="branch to commit to (created if missing)")
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
    parser.add_argument(
        "--allow-extra-files", action="store_true", help="publish files a converted folder does not hold, too"
    )
    parser.add_argument("--token", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.token is not None:
        parser.error(
            "--token is not accepted (command lines show up in process lists and logs): set HF_TOKEN or run "
            "`hf auth login`"
        )
    exit_on_termination()
    try:
        targets = targets_for(expand(args.folders), args.repo_id, args.org)
        print(
            "smoke test: each folder's code runs in a clean, offline process with no credentials in its environment "
            "(validation executes the folder's Python files)"
        )
        for target in targets:  # refuse everything before uploading anything
            problems = validate(target.folder, args.allow_extra_files)
            if problems:
                raise PublishError(f"{target.folder} is not publishable:\n  " + "\n  ".join(problems))
            smoke_test(target.folder)
    except (PublishError, RuntimeError, OSError, ValueError) as error:
        print(f"error: {redact(str(error))}", file=sys.stderr)
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
            phase("upload")
            sha, changed = publish(api, target, args.private, args.revision, args.create_pr)
        except Exception as error:  # HTTP, connection and validation errors alike end in the table
            failed = (target, redact(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"))
            break
        except KeyboardInterrupt:  # SIGTERM or Ctrl-C: a commit is atomic on the Hub, so the repo is as it was
            failed = (target, "interrupted before the commit completed; the repo is unchanged")
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
