"""Cut the processed area out of a raster: a window on the raster's own pixel grid, masked to polygons.

The window is the area's bounds turned into pixel rows and columns of the source (widened outward to whole
pixels and clipped to the raster), so the crop keeps the source's grid exactly: no resampling, and the
class raster lines up with the source pixel for pixel. For polygons, pixels whose centre lies outside every
polygon are masked (GDAL's dataset mask), so the core treats them as nodata: they are not segmented, come
out as nodata, and are not vectorised. The source's own nodata/mask/alpha is carried over.

Rows are copied in strips, so memory follows the window's width, not its area.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import rasterio
import shapely
from rasterio.features import rasterize
from rasterio.windows import Window

from fastunet_core.errors import CancelledError, ConfigError, InputRasterError
from fastunet_core.runtime.progress import NullProgress, Progress

from .jobs import AreaSpec

STRIP_ROWS = 512
_EPS = 1e-6  # pixels: a bound within this of a pixel edge counts as on it (float noise in map units)


def crop_to_area(raster: Path, area: AreaSpec, out: Path, progress: Progress | None = None) -> Path:
    """Return ``raster`` itself for the whole layer, else write the area to ``out`` (GeoTIFF) and return it."""
    prog = progress or NullProgress()
    if area.kind == "layer":
        return raster
    polygons = _polygons(area)
    bounds = area.bounds if area.kind == "extent" else tuple(shapely.total_bounds(polygons))
    if bounds is None:
        raise ConfigError("the processed extent is missing")
    with rasterio.open(raster) as src:
        window = pixel_window(src, bounds)
        _copy(src, window, polygons if area.kind == "polygons" else None, out, prog)
    return out


def pixel_window(src: rasterio.io.DatasetReader, bounds: tuple[float, float, float, float]) -> Window:
    """Return the whole-pixel window of ``src`` covering ``bounds``, clipped to the raster."""
    t = src.transform
    if t.b != 0 or t.d != 0:
        raise InputRasterError(f"{Path(src.name).name} is rotated; warp it north-up before choosing an area")
    xmin, ymin, xmax, ymax = bounds
    corners = [~t @ (x, y) for x in (xmin, xmax) for y in (ymin, ymax)]  # (col, row) of each corner
    c = [p[0] for p in corners]
    r = [p[1] for p in corners]
    col0 = max(math.floor(min(c) + _EPS), 0)
    row0 = max(math.floor(min(r) + _EPS), 0)
    col1 = min(math.ceil(max(c) - _EPS), src.width)
    row1 = min(math.ceil(max(r) - _EPS), src.height)
    if col1 <= col0 or row1 <= row0:
        raise ConfigError(f"the processed area does not overlap {Path(src.name).name}; check the extent or "
                          "polygons (are they in the right place and CRS?)")
    return Window(col0, row0, col1 - col0, row1 - row0)


def _polygons(area: AreaSpec) -> np.ndarray:
    if area.kind != "polygons":
        return np.empty(0, dtype=object)
    geoms = shapely.from_wkb(list(area.polygons_wkb))
    polys = geoms[[g is not None and not g.is_empty and g.geom_type in ("Polygon", "MultiPolygon") for g in geoms]]
    if len(polys) == 0:
        raise ConfigError("no polygon to process: the polygon layer is empty or holds no polygons")
    return polys


def _copy(src: rasterio.io.DatasetReader, window: Window, polygons: np.ndarray | None, out: Path,
          progress: Progress) -> None:
    """Copy ``window`` of ``src`` into a new GeoTIFF with a dataset mask (source validity x polygons)."""
    width, height = int(window.width), int(window.height)
    transform = src.window_transform(window)
    tiled = width >= 256 and height >= 256
    profile = {  # only what describes the pixels: not the source's compression or photometric tags
        "driver": "GTiff", "width": width, "height": height, "count": src.count, "dtype": src.dtypes[0],
        "crs": src.crs, "transform": transform, "nodata": src.nodata, "compress": "deflate", "zlevel": 1,
        "tiled": tiled, "bigtiff": "if_safer", **({"blockxsize": 256, "blockysize": 256} if tiled else {}),
    }
    n_strips = math.ceil(height / STRIP_ROWS)
    progress.start(n_strips, "strips")
    with rasterio.open(out, "w", **profile) as dst:
        dst.colorinterp = src.colorinterp
        for i in range(n_strips):
            if progress.is_cancelled():
                raise CancelledError("cancelled; no output was written")
            rows = min(STRIP_ROWS, height - i * STRIP_ROWS)
            strip = Window(window.col_off, window.row_off + i * STRIP_ROWS, width, rows)
            target = Window(0, i * STRIP_ROWS, width, rows)
            dst.write(src.read(window=strip), window=target)
            mask = src.dataset_mask(window=strip)
            if polygons is not None:
                inside = rasterize(((g, 1) for g in polygons), out_shape=(rows, width),
                                   transform=src.window_transform(strip), fill=0, dtype="uint8")
                mask = np.where(inside.astype(bool), mask, 0).astype(np.uint8)
            dst.write_mask(mask, window=target)
            progress.advance(1)
