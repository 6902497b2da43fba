"""timm's own Hub format as conversion input: a folder written by timm's ``save_for_hf``/``push_to_hf_hub``
(``config.json`` with ``architecture``, ``num_classes``, ``label_names``, ``model_args``, ``pretrained_cfg``, and
``model.safetensors`` or ``pytorch_model.bin``), local or a Hub repo named as timm, AutoTimm and TimmWrapper name
it (``timm/resnet50.a1_in1k``, ``hf-hub:user/my-finetune``, ``hf_hub:...@revision``).

Everything a user's own timm fine-tune needs is read from it, so it converts without naming anything: the
architecture and its constructor arguments, the class names, and the preprocessing, license and source of its
pretrained config. Hub repos are fetched through huggingface_hub (its cache, ``HF_HUB_OFFLINE``, ``--revision``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from timm.models._hub import load_model_config_from_path

from conversion.common import ConversionError

HUB_PREFIXES = ("hf-hub:", "hf_hub:")
# huggingface_hub's repo id rule: owner/name, letters, digits and -_. (no leading/trailing or doubled separators)
REPO_ID = re.compile(r"^[\w][\w.-]{0,95}/[\w][\w.-]{0,95}$")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# where the folder lives says nothing about the weights and is not for a published card or record
LOCAL_FIELDS = ("file", "source")


@dataclass(frozen=True)
class TimmFolder:
    """A timm-format model, as the converter takes it."""

    architecture: str
    tag: str | None
    weights: Path
    model_args: dict
    num_classes: int
    label_names: list[str] | None
    pretrained_cfg: dict  # overlaid on the architecture's default config when timm builds it
    hub_repo: str | None = None  # with its resolved commit, for Hub repos
    hub_commit: str | None = None

    @property
    def model_name(self) -> str:
        return f"{self.architecture}.{self.tag}" if self.tag else self.architecture

    def identity(self) -> dict:
        """What the parity record says the weights came from (no local path: the record is published)."""
        if self.hub_repo:
            return {"hub_repo": self.hub_repo, "commit": self.hub_commit}
        return {"timm_folder": True}


def hub_repo_of(name: str) -> tuple[str, str | None] | None:
    """(repo id, revision from ``@rev``) where ``name`` names a Hub repo; None for a timm name or a local folder.
    A prefix (``hf-hub:``) makes it a repo id whatever else exists; without one, ``owner/name`` is a repo id
    unless a folder of that path exists here."""
    prefixed = name.startswith(HUB_PREFIXES)
    rest = name.split(":", 1)[1] if prefixed else name
    if not prefixed and ("/" not in rest or Path(rest).exists()):
        return None
    repo, _, revision = rest.partition("@")
    if not REPO_ID.match(repo):
        raise ConversionError(
            f"{name!r} is not a Hub repo id: expected owner/name (e.g. timm/resnet50.a1_in1k or "
            "hf-hub:timm/resnet50.a1_in1k), optionally @revision. A local folder must exist at that path."
        )
    return repo, revision or None


def fetch_hub_repo(repo: str, revision: str | None) -> TimmFolder:
    """The repo's ``config.json`` and weights through huggingface_hub: from its cache when offline
    (``HF_HUB_OFFLINE=1``), else downloaded at ``revision`` (default: main)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo}" + (f"@{revision}" if revision else "")
    try:
        config = Path(hf_hub_download(repo, "config.json", revision=revision))
        for filename in WEIGHT_FILES:
            try:
                hf_hub_download(repo, filename, revision=revision)
                break
            except RemoteEntryNotFoundError:
                continue
        else:
            raise ConversionError(
                f"The Hub repo {where} has no {' or '.join(WEIGHT_FILES)}: not a timm model repo (timm's "
                "push_to_hf_hub writes model.safetensors)."
            )
    except RepositoryNotFoundError as error:
        raise ConversionError(
            f"The Hub has no model repo {repo} (or it is private and no token is set: `hf auth login`). A local "
            "folder must exist at the path given."
        ) from error
    except RevisionNotFoundError as error:
        message = f"The Hub repo {repo} has no revision {revision!r}; give a branch, tag or commit."
        raise ConversionError(message) from error
    except RemoteEntryNotFoundError as error:
        raise ConversionError(f"The Hub repo {where} has no config.json: not a timm model repo.") from error
    except LocalEntryNotFoundError as error:
        raise ConversionError(
            f"{where} is not in the local Hub cache and the Hub cannot be reached (HF_HUB_OFFLINE is set, or no "
            "network). Fetch it once online (`hf download " + repo + "`), or pass a local folder."
        ) from error
    folder = read_timm_folder(config.parent)
    # the cache keeps each revision's files under snapshots/<commit>/
    return TimmFolder(**{**folder.__dict__, "hub_repo": repo, "hub_commit": config.parent.name})


def read_timm_folder(path: Path) -> TimmFolder:
    """A local timm-format folder, parsed by timm's own reader; refused by name where it is not one."""
    path = Path(path)
    if not path.is_dir():
        raise ConversionError(f"{path} is not a folder.")
    if not (path / "config.json").is_file():
        raise ConversionError(
            f"{path} has no config.json: not a timm-format folder (timm's save_for_hf writes config.json and "
            "model.safetensors). For a bare state dict, pass the file with --checkpoint and name the architecture."
        )
    try:
        raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConversionError(f"{path}/config.json is not valid JSON ({error}).") from error
    if not isinstance(raw, dict) or "architecture" not in raw:
        kind = f" (it is a transformers config, model_type {raw['model_type']!r})" if "model_type" in raw else ""
        raise ConversionError(
            f"{path}/config.json is not timm's format: it has no 'architecture'{kind}. This converter reads "
            "timm's own folders (save_for_hf / push_to_hf_hub)."
        )
    pretrained_cfg, architecture, model_args = load_model_config_from_path(path)
    weights = next((path / name for name in WEIGHT_FILES if (path / name).is_file()), None)
    if weights is None:
        raise ConversionError(f"{path} has no {' or '.join(WEIGHT_FILES)} beside its config.json.")
    num_classes = int(pretrained_cfg.get("num_classes", raw.get("num_classes", 0)) or 0)
    return TimmFolder(
        architecture=architecture,
        tag=pretrained_cfg.get("tag") or None,
        weights=weights,
        model_args=dict(model_args),
        num_classes=num_classes,
        label_names=folder_labels(path, pretrained_cfg, num_classes),
        pretrained_cfg={k: v for k, v in pretrained_cfg.items() if k not in LOCAL_FIELDS},
    )


def folder_labels(path: Path, pretrained_cfg: dict, num_classes: int) -> list[str] | None:
    """Class names in classifier order: ``label_descriptions`` of the ``label_names`` where timm gives them
    (ImageNet synsets -> readable names), else the names; a dict of names must cover every class."""
    names = pretrained_cfg.get("label_names")
    if not names:
        return None
    if isinstance(names, dict):
        indices = {int(k): v for k, v in names.items()}
        if sorted(indices) != list(range(num_classes)):
            raise ConversionError(
                f"{path}/config.json: label_names covers classes {sorted(indices)[:5]}... but the head has "
                f"{num_classes}; give a name for every class."
            )
        names = [indices[i] for i in range(num_classes)]
    names = [str(name) for name in names]
    if len(names) != num_classes:
        raise ConversionError(
            f"{path}/config.json holds {len(names)} label_names but its head has {num_classes} classes."
        )
    descriptions = pretrained_cfg.get("label_descriptions") or {}
    return [str(descriptions.get(name, name)) for name in names]
