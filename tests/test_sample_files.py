"""The bundled sample images stay as shipped: no QGIS side files tracked beside them, none written by our runs.

QGIS saves raster statistics as ``X.tif.aux.xml`` (GDAL PAM) beside an image it draws, so every desktop run
rewrote the tracked copies. Nothing reads them (the CLI reads pixels with rasterio; the Train tab's automatic
value range asks QGIS for the band's maximum, which QGIS computes without them), so they are not tracked.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=60)


def test_no_aux_xml_is_tracked_or_left_to_track() -> None:
    if _git("rev-parse", "--git-dir").returncode != 0:
        pytest.skip("not a git checkout")
    tracked = _git("ls-files", "data/samples").stdout.split()
    assert tracked and not [p for p in tracked if p.endswith(".aux.xml")], tracked
    assert _git("check-ignore", "-q", "data/samples/spacenet_atlanta_pan.tif.aux.xml").returncode == 0


@pytest.mark.qgis
def test_desktop_runs_keep_qgis_from_writing_aux_xml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    monkeypatch.delenv("GDAL_PAM_ENABLED", raising=False)
    from qgis_desktop_common import DesktopRun

    desk = DesktopRun(tmp_path / "out", "report.json")
    desk.start(lambda: None)
    assert os.environ["GDAL_PAM_ENABLED"] == "NO" and (tmp_path / "out").is_dir()
    sys.modules.pop("qgis_desktop_common", None)
