"""Area and share of each class in a class raster, in square metres, read block by block.

Each pixel counts with its own ground area: constant in a projected CRS whose areas are true, varying by
row in degrees or Web Mercator (measured as :class:`~fastunet_core.polygons.measure.Measurer` measures
polygons). Nodata pixels are left out of the shares.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import shapely
from rasterio.windows import Window

from fastunet_core.models.metadata import OUTPUT_NODATA
from fastunet_core.polygons.legend import read_legend
from fastunet_core.polygons.measure import Measurer

ROWS_PER_READ = 512


@dataclass(frozen=True)
class ClassArea:
    """One class's pixels, ground area and share of the classified (not nodata) area."""

    id: int
    name: str
    pixels: int
    area_m2: float
    share: float  # 0..1


def pixel_areas_m2(measurer: Measurer, width: int, height: int) -> np.ndarray:
    """Return the ground area of one pixel of each row (north-up rasters: area varies by row only)."""
    if measurer.method == "planar":
        return np.full(height, abs(measurer.transform.determinant) * measurer.unit_m**2)
    col = width // 2
    boxes = shapely.box(np.full(height, col), np.arange(height), np.full(height, col + 1), np.arange(1, height + 1))
    return np.asarray(measurer.area_m2(measurer.to_map(boxes)), dtype=np.float64)


def class_areas(raster: str | Path) -> list[ClassArea]:
    """Return every class present in ``raster`` (or named in its legend), largest area first."""
    with rasterio.open(raster) as src:
        legend = read_legend(src)
        nodata = src.nodata if src.nodata is not None else OUTPUT_NODATA
        measurer = Measurer.for_raster(src.crs.to_wkt() if src.crs else "", src.transform, src.width, src.height) \
            if src.crs else None
        row_area = pixel_areas_m2(measurer, src.width, src.height) if measurer is not None \
            else np.full(src.height, abs(src.transform.determinant))
        pixels = np.zeros(256, dtype=np.int64)
        area = np.zeros(256, dtype=np.float64)
        for row0 in range(0, src.height, ROWS_PER_READ):
            rows = min(ROWS_PER_READ, src.height - row0)
            block = src.read(1, window=Window(0, row0, src.width, rows)).astype(np.int64, copy=False)
            flat_ids = block.ravel()
            pixels += np.bincount(flat_ids, minlength=256)[:256]
            weights = np.repeat(row_area[row0:row0 + rows], src.width)
            area += np.bincount(flat_ids, weights=weights, minlength=256)[:256]
    ids = {int(i) for i in np.flatnonzero(pixels)} | set(legend.classes)
    ids.discard(int(nodata))
    total = float(sum(area[i] for i in ids))
    found = [ClassArea(i, legend.get(i).name, int(pixels[i]), float(area[i]), float(area[i]) / total if total else 0.0)
             for i in ids]
    return sorted(found, key=lambda c: (-c.area_m2, c.id))
