"""Turn QGIS inputs into plain job values: a layer's file, the processed area, web layers written to a file.

Everything here runs on the main thread except :func:`run_export`, which a task or a Processing algorithm
calls on its worker thread (it touches only a cloned data provider and a file writer, no GUI).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from qgis.core import (
    Qgis,
    QgsCoordinateReferenceSystem,
    QgsCoordinateTransform,
    QgsCoordinateTransformContext,
    QgsCsException,
    QgsFeature,
    QgsFeedback,
    QgsGeometry,
    QgsProviderRegistry,
    QgsRasterBlockFeedback,
    QgsRasterDataProvider,
    QgsRasterFileWriter,
    QgsRasterLayer,
    QgsRasterPipe,
    QgsRectangle,
    QgsUnitTypes,
)
from qgis.PyQt.QtCore import Qt

from fastunet_core.errors import CancelledError, ConfigError, InputRasterError

from .jobs import AreaSpec, SegmentJob

MAX_EXPORT_SIDE_PX = 20_000  # a web layer is fetched at the model's resolution: refuse areas beyond this
_M_PER_DEG_LAT = 110_574.0
_M_PER_DEG_LON_EQUATOR = 111_320.0


def raster_file_path(layer: QgsRasterLayer) -> Path | None:
    """Return the local file behind a GDAL raster layer, or None for web, database and other layers."""
    if layer.providerType() != "gdal":
        return None
    parts = QgsProviderRegistry.instance().decodeUri("gdal", layer.source())
    path = parts.get("path") or ""
    if not path or parts.get("layerName") or parts.get("vsiPrefix") or "://" in path:
        return None
    return Path(path)  # if it has gone missing since, the engine says so


def check_raster_layer(layer: object) -> QgsRasterLayer:
    """Return ``layer`` if it is a readable raster layer, else raise an error saying what is wrong."""
    if layer is None:
        raise ConfigError("choose a raster layer to segment")
    if not isinstance(layer, QgsRasterLayer):
        raise ConfigError(f"the layer '{layer.name()}' is not a raster layer")  # type: ignore[attr-defined]
    if not layer.isValid():
        detail = layer.error().summary().strip() or "its source cannot be read"
        raise InputRasterError(f"the layer {layer.name()!r} is not valid ({detail}); fix or remove it")
    return layer


def extent_area(extent: QgsRectangle, extent_crs: QgsCoordinateReferenceSystem,
                raster_crs: QgsCoordinateReferenceSystem, context: QgsCoordinateTransformContext,
                what: str = "the extent") -> AreaSpec:
    """Return the area inside ``extent`` (given in ``extent_crs``), in the raster's CRS (``what``: its name)."""
    rect = QgsRectangle(extent)
    if extent_crs.isValid() and raster_crs.isValid() and extent_crs != raster_crs:
        try:
            rect = QgsCoordinateTransform(extent_crs, raster_crs, context).transformBoundingBox(rect)
        except QgsCsException as exc:  # e.g. projected numbers in a degrees CRS: no such place on Earth
            raise ConfigError(f"{what} cannot be transformed from {extent_crs.authid()} to the raster's CRS "
                              f"{raster_crs.authid()} ({exc}); zoom to the raster, or choose polygons as the "
                              "area") from exc
    if rect.isEmpty() or not math.isfinite(rect.width()):
        raise ConfigError("the processed extent is empty")
    return AreaSpec("extent", (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum()))


def polygon_area(features: Iterable[QgsFeature], source_crs: QgsCoordinateReferenceSystem,
                 raster_crs: QgsCoordinateReferenceSystem, context: QgsCoordinateTransformContext,
                 source_name: str = "the polygon layer") -> AreaSpec:
    """Return the area inside the polygons of ``features`` (in ``source_crs``), reprojected to the raster's."""
    xform = None
    if source_crs.isValid() and raster_crs.isValid() and source_crs != raster_crs:
        xform = QgsCoordinateTransform(source_crs, raster_crs, context)
    wkbs: list[bytes] = []
    for feature in features:
        geom = QgsGeometry(feature.geometry())
        if geom.isNull() or geom.isEmpty() or geom.type() != Qgis.GeometryType.Polygon:
            continue
        if xform is not None:
            try:
                geom.transform(xform)
            except QgsCsException as exc:
                raise ConfigError(f"{source_name} cannot be transformed from {source_crs.authid()} to the raster's "
                                  f"CRS {raster_crs.authid()} ({exc}); check the layer's CRS") from exc
        wkbs.append(bytes(geom.asWkb()))
    if not wkbs:
        raise ConfigError(f"{source_name} holds no polygon to process (or none is selected)")
    return AreaSpec("polygons", polygons_wkb=tuple(wkbs))


def check_overlap(layer: QgsRasterLayer, area: AreaSpec) -> None:
    """Refuse an extent or polygons whose bounding box misses ``layer``: pure geometry, before the engine starts.

    The core's crop (:func:`fastunet_core.io.area.pixel_window`) refuses the same area by the same box, but
    only once the engine has started and loaded the model.
    """
    if area.kind == "layer" or layer.extent().isEmpty():
        return
    if area_bounds(area).intersect(layer.extent()).isEmpty():
        raise ConfigError(f"the processed area does not overlap the layer {layer.name()!r}; check the extent or "
                          "polygons (are they in the right place and CRS?)")


def area_bounds(area: AreaSpec) -> QgsRectangle:
    """Return the bounding box of an extent or polygon area."""
    if area.kind == "extent" and area.bounds is not None:
        return QgsRectangle(*area.bounds)
    if area.kind == "polygons":
        box = QgsRectangle()
        box.setNull()
        for wkb in area.polygons_wkb:
            geom = QgsGeometry()
            geom.fromWkb(wkb)
            box.combineExtentWith(geom.boundingBox())
        return box
    raise ConfigError("this layer is not a file: choose the current map extent or polygons as the processed "
                      "area, so that only that part is fetched")


@dataclass
class ExportPlan:
    """A non-file layer's part to write to a GeoTIFF before segmenting (prepared on the main thread)."""

    provider: QgsRasterDataProvider  # a clone: safe to read on the worker thread
    extent: QgsRectangle  # in the layer's CRS
    crs: QgsCoordinateReferenceSystem
    width: int
    height: int
    context: QgsCoordinateTransformContext
    resolution: tuple[float, float]  # layer units per pixel

    def describe(self) -> str:
        """Say what will be written, e.g. '1024 x 768 pixels at 0.6 m'."""
        return f"{self.width} x {self.height} pixels of {self.resolution[0]:.3g} x {self.resolution[1]:.3g} " \
               f"{QgsUnitTypes.toAbbreviatedString(self.crs.mapUnits())} per pixel"


def pixel_size_in_layer_units(crs: QgsCoordinateReferenceSystem, metres: float,
                              at: QgsRectangle) -> tuple[float, float]:
    """Return (x, y) pixel sizes in the CRS's units for a ground resolution in metres (near ``at``)."""
    if crs.isGeographic():
        lat = math.radians(at.center().y())
        return metres / (_M_PER_DEG_LON_EQUATOR * max(math.cos(lat), 1e-6)), metres / _M_PER_DEG_LAT
    factor = QgsUnitTypes.fromUnitToUnitFactor(Qgis.DistanceUnit.Meters, crs.mapUnits())
    return metres * factor, metres * factor


def plan_export(layer: QgsRasterLayer, area: AreaSpec, resolution: tuple[float, float],
                context: QgsCoordinateTransformContext) -> ExportPlan:
    """Plan writing the area's bounding box of ``layer`` at ``resolution`` (layer units per pixel)."""
    check_overlap(layer, area)
    extent = area_bounds(area).intersect(layer.extent()) if not layer.extent().isEmpty() else area_bounds(area)
    rx, ry = resolution
    if not (rx > 0 and ry > 0):
        raise ConfigError("the export resolution must be positive")
    width, height = max(1, math.ceil(extent.width() / rx)), max(1, math.ceil(extent.height() / ry))
    if max(width, height) > MAX_EXPORT_SIDE_PX:
        raise ConfigError(f"the processed area would be {width} x {height} pixels at this resolution; "
                          f"choose a smaller area (at most {MAX_EXPORT_SIDE_PX} pixels a side)")
    extent = QgsRectangle(extent.xMinimum(), extent.yMaximum() - height * ry,
                          extent.xMinimum() + width * rx, extent.yMaximum())
    provider = layer.dataProvider().clone()
    return ExportPlan(provider, extent, layer.crs(), width, height, context, (rx, ry))


def run_export(plan: ExportPlan, output: Path, feedback: QgsFeedback | None = None) -> Path:
    """Write the planned part of the layer to ``output`` (GeoTIFF); safe on a worker thread."""
    pipe = QgsRasterPipe()
    if not pipe.set(plan.provider):
        raise InputRasterError("the layer's data cannot be read for export")
    writer = QgsRasterFileWriter(str(output))
    writer.setOutputFormat("GTiff")
    writer.setCreateOptions(["COMPRESS=DEFLATE", "ZLEVEL=1", "TILED=YES"])
    blocks = QgsRasterBlockFeedback()  # the writer takes this kind; a cancel of ``feedback`` is passed on
    if feedback is not None:
        if feedback.isCanceled():
            raise CancelledError("cancelled; no output was written")
        feedback.canceled.connect(blocks.cancel, Qt.ConnectionType.DirectConnection)  # no event loop here
    error = writer.writeRaster(pipe, plan.width, plan.height, plan.extent, plan.crs, plan.context, blocks)
    if error != QgsRasterFileWriter.WriterError.NoError:
        with contextlib.suppress(OSError):
            output.unlink()
        if blocks.isCanceled():
            raise CancelledError("cancelled; no output was written")
        raise InputRasterError(f"the layer could not be written to a temporary GeoTIFF ({error.name}); "
                               "is the service reachable?")
    return output


@contextlib.contextmanager
def exported_input(job: SegmentJob, plan: ExportPlan | None, feedback: QgsFeedback | None = None
                   ) -> Iterator[SegmentJob]:
    """Yield ``job``, reading from a temporary export of the layer when there is a plan; remove it after."""
    if plan is None:
        yield job
        return
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fastunet_export_", dir=job.work_dir) as tmp:
        raster = run_export(plan, Path(tmp) / f"{job.class_output.stem}_source.tif", feedback)
        area = AreaSpec() if job.area.kind == "extent" else job.area  # the export is the extent already
        yield replace(job, raster=raster, area=area)


def parse_bands(text: str) -> tuple[int, ...] | None:
    """Read band numbers typed as ``3, 2, 1`` (or spaces); None when empty; raise on anything else."""
    parts = [p for p in text.replace(",", " ").split() if p]
    if not parts:
        return None
    if not all(p.isdigit() and int(p) >= 1 for p in parts):
        raise ConfigError(f"bands are band numbers from 1 separated by commas, e.g. 1, 2, 3; got {text.strip()!r}")
    return tuple(int(p) for p in parts)


def data_band_count(layer: QgsRasterLayer) -> int:
    """Return how many of the layer's bands are data (not alpha)."""
    provider = layer.dataProvider()
    alpha = Qgis.RasterColorInterpretation.AlphaBand
    return sum(1 for b in range(1, layer.bandCount() + 1) if provider.colorInterpretation(b) != alpha)


def _alpha_note(layer: QgsRasterLayer) -> str:
    """Say which bands are tagged alpha (read as validity, not data) and what choosing one means."""
    provider = layer.dataProvider()
    alpha = [b for b in range(1, layer.bandCount() + 1)
             if provider.colorInterpretation(b) == Qgis.RasterColorInterpretation.AlphaBand]
    if not alpha:
        return ""
    which = ", ".join(map(str, alpha))
    return (f"; band {which} is tagged alpha, so it is read as a validity mask, not data. If it holds data (e.g. "
            "NIR), choose it under Bands: a chosen band is fed to the model as data and marks no pixel as nodata")


def check_bands(layer: QgsRasterLayer, model_bands: tuple[int, ...], chosen: tuple[int, ...] | None
                ) -> tuple[int, ...] | None:
    """Check before the engine starts that the layer can feed the model; return the bands to read.

    ``chosen`` (band numbers in the model's channel order) overrides the model's own band list. Raise a
    ConfigError that says how to choose bands in the dialog when they do not fit.
    """
    count, n = layer.bandCount(), len(model_bands)
    wanted = ", ".join(map(str, model_bands))
    if chosen is not None:
        if len(chosen) != n:
            raise ConfigError(f"{len(chosen)} band(s) chosen but the model reads {n} (its bands: {wanted}); "
                              f"choose {n} band numbers under Bands")
        missing = [b for b in chosen if b > count]
        if missing:
            raise ConfigError(f"the layer '{layer.name()}' has {count} band(s); band(s) "
                              f"{', '.join(map(str, missing))} do not exist: choose others under Bands")
        return chosen
    data = data_band_count(layer)
    if count < n:  # the layer lacks bands: only a band given twice would fill the input
        repeat = ", ".join(str(1 + i % count) for i in range(n))
        raise ConfigError(f"the layer '{layer.name()}' has {count} band(s) but the model needs {n} (bands {wanted}); "
                          f"segment a raster with {n} bands or use a model trained on {count}-band rasters (or repeat "
                          f"a band under Bands, e.g. {repeat})")
    if data != n or max(model_bands) > count:
        raise ConfigError(f"the layer '{layer.name()}' has {data} data band(s) but the model reads {n} (bands {wanted})"
                          f"{_alpha_note(layer)}; choose which {n} of the layer's bands to use under Bands (e.g. "
                          f"{', '.join(str(b) for b in range(1, min(n, count) + 1))})")
    return None
