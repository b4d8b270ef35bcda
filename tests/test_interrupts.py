"""Stopping vectorize (Ctrl-C, SIGTERM from ``kill`` or a job scheduler) is a clean stop, as for predict.

Exit 130, one line, no output, no hidden temporary folder, no worker process left running.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from run_helpers import children, default_signals

REPO = Path(__file__).resolve().parent.parent
CLASSES = [{"id": 0, "name": "background", "color": [0, 0, 0]}, {"id": 1, "name": "building", "color": [227, 26, 28]},
           {"id": 2, "name": "water", "color": [31, 120, 180]}, {"id": 3, "name": "woodland", "color": [51, 160, 44]}]


@pytest.fixture(scope="module")
def busy_mask(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An 8000 x 8000 class raster of 4 x 4 px random cells (about 3 million regions: over ten seconds of work even
    on a quiet machine, so the signal always lands mid-run; the test stops it early, so this costs the test nothing)."""
    path = tmp_path_factory.mktemp("busy") / "mask.tif"
    cells = np.random.default_rng(0).integers(0, 4, (2000, 2000), dtype=np.uint8)
    data = np.kron(cells, np.ones((4, 4), np.uint8))
    profile = {"driver": "GTiff", "width": 8000, "height": 8000, "count": 1, "dtype": "uint8", "crs": "EPSG:32633",
               "transform": from_origin(500000, 5000000, 0.5, 0.5), "nodata": 255, "tiled": True}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
        dst.update_tags(CLASSES=json.dumps(CLASSES))
    return path




@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "SIGTERM to the process group"])
def test_vectorize_stops_cleanly(busy_mask: Path, tmp_path: Path, how: str) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "fastunet_core.cli", "-q", "vectorize", str(busy_mask), "-o",
                             str(out_dir / "poly.gpkg"), "--workers", "2", "--window", "512"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            preexec_fn=default_signals)
    end = time.monotonic() + 120
    while not list(out_dir.glob(".poly.*.tmp")) or len(children(proc.pid)) < 2:  # writing, workers busy
        assert proc.poll() is None, proc.communicate()[1].decode()
        assert time.monotonic() < end, "vectorize did not start in time"
        time.sleep(0.02)
    time.sleep(0.5)
    workers = children(proc.pid)
    if how == "SIGTERM to the process group":
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(getattr(signal, how))
    _, err = proc.communicate(timeout=120)
    stderr = err.decode()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0] and "no output" in lines[0], stderr
    assert sorted(p.name for p in out_dir.iterdir()) == []  # no output, no hidden folder, no lock file
    end = time.monotonic() + 30  # the workers are gone soon after the parent, however loaded the machine
    while [w for w in workers if Path(f"/proc/{w}").exists()] and time.monotonic() < end:
        time.sleep(0.05)
    assert [w for w in workers if Path(f"/proc/{w}").exists()] == []
