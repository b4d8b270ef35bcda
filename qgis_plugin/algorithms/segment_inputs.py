"""Read the segment algorithm's parameters into a :class:`~..jobs.SegmentJob` (and an export plan)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import (
    QgsFeatureRequest,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingUtils,
)

from ..jobs import AreaSpec, SegmentJob
from ..qgis_inputs import (
    ExportPlan,
    area_bounds,
    check_bands,
    check_overlap,
    check_raster_layer,
    extent_area,
    pixel_size_in_layer_units,
    plan_export,
    polygon_area,
    raster_file_path,
)
from .common import DEVICE_OPTIONS, output_path


def segment_job(alg: QgsProcessingAlgorithm, parameters: dict[str, Any], context: QgsProcessingContext
                ) -> tuple[SegmentJob, ExportPlan | None]:
    """Return the job the parameters describe; raise the core's errors for anything wrong."""
    layer = check_raster_layer(alg.parameterAsRasterLayer(parameters, "INPUT", context))
    model = Path(alg.parameterAsFile(parameters, "MODEL", context))
    area = _area(alg, parameters, context, layer)
    check_overlap(layer, area)  # now, not after the engine has started and loaded the model
    export = None
    raster = raster_file_path(layer)
    chosen = tuple(alg.parameterAsInts(parameters, "BANDS", context)) or None
    bands = chosen
    if raster is not None:  # found now, not after the engine has started
        from ..model_header import read_model_meta

        bands = check_bands(layer, read_model_meta(model).input.bands, chosen)
    if raster is None:
        export = plan_export(layer, area, _resolution(alg, parameters, context, layer, model, area),
                             context.transformContext())
        raster = Path(layer.source())
    tile = alg.parameterAsInt(parameters, "TILE_SIZE", context)
    overlap = alg.parameterAsInt(parameters, "OVERLAP", context)
    polygons = alg.parameterAsOutputLayer(parameters, "OUTPUT_POLYGONS", context)
    job = SegmentJob(
        raster=raster, model=model,
        class_output=output_path(alg.parameterAsOutputLayer(parameters, "OUTPUT", context)),
        polygons_output=output_path(polygons) if polygons else None,
        tile_size_px=tile or None, overlap_px=None if overlap < 0 else overlap,
        batch_size=alg.parameterAsInt(parameters, "BATCH_SIZE", context) or None,  # 0: the device's default
        device=DEVICE_OPTIONS[alg.parameterAsEnum(parameters, "DEVICE", context)], area=area,
        simplify_m=alg.parameterAsDouble(parameters, "SIMPLIFY", context),
        min_area_m2=alg.parameterAsDouble(parameters, "MIN_AREA", context), overwrite=True, bands=bands,
        work_dir=Path(QgsProcessingUtils.tempFolder()),
        resolution=_run_resolution(alg.parameterAsString(parameters, "RUN_RESOLUTION", context)),
        output_grid=("source", "model")[alg.parameterAsEnum(parameters, "OUTPUT_GRID", context)])
    return job, export


def _run_resolution(text: str) -> str:
    """Check the run resolution now (auto, native or metres), not after the engine has started."""
    from fastunet_core.inference.resolution import parse_resolution

    value = (text or "auto").strip()
    parse_resolution(value)
    return value


def _area(alg: QgsProcessingAlgorithm, parameters: dict[str, Any], context: QgsProcessingContext,
          layer: Any) -> AreaSpec:
    crs = layer.crs()
    source = alg.parameterAsSource(parameters, "MASK", context)
    if source is not None:
        features = source.getFeatures(QgsFeatureRequest())
        return polygon_area(features, source.sourceCrs(), crs, context.transformContext(), "the mask layer")
    extent = alg.parameterAsExtent(parameters, "EXTENT", context, crs)  # null when not given
    if not extent.isNull():
        return extent_area(extent, crs, crs, context.transformContext())
    return AreaSpec()


def _resolution(alg: QgsProcessingAlgorithm, parameters: dict[str, Any], context: QgsProcessingContext,
                layer: Any, model: Path, area: AreaSpec) -> tuple[float, float]:
    """Return a web layer's export resolution in its units: the parameter's, else the model's."""
    metres = alg.parameterAsDouble(parameters, "RESOLUTION", context)
    if metres <= 0:
        from ..model_header import read_model_meta

        metres = read_model_meta(model).resolution_m or 0.0
    if metres <= 0:
        raise QgsProcessingException("the input is a web layer and the model records no ground resolution; "
                                     "set the resolution parameter (metres per pixel)")
    return pixel_size_in_layer_units(layer.crs(), metres, area_bounds(area))
