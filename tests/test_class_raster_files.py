"""A finished class raster reads well anywhere: overviews, a valid COG on request, class names and colours in
GDAL's sidecar (category names and attribute table) and QGIS's (.qml), probability units that agree."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import rasterio
from click.testing import CliRunner

from fastunet_core.cli import cli
from fastunet_core.inference.predict import PredictOptions, predict_raster

SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's Python with Debian's GDAL (osgeo), the GDAL QGIS uses
CLASSES = "background=#000000,building=#e31a1c,water=#1f78b4"


def _gdal(script: str, *args: str) -> object:
    """Run ``script`` with Debian's GDAL in its own process (not mixed with rasterio's); return its JSON."""
    done = subprocess.run([SYSTEM_PYTHON, "-c", script, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


READ_CLASSES = """
import json, sys
from osgeo import gdal
ds = gdal.Open(sys.argv[1])  # kept: a band outlives its dataset only as a crash
band = ds.GetRasterBand(1)
rat = band.GetDefaultRAT()
rows = [[rat.GetValueAsString(r, c) for c in range(rat.GetColumnCount())] for r in range(rat.GetRowCount())]
print(json.dumps({"categories": band.GetCategoryNames(), "overviews": band.GetOverviewCount(),
                  "rat_columns": [rat.GetNameOfCol(c) for c in range(rat.GetColumnCount())], "rat": rows}))
"""
VALIDATE_COG = """
import json, sys
from osgeo_utils.samples.validate_cloud_optimized_geotiff import validate
warnings, errors, _details = validate(sys.argv[1], full_check=True)
print(json.dumps({"warnings": warnings, "errors": errors}))
"""


@pytest.fixture(scope="module")
def model(make_checkpoint: object) -> Path:
    return make_checkpoint(classes=CLASSES)  # type: ignore[operator, no-any-return]


def test_class_raster_has_overviews_and_names_its_classes_for_gdal(rio_data: Path, model: Path,
                                                                   tmp_path: Path) -> None:
    out = tmp_path / "classes.tif"
    predict_raster(rio_data / "cogeo.tif", model, out, PredictOptions(device="cpu"))
    with rasterio.open(out) as src:
        assert src.overviews(1) == [2, 4]  # 1024 px: down to 256 px
        assert src.tags(ns="rio_overview")["resampling"] == "mode"
    facts = _gdal(READ_CLASSES, str(out))
    assert facts["categories"] == ["background", "building", "water"]
    assert facts["rat_columns"] == ["Value", "Class_Name", "Red", "Green", "Blue", "Alpha"]
    assert facts["rat"] == [["0", "background", "0", "0", "0", "0"], ["1", "building", "227", "26", "28", "255"],
                            ["2", "water", "31", "120", "180", "255"]]
    assert facts["overviews"] == 2


def test_cli_cog_is_a_valid_cloud_optimized_geotiff(rio_data: Path, model: Path, tmp_path: Path) -> None:
    plain, cog = tmp_path / "plain.tif", tmp_path / "cog.tif"
    for out, extra in ((plain, []), (cog, ["--cog"])):
        r = CliRunner().invoke(cli, ["predict", str(rio_data / "cogeo.tif"), "-m", str(model), "-o", str(out),
                                     "--device", "cpu", *extra])
        assert r.exit_code == 0, r.output
    assert _gdal(VALIDATE_COG, str(cog)) == {"warnings": [], "errors": []}
    assert _gdal(VALIDATE_COG, str(plain))["errors"]  # overviews appended to a tiled GeoTIFF: not a COG
    with rasterio.open(plain) as a, rasterio.open(cog) as b:
        assert (a.read(1) == b.read(1)).all() and b.overviews(1)
        assert a.tags()["CLASSES"] == b.tags()["CLASSES"] and b.colormap(1)[1][:3] == (227, 26, 28)
    assert _gdal(READ_CLASSES, str(cog))["categories"] == ["background", "building", "water"]


def test_probability_units_agree_with_the_values(rio_data: Path, model: Path, tmp_path: Path) -> None:
    out, probs = tmp_path / "c.tif", tmp_path / "p.tif"
    predict_raster(rio_data / "cogeo.tif", model, out, PredictOptions(device="cpu", probs_path=probs))
    with rasterio.open(probs) as src:
        values = src.read()
        assert src.units == ("%", "%", "%") and src.scales == (1.0, 1.0, 1.0)
        valid = values[:, values[0] != 255]
        assert valid.max() <= 100 and abs(int(valid.sum(axis=0).mean()) - 100) <= 2  # percent summing to 100


@pytest.mark.qgis
def test_qgis_opens_the_class_raster_with_its_style(rio_data: Path, model: Path, tmp_path: Path,
                                                    qgis_app: object) -> None:
    from qgis.core import QgsPalettedRasterRenderer, QgsRasterLayer

    out = tmp_path / "classes.tif"
    predict_raster(rio_data / "cogeo.tif", model, out, PredictOptions(device="cpu"))
    assert out.with_suffix(".qml").is_file()
    layer = QgsRasterLayer(str(out), "classes")  # QGIS loads classes.qml as the layer's default style
    renderer = layer.renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer)
    entries = [(int(c.value), c.label, c.color.name(), c.color.alpha()) for c in renderer.classes()]
    assert entries == [(0, "background", "#000000", 0), (1, "building", "#e31a1c", 255),
                       (2, "water", "#1f78b4", 255)]
    del layer
