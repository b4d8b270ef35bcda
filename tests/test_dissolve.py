"""``vectorize --dissolve`` writes per class exactly the multipolygon of that class's polygons.

The dissolved output is built without geometry objects (each polygon's WKB spilled to a file per class and
joined under a MultiPolygon header at the end, see ``_DissolvedClass``): checked here against the polygons of
the same map written one per region, through the CLI, on a map with thousands of regions across window seams.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from click.testing import CliRunner
from rasterio.transform import from_origin

from fastunet_core.cli import cli

CLASSES = [{"id": 0, "name": "background", "color": [0, 0, 0]}, {"id": 1, "name": "building", "color": [227, 26, 28]},
           {"id": 2, "name": "water", "color": [31, 120, 180]}, {"id": 3, "name": "woodland", "color": [51, 160, 44]}]


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 500 x 500 class raster of 5 x 5 px random cells: thousands of regions, many across seams."""
    path = tmp_path_factory.mktemp("cells") / "cells.tif"
    data = np.kron(np.random.default_rng(3).integers(0, 4, (100, 100), dtype=np.uint8), np.ones((5, 5), np.uint8))
    profile = {"driver": "GTiff", "width": 500, "height": 500, "count": 1, "dtype": "uint8", "crs": "EPSG:32633",
               "transform": from_origin(500000, 5000000, 0.5, 0.5), "nodata": 255}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
        dst.update_tags(CLASSES=json.dumps(CLASSES))
    return path


def _read(path: Path) -> gpd.GeoDataFrame:
    return gpd.read_file(path, layer=pyogrio.list_layers(path)[0][0])


@pytest.mark.parametrize("suffix", [".gpkg", ".shp"])
def test_dissolve_equals_the_polygons_of_each_class(cells: Path, tmp_path: Path, suffix: str) -> None:
    runner = CliRunner()
    common = ["-q", "vectorize", str(cells), "--window", "128", "--workers", "1"]
    single = runner.invoke(cli, [*common, "-o", str(tmp_path / f"regions{suffix}")])
    assert single.exit_code == 0, single.stderr
    joined = runner.invoke(cli, [*common, "--dissolve", "-o", str(tmp_path / f"dissolved{suffix}")])
    assert joined.exit_code == 0, joined.stderr
    regions, dissolved = _read(tmp_path / f"regions{suffix}"), _read(tmp_path / f"dissolved{suffix}")
    assert len(regions) > 1000
    assert sorted(dissolved["class_id"]) == sorted(set(regions["class_id"])) == [1, 2, 3]
    for _, row in dissolved.iterrows():
        mine = regions[regions["class_id"] == row["class_id"]]
        assert row.geometry.geom_type == "MultiPolygon" and row.geometry.is_valid
        assert shapely.get_num_geometries(row.geometry) == len(mine)
        expected = shapely.multipolygons(mine.geometry.to_numpy())
        assert shapely.equals(shapely.normalize(row.geometry), shapely.normalize(expected))
        assert row["area_m2"] == pytest.approx(mine["area_m2"].sum(), rel=1e-9)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no spill file left
