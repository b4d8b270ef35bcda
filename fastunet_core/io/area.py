"""The part of a raster to process (:class:`AreaSpec`), and cutting it out of the raster (:func:`crop_to_area`).

The window is the area's bounds turned into pixel rows and columns of the source (widened outward to whole
pixels and clipped to the raster), so the crop keeps the source's grid exactly: no resampling, and the
class raster lines up with the source pixel for pixel. For polygons, pixels whose centre lies outside every
polygon are masked (GDAL's dataset mask), so the core treats them as nodata: they are not segmented, come
out as nodata, and are not vectorised. The source's own nodata/mask/alpha is carried over.

Rows are copied in strips, so memory follows the window's width, not its area. rasterio and shapely are
imported when a crop runs: :class:`AreaSpec` is plain data that the QGIS plugin builds on its GUI thread.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from fastunet_core.errors import CancelledError, ConfigError, InputRasterError
from fastunet_core.io.sources import RasterSource
from fastunet_core.runtime.progress import NullProgress, Progress

if TYPE_CHECKING:
    import rasterio
    from rasterio.windows import Window

AreaKind = Literal["layer", "extent", "polygons"]
STRIP_ROWS = 512
_EPS = 1e-6  # pixels: a bound within this of a pixel edge counts as on it (float noise in map units)


@dataclass(frozen=True)
class AreaSpec:
    """Which part of the raster to process, in the raster's CRS.

    Attributes:
        kind: ``layer`` (all of it), ``extent`` (``bounds``) or ``polygons`` (inside ``polygons_wkb``).
        bounds: xmin, ymin, xmax, ymax of the extent.
        polygons_wkb: the polygons, as WKB, already in the raster's CRS.

    """

    kind: AreaKind = "layer"
    bounds: tuple[float, float, float, float] | None = None
    polygons_wkb: tuple[bytes, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (WKB as hex)."""
        return {"kind": self.kind, "bounds": list(self.bounds) if self.bounds else None,
                "polygons_wkb": [w.hex() for w in self.polygons_wkb]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AreaSpec:
        """Rebuild from :meth:`to_dict`."""
        bounds = d.get("bounds")
        return cls(d["kind"], tuple(bounds) if bounds else None,
                   tuple(bytes.fromhex(h) for h in d.get("polygons_wkb", ())))

    def describe(self) -> str:
        """Say in words what is processed."""
        if self.kind == "extent":
            return "the extent"
        if self.kind == "polygons":
            return f"inside {len(self.polygons_wkb)} polygon(s)"
        return "the whole layer"


def crop_to_area(raster: RasterSource, area: AreaSpec, out: Path,
                 progress: Progress | None = None) -> RasterSource:
    """Return ``raster`` itself for the whole layer, else write the area to ``out`` (GeoTIFF) and return it."""
    import rasterio
    import shapely

    prog = progress or NullProgress()
    if area.kind == "layer":
        return raster
    polygons = _polygons(area)
    bounds = area.bounds if area.kind == "extent" else tuple(shapely.total_bounds(polygons))
    if bounds is None:
        raise ConfigError("the processed extent is missing")
    with rasterio.open(os.fspath(raster)) as src:
        window = pixel_window(src, bounds)
        _copy(src, window, polygons if area.kind == "polygons" else None, out, prog)
    return out


def pixel_window(src: rasterio.io.DatasetReader, bounds: tuple[float, float, float, float]) -> Window:
    """Return the whole-pixel window of ``src`` covering ``bounds``, clipped to the raster."""
    from rasterio.windows import Window

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
    import shapely

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
    import rasterio
    from rasterio.features import rasterize
    from rasterio.windows import Window

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
