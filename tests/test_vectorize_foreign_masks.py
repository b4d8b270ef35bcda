"""``vectorize`` on a mask made by another tool: solaris' sample_fp_mask.tif (0/255 buildings, no georeferencing).

FINDINGS5 F13: with only a CRS assigned (``gdal_edit.py -a_srs``, the old hint) the polygons were written at pixel
coordinates with 1 px taken as 1 m, exit 0; predict refuses that raster, and vectorize now refuses it by the same
rule. F14: 255 is our nodata by convention, but a raster that declares no nodata 255 holds 255 as a class.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
import rasterio
from click.testing import CliRunner
from rasterio.errors import NotGeoreferencedWarning

from fastunet_core.cli import _Group
from fastunet_core.cli.vectorize_cmd import vectorize
from fastunet_core.polygons.vectorize import VectorizeOptions, vectorize_raster


@pytest.fixture(scope="module")
def solaris(shared_data: Path) -> Path:
    return shared_data / "solaris-spacenet"


def fp_mask(solaris: Path, folder: Path, crs: bool, transform: bool, nodata: float | None = None) -> Path:
    """A copy of the 0/255 footprint mask, given the CRS and/or the grid of sample_geotiff.tif (its source)."""
    path = folder / "fp.tif"
    shutil.copy(solaris / "sample_fp_mask.tif", path)
    with rasterio.open(solaris / "sample_geotiff.tif") as ref:
        ref_crs, ref_transform = ref.crs, ref.transform
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "r+") as dst:  # as gdal_edit.py -a_srs / -a_ullr / -a_nodata do
            if crs:
                dst.crs = ref_crs
            if transform:
                dst.transform = ref_transform
            if nodata is not None:
                dst.nodata = nodata
    return path


def run_cli(*args: str) -> tuple[int, list[str]]:
    group = _Group(name="fastunet-geo", commands=[vectorize])  # our errors as one line and exit code 1
    res = CliRunner().invoke(group, ["vectorize", *args], obj={})
    return res.exit_code, res.output.strip().splitlines()


def test_a_mask_with_a_crs_but_no_geotransform_is_refused_as_predict_refuses_it(solaris: Path,
                                                                                tmp_path: Path) -> None:
    mask = fp_mask(solaris, tmp_path, crs=True, transform=False)
    code, lines = run_cli(str(mask), "-o", str(tmp_path / "fp.gpkg"), "--classes", "0")
    assert code == 1 and len(lines) == 1, lines
    assert "fp.tif has a CRS but no geotransform" in lines[0] and "gdal_edit.py -a_ullr" in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fp.tif"]


def test_a_mask_without_any_georeferencing_names_both_fixes(solaris: Path, tmp_path: Path) -> None:
    mask = fp_mask(solaris, tmp_path, crs=False, transform=False)
    code, lines = run_cli(str(mask), "-o", str(tmp_path / "fp.gpkg"))
    assert code == 1 and len(lines) == 1, lines
    assert "no georeferencing (no CRS and no geotransform)" in lines[0], lines
    assert "-a_srs" in lines[0] and "-a_ullr" in lines[0], lines


def test_a_0_255_mask_without_nodata_vectorises_255_as_a_class(solaris: Path, tmp_path: Path) -> None:
    mask = fp_mask(solaris, tmp_path, crs=True, transform=True)
    code, lines = run_cli(str(mask), "-o", str(tmp_path / "fp.gpkg"), "--classes", "255")
    assert code == 0, lines
    import geopandas as gpd

    layer = gpd.read_file(tmp_path / "fp.gpkg", layer="fp")
    assert set(layer["class_id"]) == {255} and set(layer["class_name"]) == {"class_255"}
    recoded = tmp_path / "recoded.tif"  # what users had to do: gdal_calc.py --calc="(A>0)*1"
    with rasterio.open(mask) as src:
        profile, data = src.profile, src.read(1)
    with rasterio.open(recoded, "w", **profile) as dst:
        dst.write((data > 0).astype("uint8"), 1)
    ones = vectorize_raster(recoded, tmp_path / "ones.gpkg", VectorizeOptions(classes=("1",), workers=1))
    assert len(layer) == ones.features > 100
    with rasterio.open(mask) as src:
        pixels = int((src.read(1) == 255).sum()) * abs(src.transform.a * src.transform.e)
    assert layer["area_m2"].sum() == pytest.approx(pixels, rel=1e-9)  # 0.5 m pixels, placed on sample_geotiff.tif
    bounds = layer.total_bounds
    assert bounds[0] >= 733_601 and bounds[2] <= 734_051 and bounds[1] >= 3_724_689 and bounds[3] <= 3_725_139
    everything = vectorize_raster(mask, tmp_path / "all.gpkg", VectorizeOptions(workers=1))
    assert [c.id for c in everything.classes] == [0, 255]


def test_255_stays_nodata_where_the_raster_declares_it(solaris: Path, tmp_path: Path) -> None:
    mask = fp_mask(solaris, tmp_path, crs=True, transform=True, nodata=255)
    code, lines = run_cli(str(mask), "-o", str(tmp_path / "fp.gpkg"), "--classes", "255")
    assert code == 1 and len(lines) == 1, lines
    assert "255 is fp.tif's nodata value" in lines[0], lines
    res = vectorize_raster(mask, tmp_path / "all.gpkg", VectorizeOptions(workers=1))
    assert [c.id for c in res.classes] == [0]
    with rasterio.open(mask) as src:
        assert res.classes[0].area_m2 == pytest.approx(int((src.read(1) == 0).sum()) * 0.25, rel=1e-9)
