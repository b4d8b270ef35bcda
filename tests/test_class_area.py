"""Per-class area and share of a class raster: pixels counted by class, each with its own ground area."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyproj
import pytest
import rasterio
from rasterio.transform import from_origin

from fastunet_core.polygons.class_area import class_areas

CLASSES = [{"id": 0, "name": "background", "color": [0, 0, 0]}, {"id": 1, "name": "building", "color": [200, 0, 0]},
           {"id": 2, "name": "water", "color": [0, 0, 200]}]


def _write(path: Path, values: np.ndarray, crs: str, transform: object) -> Path:
    profile = {"driver": "GTiff", "width": values.shape[1], "height": values.shape[0], "count": 1, "dtype": "uint8",
               "crs": crs, "transform": transform, "nodata": 255}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(values, 1)
        dst.update_tags(CLASSES=json.dumps(CLASSES))
    return path


def _pattern(height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    values = rng.choice(np.array([0, 1, 255], np.uint8), size=(height, width), p=[0.5, 0.3, 0.2])
    values[: height // 3] = 1  # the northern third is building: in degrees, its pixels are smaller
    return values


def test_projected_raster_counts_pixels_times_pixel_area(tmp_path: Path) -> None:
    values = _pattern(300, 200)
    raster = _write(tmp_path / "utm.tif", values, "EPSG:32631", from_origin(500000, 5000000, 2.0, 2.0))
    found = {c.name: c for c in class_areas(raster)}
    assert set(found) == {"background", "building", "water"}  # water: named, absent
    for cid, name in ((0, "background"), (1, "building")):
        assert found[name].pixels == int((values == cid).sum())
        assert found[name].area_m2 == pytest.approx(4.0 * (values == cid).sum())
    assert found["water"].pixels == 0 and found["water"].share == 0
    valid = (values != 255).sum()
    assert found["building"].share == pytest.approx((values == 1).sum() / valid)
    assert [c.name for c in class_areas(raster)][:1] == ["building"]  # largest first


def test_geographic_raster_areas_follow_latitude(tmp_path: Path) -> None:
    values = _pattern(400, 100)
    transform = from_origin(10.0, 70.0, 0.01, 0.05)  # 70 N to 50 N: pixel areas differ by a factor ~1.9
    raster = _write(tmp_path / "deg.tif", values, "EPSG:4326", transform)
    found = {c.id: c for c in class_areas(raster)}
    geod = pyproj.Geod(ellps="WGS84")
    expected = np.zeros(3)
    for row in range(values.shape[0]):  # each row's pixels: the geodesic area of one pixel of that row
        top, bottom = 70.0 - 0.05 * row, 70.0 - 0.05 * (row + 1)
        pixel, _ = geod.polygon_area_perimeter([10, 10.01, 10.01, 10], [bottom, bottom, top, top])
        for cid in (0, 1, 2):
            expected[cid] += abs(pixel) * (values[row] == cid).sum()
    for cid in (0, 1):
        assert found[cid].area_m2 == pytest.approx(expected[cid], rel=1e-4)
    # a plain pixel count would give the building (north-heavy) a larger share than its true area
    count_share = (values == 1).sum() / (values != 255).sum()
    assert found[1].share == pytest.approx(expected[1] / expected[:2].sum(), rel=1e-4)
    assert found[1].share < count_share - 0.01
