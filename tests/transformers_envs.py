"""Side environments holding another transformers release, for running converted folders as their users would.

Each is a venv under ``.cache/transformers-envs/<version>`` that sees this repo's ``.venv`` packages (torch above
all, which would cost gigabytes to install again) through a ``.pth`` line placed after its own site-packages, so
the release pip installs there (with the huggingface_hub and tokenizers it needs) shadows ours. Built once,
reused by later runs; a lock keeps parallel test workers from building the same one twice.
"""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
from pathlib import Path

from filelock import FileLock

ROOT = Path(__file__).resolve().parents[1]
ENVS = ROOT / ".cache" / "transformers-envs"
# CI's matrix: the oldest supported release of each line (the current one is the repo's own .venv).
CI_VERSIONS = ("4.57.1", "5.0.0")


def transformers_python(version: str) -> Path:
    """The interpreter of the environment with ``transformers==version`` (built on first use)."""
    root = ENVS / version
    python, ready = root / "bin" / "python", root / ".ready"
    ENVS.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root) + ".lock", timeout=900):
        if ready.is_file():
            return python
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
        own = subprocess.run(
            [str(python), "-c", "import site; print(site.getsitepackages()[0])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        (Path(own) / "zz_vitzoo_base.pth").write_text(site.getsitepackages()[0] + "\n")
        install = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", f"transformers=={version}"]
        result = subprocess.run(install, capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"installing transformers=={version} failed:\n{result.stderr[-3000:]}")
        ready.write_text(version + "\n")
    return python
