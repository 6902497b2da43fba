"""The console commands (vitzoo-convert, vitzoo-to-timm, vitzoo-catalog, vitzoo-push) are their python -m forms:
the same help with a worked example, the same runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
from timm.models import save_for_hf

from tests.helpers import perturb

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COMMANDS = {
    "vitzoo-convert": ([sys.executable, "-m", "conversion.convert_timm"], "convert_timm.py"),
    "vitzoo-to-timm": ([sys.executable, "-m", "conversion.to_timm"], "to_timm.py"),
    "vitzoo-catalog": ([sys.executable, "-m", "conversion.catalog"], "catalog.py"),
    "vitzoo-push": ([sys.executable, str(ROOT / "push_to_hub.py")], "push_to_hub.py"),
}


def run(command: list[str], *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "COLUMNS": "200", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True, env=env)


def words(text: str, prog: str) -> str:
    """Help text as words, the usage line's program name as one placeholder (argparse wraps that line by its
    length; the examples name the command either way)."""
    return " ".join(text.replace(f"usage: {prog}", "usage: PROG", 1).split())


@pytest.mark.parametrize("command", COMMANDS)
def test_a_command_has_its_python_m_forms_help_with_a_worked_example(command: str) -> None:
    long_form, prog = COMMANDS[command]
    script = BIN / command
    assert script.is_file(), f"{command} is not installed: pip install -e . (pyproject's [project.scripts])"
    short, long = run([str(script)], "--help"), run(long_form, "--help")
    assert short.returncode == long.returncode == 0, short.stderr + long.stderr
    assert words(short.stdout, command) == words(long.stdout, prog)
    assert f"examples ({command} is the same as" in short.stdout and f"\n  {command} " in short.stdout


def test_the_commands_convert_a_timm_folder_and_take_it_back(tmp_path: Path) -> None:
    """Run from elsewhere as a user would: a timm save_for_hf folder in, our folder out, and back to timm's."""
    model = perturb(timm.create_model("test_resnet.r160_in1k", num_classes=4)).eval()
    save_for_hf(model, tmp_path / "timm-ft", safe_serialization=True)
    elsewhere = {"cwd": tmp_path}
    done = run([str(BIN / "vitzoo-convert")], "timm-ft", "--output-dir", "ours", **elsewhere)
    assert done.returncode == 0, done.stderr
    assert "verified in a clean process (whole model): max abs diff" in done.stdout
    back = run([str(BIN / "vitzoo-to-timm")], "ours", "--output-dir", "timm-again", **elsewhere)
    assert back.returncode == 0, back.stderr
    assert json.loads((tmp_path / "timm-again" / "config.json").read_text())["num_classes"] == 4
    listed = run([str(BIN / "vitzoo-catalog")], "test_resnet.r160_in1k", "--json", **elsewhere)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == run(COMMANDS["vitzoo-catalog"][0], "test_resnet.r160_in1k", "--json").stdout
    assert json.loads(listed.stdout)[0]["family"] == "resnet"
    refused = run([str(BIN / "vitzoo-push")], "missing-folder", "--repo-id", "me/x", "--dry-run", **elsewhere)
    same = run(COMMANDS["vitzoo-push"][0], "missing-folder", "--repo-id", "me/x", "--dry-run", **elsewhere)
    assert refused.returncode == same.returncode != 0 and refused.stderr == same.stderr
