"""Output rasters: tiled, compressed GeoTIFFs on the input's grid, with class colours and nodata.

Profiles are data: copy the input's georeferencing, set a few keys. The class raster holds uint8 class ids
with a colour table from the model's class colours; the optional probability raster holds one band per
class in whole percent (0..100, band unit "%"). A finished class raster gets overviews (or becomes a COG) and
sidecars naming its classes (:func:`finish_class_raster`).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from fastunet_core.errors import KeptStyleWarning, OutputWriteError
from fastunet_core.io.class_tag import classes_from_tags, encode_classes, is_background
from fastunet_core.io.styles import plan_style
from fastunet_core.io.write_errors import GdalWatch
from fastunet_core.models.metadata import OUTPUT_NODATA, ClassInfo, ModelMeta

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
    """Write row chunks or blocks into an open dataset (GDAL's errors watched, when a watch is given)."""

    def __init__(self, dst: rasterio.io.DatasetWriter, watch: GdalWatch | None = None) -> None:
        self.dst = dst
        self.watch = watch

    def __call__(self, row0: int, values: np.ndarray, col0: int = 0) -> None:
        """Write ``values`` (bands, rows, columns) with its top left corner at ``row0``, ``col0``."""
        window = Window(col0, row0, values.shape[2], values.shape[1])
        if self.watch is None:
            self.dst.write(values, window=window)
        else:
            self.watch.call(lambda: self.dst.write(values, window=window))


def open_quietly(path: Path, mode: str, **profile: Any) -> Any:
    """Open ``path`` with rasterio, without its warning that the identity geotransform may not be kept.

    A raster in a local engineering CRS (a pixel frame) is georeferenced by the identity transform; GDAL
    keeps it (the CRS is written, the transform is the default), and the warning would print rasterio's
    own source path to the user.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(path, mode, **profile)


@contextlib.contextmanager
def open_output(path: Path, target: Path, mode: str, **profile: Any) -> Iterator[tuple[Any, GdalWatch]]:
    """Open ``path`` (written in place of ``target``) with every GDAL call on it watched; close it checked.

    A GDAL error while opening, writing or closing (a full disk, a read-only folder) raises a one-line
    OutputWriteError naming ``target`` and the cause, also when rasterio would only log it at close and an
    incomplete file would otherwise be taken for a finished one.
    """
    watch = GdalWatch(target)
    dst = watch.call(lambda: open_quietly(path, mode, **profile))
    try:
        yield dst, watch
    except BaseException as exc:
        try:
            watch.call(dst.close)
        except OutputWriteError as closing:  # the file is damaged too: that is what the user must know
            raise closing from exc
        raise
    watch.call(dst.close)


def describe_class_raster(dst: rasterio.io.DatasetWriter, meta: ModelMeta, source: Path) -> None:
    """Attach the colour table, band description and class/model tags to a class raster."""
    cmap = {i: (0, 0, 0, 0) for i in range(256)}
    for c in meta.classes:  # a GeoTIFF colour table keeps no alpha: background's transparency is in .qml and RAT
        cmap[c.id] = (*c.color, 255)
    dst.write_colormap(1, cmap)
    dst.set_band_description(1, "class")
    dst.update_tags(
        CLASSES=encode_classes(meta.classes),
        MODEL_ARCHITECTURE=meta.architecture,
        SOURCE=source.name,
        SOFTWARE="fastunet-geo",
    )


def describe_probs_raster(dst: rasterio.io.DatasetWriter, meta: ModelMeta) -> None:
    """Name each probability band after its class; values are whole percent, and the units say so.

    (No scale: a scale of 0.01 with units "percent" contradicted itself, 0..1 after scaling in percent.)
    """
    for i, c in enumerate(meta.classes, start=1):
        dst.set_band_description(i, f"p_{c.name}")
    dst.units = ["%"] * meta.n_classes
    dst.update_tags(UNITS="percent (0-100)", SOFTWARE="fastunet-geo")


# -- finishing a class raster: overviews, a COG if asked, and the class names where any GIS reads them --

OVERVIEW_MIN_SIDE = 256  # overviews are added until the smallest one fits in this many pixels


def overview_factors(width: int, height: int) -> list[int]:
    """Return the overview decimation factors (2, 4, 8...) until the raster fits in OVERVIEW_MIN_SIDE."""
    factors, f = [], 2
    while max(width, height) / (f // 2) > OVERVIEW_MIN_SIDE:
        factors.append(f)
        f *= 2
    return factors


def add_overviews(path: Path, target: Path | None = None) -> None:
    """Add mode overviews to the closed class raster ``path``, GDAL's errors watched (named as ``target``).

    Predict runs this on the partial file, before it is renamed into place: a disk that fills up here
    leaves no damaged output under the final name.
    """
    from rasterio.enums import Resampling

    def build() -> None:
        with open_quietly(path, "r+") as dst:
            factors = overview_factors(dst.width, dst.height)
            if factors:
                dst.build_overviews(factors, Resampling.mode)
                dst.update_tags(ns="rio_overview", resampling="mode")

    GdalWatch(target or path).call(build)


def finish_class_raster(path: Path, cog: bool = False, overviews: bool = True,
                        overwrite: bool = False) -> list[Path]:
    """Add mode overviews (or rewrite ``path`` as a Cloud Optimized GeoTIFF), then the class sidecars.

    The sidecars name and colour the classes for other software: ``X.tif.aux.xml`` (GDAL category names and
    a raster attribute table, read by GDAL, ArcGIS and QGIS) and ``X.qml`` (the QGIS style QGIS loads with
    ``X.tif``), or ``X.tif.qml`` with a warning when ``X.qml`` holds another output's style
    (:mod:`fastunet_core.io.styles`). Return the sidecar paths. ``overviews=False``: they were added
    already (:func:`add_overviews`).
    """
    from fastunet_core.io.atomic import atomic_output

    path = Path(path)
    if cog:
        from rasterio.shutil import copy as rio_copy

        with atomic_output(path, overwrite=True) as tmp:
            GdalWatch(path).call(lambda: rio_copy(path, tmp, driver="COG", COMPRESS="DEFLATE",
                                                  BLOCKSIZE=str(OUTPUT_BLOCK), OVERVIEW_RESAMPLING="MODE",
                                                  BIGTIFF="IF_SAFER"))
    elif overviews:
        add_overviews(path)
    with rasterio.open(path) as src:
        classes = list(classes_from_tags(src.tags()))
        nodata = int(src.nodata) if src.nodata is not None else OUTPUT_NODATA
    if not classes:
        return []
    aux = path.with_name(path.name + ".aux.xml")
    style = raster_qml(classes)
    plan = plan_style(path, style, overwrite)
    if plan.warning:
        warnings.warn(plan.warning, KeptStyleWarning, stacklevel=2)
    sidecars = [(aux, pam_xml(classes, nodata))] + ([(plan.path, style)] if plan.path is not None else [])
    for sidecar, text in sidecars:
        with atomic_output(sidecar, overwrite=True) as tmp:
            tmp.write_text(text, encoding="utf-8")
    return [aux, plan.path or path.with_suffix(".qml")]


def pam_xml(classes: list[ClassInfo], nodata: int) -> str:
    """Return GDAL's PAM sidecar for band 1: category names (index = class id) and a thematic RAT."""
    import xml.etree.ElementTree as ET

    root = ET.Element("PAMDataset")
    band = ET.SubElement(root, "PAMRasterBand", band="1")
    names = {c.id: c.name for c in classes}
    cats = ET.SubElement(band, "CategoryNames")
    for i in range(max(names) + 1):
        ET.SubElement(cats, "Category").text = names.get(i, "")
    rat = ET.SubElement(band, "GDALRasterAttributeTable", tableType="thematic")
    for index, (name, kind, usage) in enumerate((("Value", "0", "5"), ("Class_Name", "2", "2"), ("Red", "0", "6"),
                                                 ("Green", "0", "7"), ("Blue", "0", "8"), ("Alpha", "0", "9"))):
        field = ET.SubElement(rat, "FieldDefn", index=str(index))
        ET.SubElement(field, "Name").text = name
        ET.SubElement(field, "Type").text = kind
        ET.SubElement(field, "Usage").text = usage
    for row, c in enumerate(sorted(classes, key=lambda c: c.id)):
        values = [str(c.id), c.name, *map(str, c.color), "0" if is_background(c.name) else "255"]
        element = ET.SubElement(rat, "Row", index=str(row))
        for value in values:
            ET.SubElement(element, "F").text = value
    ET.SubElement(band, "NoDataValue").text = str(nodata)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def raster_qml(classes: list[ClassInfo]) -> str:
    """Return a QGIS style (QML) for a class raster: paletted by class, background and nodata transparent."""
    import xml.etree.ElementTree as ET

    root = ET.Element("qgis", version="3.22.0", styleCategories="Symbology")
    pipe = ET.SubElement(root, "pipe")
    renderer = ET.SubElement(pipe, "rasterrenderer", type="paletted", band="1", opacity="1", alphaBand="-1",
                             nodataColor="")
    ET.SubElement(renderer, "rasterTransparency")
    palette = ET.SubElement(renderer, "colorPalette")
    for c in classes:
        r, g, b = c.color
        ET.SubElement(palette, "paletteEntry", value=str(c.id), color=f"#{r:02x}{g:02x}{b:02x}",
                      alpha="0" if is_background(c.name) else "255", label=c.name)
    ET.SubElement(root, "blendMode").text = "0"
    ET.indent(root)
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + ET.tostring(root, encoding="unicode") + "\n"
