"""Output rasters: tiled, compressed GeoTIFFs on the input's grid, with class colours and nodata.

Profiles are data: copy the input's georeferencing, set a few keys. The class raster holds uint8 class ids
with a colour table from the model's class colours; the optional probability raster holds one band per
class in whole percent (0..100, scale 0.01).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from fastunet_core.models.metadata import OUTPUT_NODATA, ModelMeta

OUTPUT_BLOCK = 512


def _base_profile(src: rasterio.io.DatasetReader, count: int) -> dict[str, Any]:
    small_side = min(src.width, src.height)
    block = next((b for b in (OUTPUT_BLOCK, 256, 128, 64, 32) if b <= small_side), 16)
    return {
        "driver": "GTiff",
        "width": src.width,
        "height": src.height,
        "count": count,
        "dtype": "uint8",
        "crs": src.crs,
        "transform": src.transform,
        "nodata": OUTPUT_NODATA,
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
        "compress": "deflate",
        "interleave": "pixel" if count <= 4 else "band",
        "bigtiff": "if_safer",
    }


def block_rows(profile: dict[str, Any]) -> int:
    """Return the output's block height: rows are written in chunks of this."""
    return int(profile["blockysize"])


def class_profile(src: rasterio.io.DatasetReader) -> dict[str, Any]:
    """Profile of the class-id raster."""
    return _base_profile(src, 1)


def probs_profile(src: rasterio.io.DatasetReader, n_classes: int) -> dict[str, Any]:
    """Profile of the per-class probability raster."""
    return _base_profile(src, n_classes)


class RasterRowWriter:
    """Write full-width row chunks into an open dataset."""

    def __init__(self, dst: rasterio.io.DatasetWriter) -> None:
        self.dst = dst

    def __call__(self, row0: int, values: np.ndarray) -> None:
        """Write ``values`` (bands, rows, width) starting at ``row0``."""
        self.dst.write(values, window=Window(0, row0, values.shape[2], values.shape[1]))


def describe_class_raster(dst: rasterio.io.DatasetWriter, meta: ModelMeta, source: Path) -> None:
    """Attach the colour table, band description and class/model tags to a class raster."""
    cmap = {i: (0, 0, 0, 0) for i in range(256)}
    for c in meta.classes:  # background is transparent: the imagery under the class map stays visible
        cmap[c.id] = (*c.color, 0 if c.name.strip().lower() == "background" else 255)
    dst.write_colormap(1, cmap)
    dst.set_band_description(1, "class")
    dst.update_tags(
        CLASSES=json.dumps([{"id": c.id, "name": c.name, "color": list(c.color)} for c in meta.classes]),
        MODEL_ARCHITECTURE=meta.architecture,
        SOURCE=source.name,
        SOFTWARE="fastunet-geo",
    )


def describe_probs_raster(dst: rasterio.io.DatasetWriter, meta: ModelMeta) -> None:
    """Name each probability band after its class and record the percent scale."""
    for i, c in enumerate(meta.classes, start=1):
        dst.set_band_description(i, f"p_{c.name}")
    dst.scales = [0.01] * meta.n_classes
    dst.update_tags(UNITS="percent", SOFTWARE="fastunet-geo")
