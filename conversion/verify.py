"""Verification: a converted folder, loaded the way a user would in a clean process, against timm.

``verify`` compares every output of the folder with timm's reference (``reference_model``: timm holding the
converted weights, whole or cut to its first blocks where memory does not allow the whole, see
``verified_blocks``), within ``TOLERANCE``. ``run_folder`` is the clean process: its child blocks ``vitzoo_hf`` and
``timm`` imports, so only the folder's remote code (torch + transformers) can answer; inputs and outputs travel as
safetensors files.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from conversion.common import ConversionError
from conversion.families import FamilyHooks
from conversion.sandbox import sandboxed
from conversion.truncation import build_empty, meta_tensors

TOLERANCE = 1e-4
PARTIAL_BLOCKS = 2

# Runs in the child: block our package and timm, load through the Auto classes, write outputs.
CHILD = r"""
import sys

# None in sys.modules: imports fail and find_spec says "not installed", as on a user's machine.
for hidden in ("vitzoo_hf", "timm", "conversion"):
    sys.modules[hidden] = None
import json

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoModelForImageClassification

folder, inputs_path, outputs_path, with_head = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
overrides = json.loads(sys.argv[5])  # config fields, e.g. fewer blocks for a partial check of a huge model
calls = json.loads(sys.argv[6])  # per input: model call arguments (token families: interpolate_pos_encoding)
inputs = load_file(inputs_path)
outputs = {}
load = dict(trust_remote_code=True, dtype=torch.float32, output_loading_info=True, **overrides)
model, info = AutoModel.from_pretrained(folder, **load)
classifier = None
if with_head:
    classifier, info = AutoModelForImageClassification.from_pretrained(folder, **load)
# transformers would fill missing weights with a fresh init and only report it: that is a broken folder.
broken = {k: info[k] for k in ("missing_keys", "mismatched_keys") if info[k]}
if broken:
    sys.exit(f"weights do not match the config: {broken}")
model.eval()
classifier = classifier.eval() if classifier is not None else None
with torch.no_grad():
    for name, pixel_values in inputs.items():
        call = calls.get(name, {})
        out = model(pixel_values, **call)
        outputs[f"{name}.last_hidden_state"] = out.last_hidden_state
        if out.pooler_output is not None:
            outputs[f"{name}.pooler_output"] = out.pooler_output
        if classifier is not None:
            outputs[f"{name}.logits"] = classifier(pixel_values, **call).logits
save_file({k: v.clone(memory_format=torch.contiguous_format) for k, v in outputs.items()}, outputs_path)
"""


def clean_env() -> dict[str, str]:
    """Environment for a user-like child: no PYTHONPATH into this repo, offline, quiet."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
    return env


SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSW|CREDENTIAL|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|AUTH|SESSION", re.IGNORECASE)
SECRET_PREFIXES = ("AWS_", "AZURE_", "GOOGLE_", "GCP_", "GCLOUD_", "GH_", "GITHUB_", "GIT_", "SSH_", "NETRC")


def untrusted_env(home: Path) -> dict[str, str]:
    """Environment for running a folder's own Python code (verification, the publisher's smoke test): offline,
    with no credential variable and a fresh HOME/HF_HOME, so no token file or git/cloud credential is reachable."""
    env = {
        key: value
        for key, value in clean_env().items()
        if not SECRET_NAME.search(key) and not key.upper().startswith(SECRET_PREFIXES)
    }
    env.update(HOME=str(home), HF_HOME=str(home / "hf"), HF_MODULES_CACHE=str(home / "modules"))
    env.pop("HF_TOKEN_PATH", None)
    return env


def die_with_parent() -> None:
    """Linux: this process is killed when its parent dies (run in a child: ``preexec_fn``, a pool initializer), so
    a killed converter or sweep leaves no orphan working on its own."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_folder(
    folder: Path,
    inputs: dict[str, torch.Tensor],
    with_head: bool,
    overrides: dict | None = None,
    scratch: Path | None = None,
    calls: dict[str, dict] | None = None,
    isolate: bool = False,
) -> dict[str, torch.Tensor]:
    """Outputs of ``folder`` loaded with trust_remote_code in a fresh process started outside the repo. This runs
    the folder's Python files: the child gets no credentials (see ``untrusted_env``). ``scratch`` is where its
    temporary files go (a converter passes its staging folder, so an interrupted run leaves nothing elsewhere);
    ``calls`` gives model call arguments per input name; ``isolate`` runs the child in ``conversion.sandbox``
    (for code that is not ours), seeing only the Python installation, the folder (read-only) and its scratch."""
    with tempfile.TemporaryDirectory(prefix=".vitzoo-verify-", dir=scratch and scratch.resolve()) as tmp:
        inputs_path, outputs_path = Path(tmp) / "inputs.safetensors", Path(tmp) / "outputs.safetensors"
        save_file({k: v.contiguous() for k, v in inputs.items()}, str(inputs_path))
        env = untrusted_env(Path(tmp))
        args = [sys.executable, "-c", CHILD, str(folder.resolve()), str(inputs_path), str(outputs_path)]
        args += ["1" if with_head else "0", json.dumps(overrides or {}), json.dumps(calls or {})]
        if isolate:
            args = sandboxed(args, expose=[(folder, False), (Path(tmp), True)], cwd=Path(tmp))
        result = subprocess.run(args, cwd=tmp, env=env, capture_output=True, text=True, preexec_fn=die_with_parent)
        if result.returncode:
            raise RuntimeError(f"Loading {folder} as remote code failed:\n{result.stderr[-4000:]}")
        return load_file(str(outputs_path))


def available_memory() -> int:
    """Bytes the kernel reports as available (MemAvailable)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def verification_bytes(num_parameters: int) -> int:
    """timm in fp32 here, the folder in fp32 in the child, plus activations and interpreter overhead."""
    return int(num_parameters * 4 * 2 * 1.25) + 2**30


def verified_blocks(model_name: str, num_parameters: int, depth: int, memory_budget: int | None) -> int | None:
    """None where the whole model fits in memory to verify (``memory_budget`` bytes, default what the kernel
    reports available), else the blocks per group a partial check keeps."""
    budget = available_memory() if memory_budget is None else memory_budget
    needed = verification_bytes(num_parameters)
    if needed <= budget:
        return None
    blocks = min(PARTIAL_BLOCKS, depth)
    print(
        f"{model_name} needs ~{needed / 2**30:.1f} GiB to verify whole, {budget / 2**30:.1f} GiB available: "
        f"verifying with its first {blocks} of {depth} blocks."
    )
    return blocks


def reference_model(
    model_name: str, source, hooks: FamilyHooks, dtype: torch.dtype, blocks: int | None, kwargs: dict
) -> torch.nn.Module:
    """timm holding the converted weights (rounded as saved), whole or cut to its first ``blocks`` per group. Built
    without allocating its parameters (buffers as timm computes them), then filled from ``source``."""
    model = build_empty(model_name, **kwargs)
    if blocks is not None:
        hooks.truncate(model, blocks)
    state = {k: source.get(k).to(dtype).float() for k in model.state_dict()}
    model.load_state_dict(state, strict=True, assign=True)
    left = meta_tensors(model)
    if left:
        raise ConversionError(f"timm's {model_name} computes {left[0]} from its weights; it cannot be verified.")
    return model.eval()


def verify(
    folder: Path,
    reference: torch.nn.Module,
    hooks: FamilyHooks,
    pooled: bool,
    with_head: bool,
    overrides: dict | None = None,
) -> dict[str, float]:
    """Max abs difference per output between the folder (clean process) and timm; raises past tolerance."""
    inputs = hooks.verification_inputs(reference)
    pixels = {name: x for name, (x, _) in inputs.items()}
    calls = {name: call for name, (_, call) in inputs.items()}
    ours = run_folder(folder, pixels, with_head, overrides, scratch=folder, calls=calls)  # scratch: the staging
    expected = {}
    with torch.no_grad():
        for name, x in pixels.items():
            with hooks.reference_at(reference, name):
                features = reference.forward_features(x)
                expected[f"{name}.last_hidden_state"] = features
                if pooled:
                    expected[f"{name}.pooler_output"] = reference.forward_head(features, pre_logits=True)
                if with_head:
                    expected[f"{name}.logits"] = reference.forward_head(features)
    if set(ours) != set(expected):
        raise ConversionError(f"Outputs differ in kind: folder gave {sorted(ours)}, timm {sorted(expected)}.")
    parity = {}
    for key, value in expected.items():
        parity[key] = float((ours[key] - value).abs().max())
        if not torch.allclose(ours[key], value, atol=TOLERANCE, rtol=TOLERANCE):
            raise ConversionError(f"Parity check failed for {key}: max abs diff {parity[key]:.3e} > {TOLERANCE}.")
    return parity
