"""Side environments holding another transformers release, for running converted folders as their users would.

Each is a venv under ``.cache/transformers-envs/<version>`` that sees this repo's ``.venv`` packages (torch above
all, which would cost gigabytes to install again) through a ``.pth`` line placed after its own site-packages, so
the release pip installs there (with the huggingface_hub and tokenizers it needs) shadows ours. It also gets the
``kernels`` its ``hub-kernels`` extra names: a release imports ``kernels`` whenever one is importable, and the one
the current release pulls into our venv (0.19 for 5.25) breaks older releases' import. Built once, reused by later
runs while the install line is the same; a lock keeps parallel test workers from building the same one twice.
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
    spec = f"transformers[hub-kernels]=={version}"
    with FileLock(str(root) + ".lock", timeout=900):
        if ready.is_file() and ready.read_text().strip() == spec:
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
        install = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", spec]
        result = subprocess.run(install, capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"installing {spec} failed:\n{result.stderr[-3000:]}")
        ready.write_text(spec + "\n")
    return python
