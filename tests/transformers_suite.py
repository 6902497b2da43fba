"""transformers' own common model tests, fetched from the sdist of the installed version at test time.

The sdist ships ``tests/test_modeling_common.py`` and friends but not ``tests/models``, ``tests/generation``
and ``tests/exporters``; three tiny stand-ins fill those imports. The suite is unpacked once into
``.cache/`` (ignored by git) as the package ``transformers_tests`` and never copied into this repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import transformers

CACHE = Path(__file__).resolve().parents[1] / ".cache" / "transformers_tests"

STAND_INS = {
    "exporters/test_export.py": "class ExportTesterMixin:\n    pass\n",
    "generation/test_utils.py": "class GenerationTesterMixin:\n    pass\n",
    # Non-default values of PretrainedConfig's own arguments; ConfigTester checks each survives __init__.
    "utils/test_configuration_utils.py": (
        "config_common_kwargs = {\n"
        '    "return_dict": False,\n'
        '    "output_hidden_states": True,\n'
        '    "dtype": "float16",\n'
        '    "chunk_size_feed_forward": 5,\n'
        '    "architectures": ["SomeModel"],\n'
        '    "id2label": {0: "label"},\n'
        '    "label2id": {"label": "0"},\n'
        '    "problem_type": "regression",\n'
        "}\n"
    ),
}


def _unpack(target: Path) -> None:
    version = transformers.__version__
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
        subprocess.run([*pip, f"transformers=={version}", "-d", tmp], check=True)
        archive = next(Path(tmp).glob("transformers-*.tar.gz"))
        prefix = f"transformers-{version}/tests/"
        staging = Path(tmp) / "transformers_tests"
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                if member.isfile() and member.name.startswith(prefix) and member.name.count("/") == 2:
                    member.name = member.name[len(prefix) :]
                    tar.extract(member, staging, filter="data")
        for relative, text in STAND_INS.items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            (path.parent / "__init__.py").touch()
            path.write_text(text)
        (staging / "__init__.py").touch()
        try:
            os.replace(staging, target)  # atomic: parallel workers never see half a suite
        except OSError:
            if not (target / "test_modeling_common.py").exists():
                raise


def load() -> None:
    """Make ``transformers_tests`` importable, fetching the sdist on first use."""
    root = CACHE / transformers.__version__
    target = root / "transformers_tests"
    if not (target / "test_modeling_common.py").exists():
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        _unpack(target)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))


def register_model_names(model_type: str, model: str, classifier: str, backbone: str) -> None:
    """The mixins choose what to test for a class by its name in these mappings."""
    from transformers.models.auto import modeling_auto

    modeling_auto.MODEL_MAPPING_NAMES[model_type] = model
    modeling_auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES[model_type] = classifier
    modeling_auto.MODEL_FOR_BACKBONE_MAPPING_NAMES[model_type] = backbone
