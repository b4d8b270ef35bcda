"""A raster with a geotransform but no CRS is refused like one without any georeferencing, unless allowed.

Its class map could not be placed on a map (and its ground resolution is unknown, so resolution auto cannot
run the model at its own scale): the one line says how to assign the CRS. ``--allow-no-crs`` segments it
anyway, with a warning, into a class map on the same raw grid.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
from cli_helpers import run_cli
from rasterio.crs import CRS

from fastunet_core.errors import InputRasterError
from fastunet_core.hints import speaking
from fastunet_core.inference.predict import PredictOptions, predict_raster
from qgis_plugin.words import QGIS


@pytest.fixture
def no_crs(small_raster: Path, tmp_path: Path) -> Path:
    """small_raster's pixels and geotransform, without its CRS."""
    with rasterio.open(small_raster) as src:
        profile = {"driver": "GTiff", "width": src.width, "height": src.height, "count": src.count,
                   "dtype": src.dtypes[0], "transform": src.transform}
        data = src.read()
    path = tmp_path / "in" / "nocrs.tif"
    path.parent.mkdir()
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    with rasterio.open(path) as check:
        assert check.crs is None and not check.transform.is_identity
    return path


def test_a_raster_without_crs_is_refused_with_the_fix(no_crs: Path, make_checkpoint: Callable[..., Path],
                                                      tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    code, text = run_cli("predict", str(no_crs), "-m", str(make_checkpoint()), "-o", str(out / "c.tif"))
    assert code == 1, text
    lines = text.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in text, text
    assert "nocrs.tif has a geotransform but no CRS, so the result could not be placed on a map" in lines[0]
    assert f"gdal_edit.py -a_srs EPSG:<code> {no_crs}" in lines[0] and "--allow-no-crs" in lines[0], lines[0]
    assert list(out.iterdir()) == []


def test_qgis_gets_the_refusal_without_a_flag(no_crs: Path, make_checkpoint: Callable[..., Path],
                                              tmp_path: Path) -> None:
    with speaking(QGIS), pytest.raises(InputRasterError) as err:  # what the dock and Processing call
        predict_raster(no_crs, make_checkpoint(), tmp_path / "c.tif", PredictOptions(device="cpu"))
    assert "no CRS" in str(err.value) and "Assign Projection" in str(err.value) and "--" not in str(err.value)
    assert not (tmp_path / "c.tif").exists()


def test_allow_no_crs_segments_it_with_a_warning(no_crs: Path, small_raster: Path,
                                                 make_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    ckpt = make_checkpoint()
    code, text = run_cli("predict", str(no_crs), "-m", str(ckpt), "-o", str(tmp_path / "raw.tif"), "--allow-no-crs")
    assert code == 0, text
    assert "warning: nocrs.tif has no CRS: the class map has none either" in text, text
    code, text = run_cli("predict", str(small_raster), "-m", str(ckpt), "-o", str(tmp_path / "ref.tif"))
    assert code == 0, text
    with rasterio.open(tmp_path / "raw.tif") as raw, rasterio.open(tmp_path / "ref.tif") as ref:
        assert raw.crs is None and raw.transform == ref.transform
        got, want = raw.read(1), ref.read(1)
    assert np.array_equal(got, want)
    assert (np.bincount(got.ravel(), minlength=3)[:3] > 0.1 * got.size).all()  # the map varies from place to place


def test_the_fix_a_batch_proposes_runs_as_typed(no_crs: Path, make_checkpoint: Callable[..., Path],
                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # predict FOLDER from the folder above it, a file name with a space: the proposed command names the file
    # as the user gave it (quoted), and a placeholder for the EPSG code, not a real code to copy by mistake
    batch = tmp_path / "batch in"
    batch.mkdir()
    raster = no_crs.rename(batch / "my float.tif")
    monkeypatch.chdir(tmp_path)
    code, text = run_cli("predict", "batch in", "-m", str(make_checkpoint()), "--out-dir", "out")
    assert code == 4, text  # the batch's exit status when a raster failed
    found = re.search(r"e\.g\. (gdal_edit\.py -a_srs EPSG:<code> [^,]+),", text)
    assert found, text
    assert "32633" not in text
    command = found.group(1).replace("<code>", "32633")  # the user fills in the CRS the raster is in
    subprocess.run(shlex.split(command), check=True, capture_output=True)
    with rasterio.open(raster) as src:
        assert src.crs == CRS.from_epsg(32633)
