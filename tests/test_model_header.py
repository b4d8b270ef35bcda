"""The plugin reads every kind of model from QGIS's own Python, which may lack the engine's packages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CheckpointFactory

REPO = Path(__file__).resolve().parents[1]
DEBIAN_PYTHON = Path("/usr/bin/python3")  # QGIS's Python here: no safetensors, no onnx


@pytest.mark.skipif(not DEBIAN_PYTHON.is_file(), reason="needs Debian's python3 (QGIS's Python) beside the venv")
def test_onnx_model_read_in_a_python_without_the_engine_packages(shared_data: Path) -> None:
    """The dock's model check on a Deepness ONNX file, in a Python that has neither onnx nor safetensors."""
    from fastunet_core.models.checkpoint_file import read_metadata

    model = shared_data / "deepness-testdata" / "models" / "one_output_sigmoid_red_detector.onnx"
    expected = read_metadata(model)
    probe = (
        "import json, sys\n"
        "for name in ('onnx', 'safetensors'):\n"
        "    try:\n"
        "        __import__(name); sys.exit(f'{name} is importable here: the test proves nothing')\n"
        "    except ImportError: pass\n"
        "from qgis_plugin.model_header import read_model_meta\n"
        f"meta = read_model_meta({str(model)!r})\n"
        "print(json.dumps({'classes': [c.name for c in meta.classes], 'tile': meta.tile_size_px}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "VIRTUAL_ENV")}
    env.update(PYTHONPATH=str(REPO), PYTHONNOUSERSITE="1", FASTUNET_GEO_PYTHON=sys.executable)
    proc = subprocess.run([str(DEBIAN_PYTHON), "-c", probe], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got == {"classes": [c.name for c in expected.classes], "tile": expected.tile_size_px}


def test_a_truncated_checkpoint_is_refused_when_chosen(make_checkpoint: CheckpointFactory, tmp_path: Path) -> None:
    """A model file cut short (an interrupted copy) is refused when the dock reads it, not after the engine starts."""
    from fastunet_core.errors import CheckpointError
    from qgis_plugin.model_header import read_model_meta

    good = make_checkpoint()
    assert read_model_meta(good).classes
    cut = tmp_path / "cut.safetensors"
    data = Path(good).read_bytes()
    cut.write_bytes(data[:-4])  # the last weight missing
    with pytest.raises(CheckpointError, match="damaged or was not copied whole"):
        read_model_meta(cut)
