"""An orthophoto GeoTIFF with vector labels: polygons rasterized on the fly on the raster's own grid.

The polygons (Shapefile, GeoPackage, GeoJSON ... anything GDAL reads) are reprojected once to the
raster's CRS. Each sample is a window of the raster; its mask is made by rasterizing the polygons that
touch the window with the window's own transform (``rasterio.windows.transform``), so the labels sit on
exactly the pixels they cover in the full raster (a pixel is labelled when its centre is inside a
polygon; where polygons overlap, the later one in the file wins).

Classes: ``class_field`` names the attribute holding each polygon's class, either a name (matched to
``class_names``) or an integer code (matched to ``label_values``, default 0..n-1). Without
``class_field`` every polygon is the one non-background class. If ``class_names`` starts with
``background``, unlabelled pixels are class 0; otherwise they are IGNORE_INDEX (only what is drawn is
known). Nodata pixels of the raster (GDAL's dataset mask) are IGNORE_INDEX.

Train/val split, spatial: the bottom ``round(height * val_fraction)`` rows of the raster are the
validation strip, the rows above it the training area; each part is tiled on its own with
:func:`fastunet_core.tiling.grid.tile_windows` (no overlap except where the last row/column is moved back to be
flush with the part's edge), so no validation pixel is inside any training window, and together the
windows cover the whole raster. A part lower than the tile size gives windows of its own height (all
of them equally high, so they still batch); pad them with ``augment.pad_to_multiple`` if the model needs.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from affine import Affine
from rasterio.features import rasterize
from rasterio.windows import Window
from torch.utils.data import Dataset

from fastunet_core.errors import ConfigError, DatasetLayoutError
from fastunet_core.hints import setting
from fastunet_core.io.raster_input import inspect_raster, open_raster
from fastunet_core.models.metadata import ClassInfo
from fastunet_core.tiling.grid import tile_windows
from fastunet_core.train.datasets._common import (
    DEFAULT_VAL_FRACTION,
    IGNORE_INDEX,
    crop,
    list_some,
    make_classes,
    read_blocks,
    read_header,
    read_image,
    window_tuple,
)

log = logging.getLogger(__name__)


@dataclass
class VectorLabels:
    """Polygons in the raster's CRS with their channel, and the value of unlabelled pixels."""

    geoms: np.ndarray  # shapely geometries, file order
    channels: np.ndarray  # int, one per geometry
    fill: int
    _tree: shapely.STRtree | None = field(default=None, repr=False, compare=False)  # built on first use

    def burn(self, window: Window, raster_transform: Affine) -> np.ndarray:
        """Rasterize the polygons touching ``window`` on its pixel grid; return (H, W) int64."""
        shape = (int(window.height), int(window.width))
        if self._tree is None:
            self._tree = shapely.STRtree(self.geoms)
        transform = raster_transform @ Affine.translation(window.col_off, window.row_off)
        corner = transform @ (shape[1], shape[0])  # the raster is north-up (checked when opened)
        hits = np.sort(self._tree.query(shapely.box(transform.c, corner[1], corner[0], transform.f)))
        if len(hits) == 0:
            return np.full(shape, self.fill, dtype=np.int64)
        shapes = zip(self.geoms[hits], self.channels[hits].tolist(), strict=True)
        burned = rasterize(shapes, out_shape=shape, transform=transform, fill=self.fill, dtype="uint8")
        return burned.astype(np.int64)


class RasterVectorDataset(Dataset[tuple[np.ndarray, np.ndarray]]):
    """Windows of one raster with masks rasterized from vector labels on the fly."""

    def __init__(self, raster: Path, labels: VectorLabels, windows: Sequence[Window],
                 classes: tuple[ClassInfo, ...], vector: Path | None = None) -> None:
        header = read_header(raster)
        self.vector = vector
        with open_raster(raster) as src:
            self._transform = src.transform
        self.raster = raster
        self.labels = labels
        self.windows = list(windows)
        self.classes = classes
        self.name = f"raster_vector:{raster.stem}"
        self.input_dtype = header.dtype
        self.n_bands = len(header.bands)
        self.resolution_m = header.resolution_m
        self._bands = header.bands

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return next(self.read_group([index]))[1:]

    def read_group(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Read samples with the raster opened once, in blocks; yield (index, image, mask) for each."""
        itemsize = np.dtype(self.input_dtype).itemsize * len(self._bands)
        with open_raster(self.raster) as src:
            for block, members in read_blocks([self.windows[i] for i in indices], itemsize):
                image, invalid = read_image(src, block, self._bands)
                for m in members:
                    window = self.windows[indices[m]]
                    part = crop(block, window)
                    mask = self.labels.burn(window, self._transform)
                    if invalid is not None:
                        mask[invalid[part]] = IGNORE_INDEX
                    yield indices[m], np.ascontiguousarray(image[part]), mask

    def cache_identity(self) -> dict[str, Any]:
        """Return what fixes the samples besides the raster's contents: windows, bands, the polygons as burnt."""
        polygons = hashlib.sha256(b"".join(shapely.to_wkb(self.labels.geoms).tolist()))
        polygons.update(np.ascontiguousarray(self.labels.channels, dtype=np.int64).tobytes())
        return {"kind": type(self).__name__, "raster": str(self.raster), "dtype": self.input_dtype,
                "bands": self._bands, "transform": list(self._transform)[:6], "fill": self.labels.fill,
                "polygons": polygons.hexdigest(), "windows": [window_tuple(w) for w in self.windows]}

    def cache_sources(self) -> list[Path]:
        """Return the raster and the vector file."""
        return [self.raster] + ([self.vector] if self.vector is not None else [])

    def cache_shapes(self) -> list[tuple[int, int]]:
        """Return each sample's (height, width)."""
        return [(int(w.height), int(w.width)) for w in self.windows]

    def cache_groups(self) -> list[list[int]]:
        """Return sample indices by row of windows (strips of the raster decoded in parallel)."""
        rows: dict[int, list[int]] = {}
        for i, w in enumerate(self.windows):
            rows.setdefault(int(w.row_off), []).append(i)
        return [rows[r] for r in sorted(rows)]


def open_raster_vector(raster: Path, vector: Path, split: str, tile_size: int = 512, class_field: str | None = None,
                       class_names: Sequence[str] | None = None, label_values: Sequence[int] | None = None,
                       val_fraction: float = DEFAULT_VAL_FRACTION) -> RasterVectorDataset:
    """Open the train or val windows of a raster labelled by polygons."""
    if split not in ("train", "val"):
        raise ConfigError(f"a raster with vector labels has the splits train and val (by val_fraction), not {split!r}")
    with open_raster(raster) as src:
        info = inspect_raster(src)
        if src.crs is None:
            raise DatasetLayoutError(f"{raster.name} has no CRS, so the polygons cannot be placed on it; "
                                     f"assign one first (e.g. gdal_edit.py -a_srs EPSG:xxxx {raster.name})")
        gdf = read_polygons(vector, src.crs)
        raster_box = shapely.box(*src.bounds)
    classes, channels, fill = resolve_classes(gdf, vector, class_field, class_names, label_values)
    if not gdf.intersects(raster_box).any():
        raise DatasetLayoutError(
            f"none of the {len(gdf)} polygons of {vector.name} overlaps {raster.name} (raster bounds "
            f"{tuple(round(v, 3) for v in raster_box.bounds)}, polygons {tuple(round(v, 3) for v in gdf.total_bounds)} "
            "in the raster's CRS); check that both files cover the same area and carry the right CRS"
        )
    labels = VectorLabels(np.asarray(gdf.geometry.values, dtype=object), channels, fill)
    windows = split_windows(info.width, info.height, tile_size, val_fraction, split)
    return RasterVectorDataset(raster, labels, windows, classes, vector)


def read_polygons(vector: Path, crs: Any) -> gpd.GeoDataFrame:
    """Read the polygons of a vector file, reprojected to ``crs``; other geometry types are skipped."""
    if not vector.exists():
        raise DatasetLayoutError(f"vector labels not found: {vector}")
    try:
        gdf = gpd.read_file(vector)
    except (OSError, RuntimeError, ValueError) as exc:
        raise DatasetLayoutError(f"{vector} is not a vector file GDAL can read ({exc})") from exc
    if gdf.crs is None:
        raise DatasetLayoutError(f"{vector.name} has no CRS, so it cannot be matched to the raster; set it "
                                 "(e.g. ogr2ogr -a_srs EPSG:xxxx out.gpkg in.shp, or in QGIS: Set layer CRS)")
    keep = gdf.geometry.notna() & ~gdf.geometry.is_empty & gdf.geom_type.isin(["Polygon", "MultiPolygon"])
    if (~keep).any():
        log.warning("%s: skipping %d feature(s) that are not polygons or are empty", vector.name, int((~keep).sum()))
    gdf = gdf[keep]
    if gdf.empty:
        raise DatasetLayoutError(f"{vector.name} holds no polygons; training labels must be (multi)polygons")
    return gdf.to_crs(crs).reset_index(drop=True)


def resolve_classes(gdf: gpd.GeoDataFrame, vector: Path, class_field: str | None, class_names: Sequence[str] | None,
                    label_values: Sequence[int] | None) -> tuple[tuple[ClassInfo, ...], np.ndarray, int]:
    """Return the classes, each polygon's channel, and the fill value of unlabelled pixels."""
    if class_field is None:
        names = tuple(class_names or ("background", "foreground"))
        targets = [i for i, n in enumerate(names) if n.lower() != "background"]
        if not targets:
            raise ConfigError(f"without class_field every polygon is one class, but class_names {list(names)} "
                              "names no class for the polygons; give two names, background and the polygons' class "
                              "(e.g. [background, building]), or name the attribute that holds each polygon's class "
                              "in class_field")
        if len(targets) > 1:
            raise ConfigError(f"without class_field every polygon is one class, but class_names {list(names)} "
                              f"names {len(targets)} classes besides background; give two names, background and the "
                              "polygons' class, or name the attribute that holds each polygon's class in class_field")
        channels = np.full(len(gdf), targets[0], dtype=np.int64)
    else:
        if class_field not in gdf.columns:
            attrs = [c for c in gdf.columns if c != gdf.geometry.name]
            raise DatasetLayoutError(f"{vector.name} has no attribute {class_field!r}; its attributes are "
                                     f"{list_some(attrs)}")
        column = gdf[class_field]
        if column.isna().any():
            raise DatasetLayoutError(f"{int(column.isna().sum())} polygon(s) of {vector.name} have no "
                                     f"{class_field!r} value; fill them in or delete them")
        if pd.api.types.is_numeric_dtype(column):
            names, label_values, channels = _by_code(column, class_names, label_values)
        else:
            names, channels = _by_name(column.astype(str), class_names)
    values = list(range(len(names))) if label_values is None else [int(v) for v in label_values]
    if len(values) != len(names):
        raise ConfigError(f"label_values {values} must give one code per class in {list(names)}")
    fill = 0 if names[0].lower() == "background" else IGNORE_INDEX
    return make_classes(names, ids=values), channels, fill


def _by_name(column: pd.Series, class_names: Sequence[str] | None) -> tuple[tuple[str, ...], np.ndarray]:
    found = sorted(set(column))
    names = tuple(class_names) if class_names else ("background", *[n for n in found if n.lower() != "background"])
    unknown = [n for n in found if n not in names]
    if unknown:
        raise ConfigError(f"polygon classes {list_some(unknown)} are not in class_names {list(names)}; add them")
    index = {n: i for i, n in enumerate(names)}
    return names, np.asarray([index[v] for v in column], dtype=np.int64)


def _by_code(column: pd.Series, class_names: Sequence[str] | None,
             label_values: Sequence[int] | None) -> tuple[tuple[str, ...], Sequence[int] | None, np.ndarray]:
    codes = column.to_numpy()
    if not np.all(np.equal(np.mod(codes, 1), 0)):
        raise DatasetLayoutError(f"class codes in {column.name!r} must be whole numbers, found "
                                 f"{list_some(map(str, sorted(set(codes))))}")
    codes = codes.astype(np.int64)
    if class_names is None:
        found = sorted(set(codes.tolist()) - {0})
        class_names = ("background", *[f"class_{c}" for c in found])
        label_values = (0, *found) if label_values is None else label_values
    values = list(range(len(class_names))) if label_values is None else [int(v) for v in label_values]
    unknown = sorted(set(codes.tolist()) - set(values))
    if unknown:
        raise ConfigError(f"polygon class codes {list_some(map(str, unknown))} are not in label_values {values}; "
                          "give label_values with one code per class name")
    index = {v: i for i, v in enumerate(values)}
    return tuple(class_names), label_values, np.asarray([index[c] for c in codes.tolist()], dtype=np.int64)


def split_row(height: int, val_fraction: float) -> int:
    """Return the first pixel row of the validation strip (``height`` when there is none)."""
    if val_fraction <= 0:
        return height
    row = height - max(1, round(height * val_fraction))
    if row <= 0:
        raise ConfigError(f"the raster is {height} px high: too small to hold out {setting('data.val_fraction')} "
                          f"{val_fraction}")
    return row


def split_windows(width: int, height: int, tile: int, val_fraction: float, split: str) -> list[Window]:
    """Return the windows of the training area (top) or the validation strip (bottom), row-major."""
    row = split_row(height, val_fraction)
    top, bottom = (0, row) if split == "train" else (row, height)
    if bottom <= top:
        raise ConfigError(f"{setting('data.val_fraction')} is 0, so there is no validation strip; use "
                          f"{setting('data.val_fraction', DEFAULT_VAL_FRACTION)} for the default strip")
    rows = tile_windows(width, bottom - top, tile, 0)
    return [Window(w.col_off, w.row_off + top, w.width, w.height) for r in rows for w in r]
