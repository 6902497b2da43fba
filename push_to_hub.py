"""Verify converted folders, then publish them to the Hugging Face Hub.

    python push_to_hub.py DIR [DIR ...] --repo-id ORG/NAME [--dry-run] [--private] [--revision BRANCH] [--create-pr]
    python push_to_hub.py DIR [DIR ...] --org ORG   # one repo per folder, named after it
    python push_to_hub.py --list --org ORG          # what ORG has published, as each repo's files say it

A DIR that holds converted folders (rather than being one) stands for all of them. Each folder's upload set is
first copied into a private snapshot (hashed as it is read); the snapshot is what is validated (files, auto_map and
architectures against the code files, import rules, the parity record against the weights and the card), what the
smoke test loads as remote code, and what is uploaded, byte for byte. Code files that are not byte-identical to a
vitzoo_hf release's are refused unless --trust-code is given; the smoke test runs isolated (conversion/sandbox.py:
no credentials, no other process, no network) wherever this machine allows it, and code that is not a release's
never runs without that isolation. The token comes from huggingface_hub's standard places (HF_TOKEN, the login
cache); it is never taken on the command line nor printed. A repo that already holds exactly the folder is left as
it is. After each upload the commit hash is printed with a usage snippet pinned to it.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
import sys
import tempfile
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import torch
from huggingface_hub import CommitOperationAdd, HfApi, ModelCard, get_token
from huggingface_hub.errors import HFValidationError, RepositoryNotFoundError, RevisionNotFoundError
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import validate_repo_id
from safetensors import SafetensorError, safe_open
from tqdm.auto import tqdm

from conversion.code_hashes import unknown_code
from conversion.model_card import REPO_ID_PLACEHOLDER
from conversion.parity_record import (
    PARITY_FILE,
    card_problems,
    read_parity_record,
    stale_parity_problems,
    weight_files,
)
from conversion.remote_code import import_problems, sibling_closure
from conversion.sandbox import unavailable_reason
from conversion.staging import Staging, clean_stale, exit_on_termination, phase
from conversion.verify import run_folder
from vitzoo_hf import AUTO_CLASS_NAMES

REQUIRED = ("config.json", "preprocessor_config.json", "README.md")
# What a converted folder (or a Trainer save of one) holds besides the code files its auto_map reaches; anything
# else needs --allow-extra-files.
FOLDER_FILES = re.compile(
    r"(config\.json|preprocessor_config\.json|README\.md|vitzoo_parity\.json|model\.safetensors"
    r"|model-\d{5}-of-\d{5}\.safetensors|model\.safetensors\.index\.json)"
)
TOKEN_TEXT = re.compile(r"hf_[A-Za-z0-9_]{8,}")
REPO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


class PublishError(RuntimeError):
    """A folder that must not be published, or a publication that failed; the message says why."""


@dataclass
class Target:
    folder: Path
    repo_id: str
    snapshot: Snapshot | None = None


@dataclass
class Snapshot:
    """A private copy of a folder's upload set (the card holding the real repo id), with the SHA-256 and git blob
    id of every file: what is validated, smoke-tested and uploaded is this copy, so a job still writing into the
    folder cannot slip other bytes in between."""

    path: Path
    staging: Staging
    sha256: dict[str, str] = field(default_factory=dict)
    blob_id: dict[str, str] = field(default_factory=dict)

    @classmethod
    def take(cls, folder: Path, repo_id: str) -> Snapshot:
        try:
            staging = Staging(folder)  # beside the folder: same filesystem, and cleaned like a converter's staging
        except OSError:  # a read-only location
            staging = Staging(Path(tempfile.mkdtemp(prefix="vitzoo-publish-")) / folder.name)
        snapshot = cls(staging.path, staging)
        try:
            for source in upload_set(folder):
                snapshot._copy(folder, source, repo_id)
        except BaseException:
            snapshot.discard()
            raise
        return snapshot

    def _copy(self, folder: Path, source: Path, repo_id: str) -> None:
        name = source.relative_to(folder).as_posix()
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        before = source.stat()
        with source.open("rb") as reader:
            if name == "README.md":  # the card's usage snippet gets the real repo id
                card = reader.read().decode().replace(f'"{REPO_ID_PLACEHOLDER}"', f'"{repo_id}"').encode()
                blocks, size = iter([card]), len(card)
            else:
                blocks, size = iter(lambda: reader.read(1 << 22), b""), before.st_size
            digest, blob = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % size)  # git's blob id, as the Hub lists it
            with target.open("wb") as writer:
                for block in blocks:
                    writer.write(block)
                    digest.update(block)
                    blob.update(block)
        after = source.stat()
        if (before.st_size, before.st_mtime_ns, before.st_ino) != (after.st_size, after.st_mtime_ns, after.st_ino):
            raise PublishError(
                f"{folder / name} changed while it was being read (is a job still writing into {folder}?); publish "
                "it once nothing writes there any more."
            )
        self.sha256[name], self.blob_id[name] = digest.hexdigest(), blob.hexdigest()

    def discard(self) -> None:
        self.staging.discard()


def _classes_in(path: Path) -> set[str]:
    try:
        return {node.name for node in ast.parse(path.read_text()).body if isinstance(node, ast.ClassDef)}
    except (SyntaxError, ValueError):
        return set()  # reported by import_problems


def _has_head(config: dict) -> bool:
    return any(name.endswith("ForImageClassification") for name in config.get("architectures") or [])


def _model_type_of(code: Path, cls: str) -> str | None:
    """The ``model_type = "..."`` a configuration class declares in its own body."""
    try:
        tree = ast.parse(code.read_text())
    except (SyntaxError, ValueError, OSError):
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for item in node.body:
                if isinstance(item, ast.Assign) and any(getattr(t, "id", None) == "model_type" for t in item.targets):
                    return item.value.value if isinstance(item.value, ast.Constant) else None
    return None


def config_problems(folder: Path, config: dict) -> list[str]:
    """Fields the loaders and the smoke test rely on, checked before anything reads them."""
    problems = []
    size = config.get("image_size")
    sizes = [size] if isinstance(size, int) else size if isinstance(size, list) and len(size) == 2 else None
    if not sizes or not all(isinstance(s, int) and not isinstance(s, bool) and 0 < s <= 16384 for s in sizes):
        problems.append(f"config.json image_size must be a positive size (an int or [height, width]), got {size!r}")
    module, _, cls = config.get("auto_map", {}).get("AutoConfig", "").rpartition(".")
    declared = _model_type_of(folder / f"{module}.py", cls) if module else None
    if declared is not None and config.get("model_type") != declared:
        problems.append(
            f"config.json model_type is {config.get('model_type')!r} but its config class {cls} is {declared!r}: "
            "the folder mixes families; reconvert it"
        )
    labels = config.get("id2label") or {}
    bad = sorted({str(v) for v in labels.values() if any(unicodedata.category(c) == "Cc" for c in str(v))})
    if bad:
        problems.append(f"config.json id2label holds control characters in {bad}: give plain label names")
    return problems


def folder_problems(folder: Path, allow_extra_files: bool) -> list[str]:
    """Missing required files first (they explain whatever else looks wrong), else the upload set's problems."""
    missing = [f"missing {name}" for name in REQUIRED if not (folder / name).is_file()]
    return missing or upload_set_problems(folder, allow_extra_files)


def validate(folder: Path, allow_extra_files: bool = False, hashes: dict[str, str] | None = None) -> list[str]:
    """Everything that can be checked without running the model; an empty list means publishable so far.
    ``hashes`` (file name -> SHA-256, a snapshot's) saves hashing the weights again."""
    problems = folder_problems(folder, allow_extra_files)
    if problems:
        return problems
    config = json.loads((folder / "config.json").read_text())
    problems += config_problems(folder, config)
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
    problems += stale_parity_problems(folder, hashes) + card_problems(folder)
    card = ModelCard.load(folder / "README.md")
    for name in ("library_name", "pipeline_tag", "tags"):
        if not getattr(card.data, name, None):
            problems.append(f"model card metadata lacks {name}")
    return problems


def smoke_test(folder: Path, isolate: bool) -> None:
    """Load through the Auto classes with trust_remote_code in a clean process and run one batch; ``isolate``:
    in conversion/sandbox.py's namespaces."""
    config = json.loads((folder / "config.json").read_text())
    size = config["image_size"]
    height, width = (size, size) if isinstance(size, int) else size
    with_head = _has_head(config)
    pixels = torch.randn(1, config.get("num_channels", 3), height, width)
    outputs = run_folder(folder, {"native": pixels}, with_head, isolate=isolate)
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
        code = code_files(folder)
        extra = [
            p.relative_to(folder).as_posix()
            for p in upload_set(folder)
            if p.parent != folder or not (FOLDER_FILES.fullmatch(p.name) or p.name in code)
        ]
        if extra:
            problems.append(
                f"files that are not part of a converted folder: {extra}; remove them, or pass "
                "--allow-extra-files to publish them too"
            )
    return problems


def code_files(folder: Path) -> set[str]:
    """The code files a folder's auto_map entries (config and image processor) reach through their imports."""
    roots = set()
    for name in ("config.json", "preprocessor_config.json"):
        try:
            auto_map = json.loads((folder / name).read_text()).get("auto_map") or {}
        except (OSError, ValueError):
            continue
        roots |= {f"{reference.rpartition('.')[0]}.py" for reference in auto_map.values() if isinstance(reference, str)}
    present = [folder / root for root in sorted(roots) if (folder / root).is_file()]
    try:
        return {path.name for path in sibling_closure(present) if path.is_file()}
    except (SyntaxError, ValueError, OSError):  # an unparsable file: import_problems names it
        return {path.name for path in folder.glob("*.py")}


def operations(target: Target) -> list[CommitOperationAdd]:
    """One add per file of the snapshot: the bytes that were validated and smoke-tested."""
    snapshot = target.snapshot
    return [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=snapshot.path / name) for name in sorted(snapshot.sha256)
    ]


def commit_plan(target: Target, revision: str | None) -> list[str]:
    snapshot = target.snapshot
    lines = [f"repo {target.repo_id} @ {revision or 'main'}: {len(snapshot.sha256)} files"]
    lines += [f"  {name}  {(snapshot.path / name).stat().st_size:,} bytes" for name in sorted(snapshot.sha256)]
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


def remote_state(api: HfApi, target: Target, revision: str | None) -> tuple[str | None, list[str]]:
    """What the repo holds at ``revision``: its commit and the files of the snapshot it does not hold as they are
    here (compared by the Hub's own ids: SHA-256 for LFS files, git blob ids otherwise). (None, all) when the repo
    or the revision does not exist yet."""
    snapshot = target.snapshot
    try:
        sha = api.model_info(target.repo_id, revision=revision).sha
    except (RepositoryNotFoundError, RevisionNotFoundError):
        return None, sorted(snapshot.sha256)
    remote = {
        e.path: e for e in api.list_repo_tree(target.repo_id, revision=sha, recursive=True) if isinstance(e, RepoFile)
    }
    differ = []
    for name in sorted(snapshot.sha256):
        entry = remote.get(name)
        held = None if entry is None else entry.lfs.sha256 if entry.lfs else entry.blob_id
        if held != (snapshot.sha256[name] if entry is not None and entry.lfs else snapshot.blob_id[name]):
            differ.append(name)
    return sha, differ


class Publication:
    """One repo's publication, remembering whether its commit request went out (for what an interruption means)."""

    def __init__(self, api: HfApi, target: Target) -> None:
        self.api, self.target, self.sent = api, target, False

    def run(self, private: bool, revision: str | None, create_pr: bool) -> tuple[str, bool]:
        """Create the repo if needed and commit the snapshot unless the repo holds it already; returns (commit
        sha, changed)."""
        api, target = self.api, self.target
        api.create_repo(target.repo_id, private=private, exist_ok=True)
        if revision:
            api.create_branch(target.repo_id, branch=revision, exist_ok=True)
        before, differ = remote_state(api, target, revision)
        if before is not None and not differ:
            return before, False
        if before is not None:
            held = len(target.snapshot.sha256) - len(differ)
            print(f"{target.repo_id} at {before} holds {held} of this folder's {len(target.snapshot.sha256)} files; "
                  f"sending {', '.join(differ)}")  # fmt: skip
        phase("upload")
        self.sent = True
        info = api.create_commit(
            repo_id=target.repo_id,
            operations=operations(target),
            revision=revision,
            commit_message=commit_message(target.snapshot.path),
            create_pr=create_pr,
        )
        return info.oid, info.oid != before


def usage_snippet(target: Target, sha: str) -> str:
    config = json.loads((target.snapshot.path / "config.json").read_text())
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
        if message.startswith("unrecognized arguments: "):  # a mistyped --token's value is a secret of any shape
            names = [a.split("=")[0] for a in message.removeprefix("unrecognized arguments: ").split() if a[:1] == "-"]
            message = f"unrecognized arguments (values not shown: one may be a secret): {' '.join(names) or '-'}"
        self.exit(2, f"{self.prog}: error: {redact(message)}\n")


def redact(text: str) -> str:
    return TOKEN_TEXT.sub("hf_***", text)


def prepare(targets: list[Target], allow_extra_files: bool, trust_code: bool) -> None:
    """Snapshot, validate and smoke-test every target (each gets its ``snapshot``); raises on the first refusal."""
    isolation = unavailable_reason()
    print(
        "smoke test: each folder's code runs in a clean process with no credentials in its environment, "
        + ("isolated (no network, no other process, credential folders hidden)" if isolation is None else
           f"NOT isolated ({isolation}): only code files of a vitzoo_hf release will run")
    )  # fmt: skip
    for target in targets:  # refuse everything before uploading anything
        problems = folder_problems(target.folder, allow_extra_files)  # links are seen here, not in the snapshot
        if problems:
            raise PublishError(f"{target.folder} is not publishable:\n  " + "\n  ".join(problems))
        for line in clean_stale(target.folder):
            print(line)
        target.snapshot = Snapshot.take(target.folder, target.repo_id)
        snapshot = target.snapshot
        problems = validate(snapshot.path, allow_extra_files, snapshot.sha256)
        if problems:
            raise PublishError(f"{target.folder} is not publishable:\n  " + "\n  ".join(problems))
        foreign = unknown_code(snapshot.path)
        files = (
            f"{', '.join(foreign)} ({'is' if len(foreign) == 1 else 'are'} not byte-identical to a vitzoo_hf release's)"
        )
        if foreign and not trust_code:
            raise PublishError(
                f"{target.folder}: {files}, and the smoke test would run it. Read the code; if you trust it, pass "
                "--trust-code (it then runs isolated)."
            )
        if foreign and isolation is not None:
            raise PublishError(
                f"{target.folder}: {files}, and this machine cannot run code isolated ({isolation}); such code never "
                "runs unisolated. Publish from a Linux machine that allows user namespaces (or inside a container)."
            )
        smoke_test(snapshot.path, isolate=isolation is None)


EXAMPLES = """examples (vitzoo-push is the same as python push_to_hub.py; the token comes from `hf auth login`):
  # check everything and print the commit plan, upload nothing
  vitzoo-push out/r50 --repo-id my-org/resnet50-vitzoo --dry-run
  # publish one folder, or every converted folder under out/ as my-org/<folder name>
  vitzoo-push out/r50 --repo-id my-org/resnet50-vitzoo
  vitzoo-push out/ --org my-org --private
  # what my-org has published: timm source, parity, transformers range, last commit
  vitzoo-push --list --org my-org
"""


@dataclass(frozen=True)
class Published:
    """One converted repo as its files at its last commit say it."""

    repo_id: str
    commit: str
    last_modified: str
    timm_model: str
    max_abs_diff: float
    verified_blocks: str
    transformers: str


MINIMUM_PATTERN = re.compile(r"^MINIMUM_TRANSFORMERS = \((\d+), (\d+)\)", re.MULTILINE)


def list_published(api: HfApi, org: str) -> list[Published]:
    """``org``'s public repos the card tags ``vitzoo_hf`` (the Hub's own index, through huggingface_hub), each read at
    its listed commit: the parity record's timm source and largest difference, and the transformers range its code
    enforces (``MINIMUM_TRANSFORMERS`` in its ``common_compat.py``)."""
    listed = []
    for info in api.list_models(author=org, filter="vitzoo_hf", expand=["sha", "lastModified"]):
        try:
            record = read_parity_record(Path(api.hf_hub_download(info.id, PARITY_FILE, revision=info.sha)).parent) or {}
            compat = Path(api.hf_hub_download(info.id, "common_compat.py", revision=info.sha)).read_text()
        except (OSError, ValueError) as error:
            raise PublishError(f"{info.id} is tagged vitzoo_hf but its files cannot be read: {error}") from error
        minimum = MINIMUM_PATTERN.search(compat)
        listed.append(
            Published(
                repo_id=info.id,
                commit=info.sha,
                last_modified=info.last_modified.isoformat() if info.last_modified else "-",
                timm_model=record.get("timm_model", "-"),
                max_abs_diff=max(record.get("max_abs_diff", {0: float("nan")}).values()),
                verified_blocks=record.get("verified_blocks", "-"),
                transformers=f">= {minimum[1]}.{minimum[2]}" if minimum else "unknown (no MINIMUM_TRANSFORMERS)",
            )
        )
    return listed


def print_published(org: str, listed: list[Published]) -> None:
    if not listed:
        print(f"{org} has no public repo tagged vitzoo_hf")
        return
    header = ("repo", "timm source", "max abs diff", "verified", "transformers", "commit", "last modified")
    rows = [
        (p.repo_id, p.timm_model, f"{p.max_abs_diff:.1e}", p.verified_blocks, p.transformers, p.commit[:12],
         p.last_modified[:19])
        for p in listed
    ]  # fmt: skip
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = RedactingParser(
        description=__doc__.split("\n\n")[0], epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folders", nargs="*", type=Path)
    parser.add_argument("--list", action="store_true", help="with --org: list ORG's published vitzoo_hf repos")
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
    parser.add_argument(
        "--trust-code",
        action="store_true",
        help="run and publish code files that are not a vitzoo_hf release's (the smoke test still runs them isolated)",
    )
    parser.add_argument("--token", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.token is not None:
        parser.error(
            "--token is not accepted (command lines show up in process lists and logs): set HF_TOKEN or run "
            "`hf auth login`"
        )
    if args.list:
        if args.org is None or args.folders:
            parser.error("--list takes --org ORG and no folders: it lists what ORG has published")
        try:
            print_published(args.org, list_published(HfApi(), args.org))
        except (PublishError, OSError, ValueError) as error:
            print(f"error: {redact(str(error))}", file=sys.stderr)
            return 1
        return 0
    if not args.folders:
        parser.error("name the converted folder(s) to publish (or --list --org ORG)")
    exit_on_termination()
    targets: list[Target] = []
    try:
        targets = targets_for(expand(args.folders), args.repo_id, args.org)
        prepare(targets, args.allow_extra_files, args.trust_code)
        return upload(targets, args)
    except (PublishError, RuntimeError, OSError, ValueError) as error:
        print(f"error: {redact(str(error))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted before anything was uploaded", file=sys.stderr)
        return 130
    finally:
        for target in targets:
            if target.snapshot is not None:
                target.snapshot.discard()


def upload(targets: list[Target], args: argparse.Namespace) -> int:
    """Publish the prepared targets in order; the table at the end says what each repo holds now."""
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
        publication = Publication(api, target)
        try:
            sha, changed = publication.run(args.private, args.revision, args.create_pr)
        except Exception as error:  # HTTP, connection and validation errors alike end in the table
            failed = (target, redact(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"))
            break
        except KeyboardInterrupt:  # SIGTERM or Ctrl-C
            failed = (target, INTERRUPTED_AFTER_SENDING if publication.sent else INTERRUPTED_BEFORE_SENDING)
            break
        done.append((target, sha, changed))
        state = "published" if changed else "unchanged: the repo already holds exactly this folder, nothing published"
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


INTERRUPTED_BEFORE_SENDING = "interrupted before the commit was sent; the repo is unchanged"
INTERRUPTED_AFTER_SENDING = (
    "interrupted after the commit was sent: it may still complete on the Hub. Run the same command again: it says "
    "what the repo holds and sends only what is missing"
)


if __name__ == "__main__":
    sys.exit(main())
