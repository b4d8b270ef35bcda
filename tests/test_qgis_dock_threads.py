"""The dock keeps torch off QGIS's GUI thread: models are read from their header, the GPU check runs elsewhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = Path(__file__).with_name("qgis_dock_no_torch_child.py")


def _child_report(*args: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k not in ("PROJ_DATA", "PROJ_LIB")}
    env.update(QT_QPA_PLATFORM="offscreen", FASTUNET_GEO_ENGINE="subprocess",
               PYTHONPATH=os.pathsep.join([str(CHILD.parent.parent), env.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(CHILD), *args], capture_output=True, text=True, env=env, timeout=600)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT ")), None)
    assert line is not None, proc.stderr[-3000:]
    return dict(json.loads(line[len("REPORT "):]))


@pytest.mark.qgis
def test_opening_the_dock_never_imports_torch_in_qgis(qgis_model: Path) -> None:
    report = _child_report("dock", str(qgis_model))
    assert report["loaded"] is True and report["tile"] == 128  # the model was read (header only)
    assert report["torch_after_open"] is False and report["torch_at_end"] is False
    assert report["device_line"].startswith("Auto uses the CPU: no CUDA")  # answered by the engine process


@pytest.mark.qgis
@pytest.mark.slow
def test_processing_train_never_imports_torch_in_qgis(small_raster: Path, tmp_path: Path) -> None:
    """The train algorithm leaves the configuration's check to the engine process (it imports torch)."""
    report = _child_report("train", str(small_raster), str(tmp_path / "run"))
    assert report["best_epoch"] == 1 and report["checkpoint"] == str(tmp_path / "run" / "best.safetensors")
    assert report["torch_after_train"] is False and report["pydantic_after_train"] is False
    refused = str(report["refused"])  # the engine's check, as a plain Processing error naming the dialog's field
    assert "Learning rate" in refused and "optim.lr" not in refused, refused
    assert report["torch_at_end"] is False
    assert not (tmp_path / "refused" / "best.safetensors").exists()
