"""push_to_hub.py against the Hub stand-in: validation before upload, publishing, pinned reloads, safety."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from conversion.parity_record import CARD_SECTION
from conversion.verify import clean_env
from tests import hub_server
from tests.helpers import convert_perturbed
from vitzoo_hf.common_compat import MINIMUM_TRANSFORMERS

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_test_secret_token_123"

RELOAD_CHILD = r"""
import sys
for hidden in ("vitzoo_hf", "timm", "conversion", "tests"):
    sys.modules[hidden] = None
import torch
from transformers import AutoModel
source, revision = sys.argv[1], sys.argv[2] or None
model = AutoModel.from_pretrained(source, trust_remote_code=True, revision=revision).eval()
with torch.no_grad():
    out = model(torch.linspace(-1, 1, 3 * 160 * 160).reshape(1, 3, 160, 160))
print(out.pooler_output.flatten()[:8].tolist())
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return convert_perturbed("test_vit.r160_in1k", tmp_path_factory.mktemp("converted"))


@pytest.fixture
def hub(tmp_path: Path):
    server, state = hub_server.start(TOKEN)
    env = hub_server.client_env(server, tmp_path / "hf_home", clean_env(), HF_TOKEN=TOKEN)
    yield state, env
    server.shutdown()


def push(env: dict, *args: str) -> subprocess.CompletedProcess:
    """One publisher run; whatever happens, its output never shows the token."""
    command = [sys.executable, str(ROOT / "push_to_hub.py"), *args]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert TOKEN not in result.stdout + result.stderr
    return result


def posts(state: hub_server.HubState) -> list[str]:
    return [path for method, path, _ in state.requests if method == "POST"]


def reload(env: dict, source: str, revision: str = "") -> list[float]:
    run = subprocess.run(
        [sys.executable, "-c", RELOAD_CHILD, source, revision], cwd="/", env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_publish_then_reload_pinned_in_a_fresh_process(folder: Path, hub) -> None:
    state, env = hub
    run = push(env, str(folder), "--repo-id", "vitzoo/tiny-vit")
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    assert TOKEN not in output
    repo = state.repos["vitzoo/tiny-vit"]
    sha = repo.refs["main"]
    assert f'revision="{sha}"' in run.stdout and f"published at {sha}" in run.stdout
    published = repo.commits[sha]
    local = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    # The card's usage snippet names the real repo, filled in on the way up; everything else is sent as it is.
    card = local["README.md"].decode()
    assert 'from_pretrained("REPO_ID"' in card
    local["README.md"] = card.replace('"REPO_ID"', '"vitzoo/tiny-vit"').encode()
    assert {k: v for k, v in published.items() if k != ".gitattributes"} == local
    assert 'from_pretrained("vitzoo/tiny-vit", trust_remote_code=True)' in published["README.md"].decode()
    assert all(authorised for method, _, authorised in state.requests if method == "POST")
    # A user's machine: only torch + transformers, loading by repo id pinned to the published commit.
    from_hub = reload(env, "vitzoo/tiny-vit", sha)
    assert from_hub == pytest.approx(reload(env, str(folder)), abs=1e-6)

    again = push(env, str(folder), "--repo-id", "vitzoo/tiny-vit")
    assert again.returncode == 0 and "unchanged: the repo already holds exactly this folder" in again.stdout
    assert repo.refs["main"] == sha and len(repo.commits) == 2  # the initial commit and ours


def test_dry_run_prints_the_plan_and_uploads_nothing(folder: Path, hub) -> None:
    state, env = hub
    run = push(env, str(folder), "--repo-id", "vitzoo/tiny-vit", "--dry-run", "--revision", "v1")
    assert run.returncode == 0, run.stderr[-2000:]
    size = (folder / "model.safetensors").stat().st_size
    count = sum(p.is_file() for p in folder.iterdir())
    assert f"repo vitzoo/tiny-vit @ v1: {count} files" in run.stdout
    assert f"model.safetensors  {size:,} bytes" in run.stdout and "dry run: nothing uploaded" in run.stdout
    assert posts(state) == []


def test_branch_and_pull_request(folder: Path, hub) -> None:
    state, env = hub
    assert push(env, str(folder), "--repo-id", "vitzoo/tiny-vit", "--revision", "dev").returncode == 0
    assert push(env, str(folder), "--repo-id", "vitzoo/tiny-vit", "--create-pr").returncode == 0
    refs = state.repos["vitzoo/tiny-vit"].refs
    assert "dev" in refs and "refs/pr/1" in refs
    assert (
        refs["main"] != refs["dev"] and "model.safetensors" not in state.repos["vitzoo/tiny-vit"].commits[refs["main"]]
    )


def _broken(folder: Path, tmp_path: Path, how: str) -> Path:
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy)
    if how == "missing file":
        (copy / "preprocessor_config.json").unlink()
    elif how == "bad import":
        layers = copy / "token_layers.py"
        layers.write_text("import requests\n" + layers.read_text())
    elif how == "truncated weights":
        weights = copy / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:5000])
    elif how == "weights missing a tensor":  # a user's folder without a parity claim: the smoke test catches it
        (copy / "vitzoo_parity.json").unlink()
        card = copy / "README.md"
        card.write_text(card.read_text().split(CARD_SECTION)[0])
        tensors = load_file(copy / "model.safetensors")
        tensors.pop("vit.blocks.0.attn.qkv.weight")
        save_file(tensors, copy / "model.safetensors", metadata={"format": "pt"})
    elif how == "parity record deleted":
        (copy / "vitzoo_parity.json").unlink()
    elif how == "card figure edited":
        card = copy / "README.md"
        head, table = card.read_text().split(CARD_SECTION)
        card.write_text(head + CARD_SECTION + re.sub(r"\| \d\.\d\de[-+]\d\d \|", "| 3.00e-09 |", table, count=1))
    elif how == "record figure edited":
        record = json.loads((copy / "vitzoo_parity.json").read_text())
        record["max_abs_diff"] = dict.fromkeys(record["max_abs_diff"], 3e-9)
        (copy / "vitzoo_parity.json").write_text(json.dumps(record))
    elif how == "record bound to nothing":
        record = json.loads((copy / "vitzoo_parity.json").read_text())
        record["weights"] = {}
        (copy / "vitzoo_parity.json").write_text(json.dumps(record))
    elif how == "extra code file":
        (copy / "helpers.py").write_text("x = 1\n")
    elif how == "mixed families":
        config = json.loads((copy / "config.json").read_text())
        (copy / "config.json").write_text(json.dumps({**config, "model_type": "vitzoo_eva"}))
    elif how == "control characters in labels":
        config = json.loads((copy / "config.json").read_text())
        (copy / "config.json").write_text(json.dumps({**config, "id2label": {"0": "cat\x1b[2J"}}))
    elif how == "no image size":
        config = json.loads((copy / "config.json").read_text())
        (copy / "config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "image_size"}))
    elif how == "weights changed after conversion":
        tensors = load_file(copy / "model.safetensors")
        tensors["vit.blocks.0.attn.qkv.weight"] += 1
        save_file(tensors, copy / "model.safetensors", metadata={"format": "pt"})
    return copy


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("missing file", "missing preprocessor_config.json"),
        ("bad import", "token_layers.py:1 imports requests"),
        ("weights changed after conversion", "vitzoo_parity.json was verified on other weights"),
        ("truncated weights", "model.safetensors is not a readable safetensors file"),
        ("weights missing a tensor", "weights do not match the config"),
        ("parity record deleted", "README.md claims parity with timm ('## Parity with timm') but vitzoo_parity.json"),
        ("card figure edited", "README.md's parity table differs from vitzoo_parity.json for"),
        ("record figure edited", "README.md's parity table differs from vitzoo_parity.json for"),
        ("record bound to nothing", "vitzoo_parity.json names no weight files"),
        ("extra code file", "files that are not part of a converted folder: ['helpers.py']"),
        ("mixed families", "model_type is 'vitzoo_eva' but its config class VitzooViTConfig is 'vitzoo_vit'"),
        ("control characters in labels", "id2label holds control characters in ['cat\\x1b[2J']"),
        ("no image size", "config.json image_size must be a positive size (an int or [height, width]), got None"),
    ],
)
def test_invalid_folders_are_refused_before_any_upload(folder: Path, hub, tmp_path: Path, how, message) -> None:
    state, env = hub
    run = push(env, str(_broken(folder, tmp_path, how)), "--repo-id", "vitzoo/tiny-vit")
    assert run.returncode == 1 and message in run.stderr, run.stderr[-2000:]
    assert posts(state) == []


def test_no_token_is_a_clear_error(folder: Path, hub) -> None:
    state, env = hub
    env = {k: v for k, v in env.items() if k != "HF_TOKEN"}
    run = push(env, str(folder), "--repo-id", "vitzoo/tiny-vit")
    assert run.returncode == 1 and "no Hugging Face token: set HF_TOKEN" in run.stderr
    assert posts(state) == []


def test_many_folders_under_an_org_stop_cleanly_on_failure(folder: Path, hub, tmp_path: Path) -> None:
    state, env = hub
    root = tmp_path / "many"
    for name in ("a-model", "b-model", "c-model"):
        shutil.copytree(folder, root / name)
    state.forbidden.add("vitzoo/b-model")
    run = push(env, str(root), "--org", "vitzoo")
    assert run.returncode == 1
    assert "| vitzoo/a-model |" in run.stdout and "| vitzoo/b-model | - | failed:" in run.stdout
    assert "earlier repos are intact; not attempted: ['vitzoo/c-model']" in run.stderr
    assert "model.safetensors" in state.repos["vitzoo/a-model"].commits[state.repos["vitzoo/a-model"].refs["main"]]
    assert "vitzoo/c-model" not in state.repos
    assert TOKEN not in run.stdout + run.stderr


def test_token_is_not_accepted_on_the_command_line(folder: Path, hub) -> None:
    _, env = hub
    run = push(env, str(folder), "--repo-id", "vitzoo/x", "--token", TOKEN)
    assert run.returncode == 2 and "--token is not accepted" in run.stderr and "HF_TOKEN" in run.stderr
    stray = push(env, str(folder), "--repo-id", "vitzoo/x", "--tokn", TOKEN)  # argparse echoes unknown arguments
    assert (
        stray.returncode == 2
        and "unrecognized arguments (values not shown: one may be a secret): --tokn" in stray.stderr
    )
    assert os.environ.get("HF_TOKEN") != TOKEN


def test_list_shows_what_an_org_published_from_the_repos_own_files(folder: Path, hub, tmp_path: Path) -> None:
    """--list --org reads the Hub's listing (repos whose card tags vitzoo_hf) and each repo's parity record and code
    at its listed commit; other orgs' repos and untagged ones are not listed."""
    state, env = hub
    assert push(env, str(folder), "--repo-id", "vitzoo/tiny-vit").returncode == 0
    state.repos["elsewhere/tiny-vit"] = elsewhere = hub_server.Repo()  # tagged, another org's
    elsewhere.commit("main", {"README.md": b"---\ntags:\n- vitzoo_hf\n---\n"}, "another org's")
    state.repos["vitzoo/plain"] = plain = hub_server.Repo()  # this org's, untagged
    plain.commit("main", {"README.md": b"---\ntags:\n- vision\n---\n"}, "not ours")
    listed = push(env, "--list", "--org", "vitzoo")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:3] == ["repo", "timm", "source"] and len(lines) == 2
    record = json.loads((folder / "vitzoo_parity.json").read_text())
    sha = state.repos["vitzoo/tiny-vit"].refs["main"]
    row = lines[1].split()
    assert row[:4] == ["vitzoo/tiny-vit", "test_vit.r160_in1k", f"{max(record['max_abs_diff'].values()):.1e}", "all"]
    assert row[4:6] == [">=", ".".join(map(str, MINIMUM_TRANSFORMERS))] and row[6] == sha[:12]
    assert push(env, "--list", "--org", "nobody").stdout.strip() == "nobody has no public repo tagged vitzoo_hf"
    bare = push(env, "--list", str(folder), "--org", "vitzoo")
    assert bare.returncode == 2 and "--list takes --org ORG and no folders" in bare.stderr
