"""The dock keeps torch off QGIS's GUI thread: models are read from their header, the GPU check runs elsewhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = Path(__file__).with_name("qgis_dock_no_torch_child.py")


@pytest.mark.qgis
def test_opening_the_dock_never_imports_torch_in_qgis(qgis_model: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PROJ_DATA", "PROJ_LIB")}
    env.update(QT_QPA_PLATFORM="offscreen", FASTUNET_GEO_ENGINE="subprocess",
               PYTHONPATH=os.pathsep.join([str(CHILD.parent.parent), env.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(CHILD), str(qgis_model)], capture_output=True, text=True, env=env,
                          timeout=300)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("REPORT ")), None)
    assert line is not None, proc.stderr[-3000:]
    report = json.loads(line[len("REPORT "):])
    assert report["loaded"] is True and report["tile"] == 128  # the model was read (header only)
    assert report["torch_after_open"] is False and report["torch_at_end"] is False
    assert report["device_line"].startswith("Auto uses the CPU: no CUDA")  # answered by the engine process
