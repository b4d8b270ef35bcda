"""From the dock's choices (QGIS objects, main thread) to a :class:`~.jobs.SegmentJob` and an export plan.

All checks that can be made before starting happen here and raise the core's errors with plain messages,
which the dock shows in the message bar.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from pathlib import Path

from qgis.core import (
    QgsCoordinateReferenceSystem,
    QgsMapLayer,
    QgsProcessingUtils,
    QgsProject,
    QgsRectangle,
    QgsVectorLayer,
)

from fastunet_core.errors import ConfigError
from fastunet_core.io.output_files import output_paths

from .jobs import AUTO, AreaKind, AreaSpec, SegmentJob
from .qgis_inputs import (
    ExportPlan,
    area_bounds,
    check_bands,
    check_overlap,
    check_raster_layer,
    extent_area,
    parse_bands,
    pixel_size_in_layer_units,
    plan_export,
    polygon_area,
    raster_file_path,
)


@dataclass
class DockChoices:
    """What the user set in the dock."""

    layer: QgsMapLayer | None
    model: str
    device: str = "auto"
    tile_size_px: int | None = None
    overlap_px: int | None = None
    batch_size: int | None = None  # None: the core's default for the device
    area: AreaKind = "layer"
    map_extent: QgsRectangle | None = None
    map_crs: QgsCoordinateReferenceSystem | None = None
    map_width_px: int = 0  # the canvas width: the fallback resolution for web layers
    polygon_layer: QgsMapLayer | None = None
    selected_only: bool = False
    vectorize: bool = True
    simplify_m: float = AUTO
    min_area_m2: float = AUTO
    class_output: str = ""  # empty: a temporary file
    polygons_output: str = ""
    model_resolution_m: float | None = None
    bands: str = ""  # typed band numbers, empty: the model's
    model_bands: tuple[int, ...] | None = None  # the bands the model reads (None: model not read yet)
    resolution: str = "auto"  # the ground resolution to run at: auto, native or metres


@dataclass
class RunPlan:
    """A job ready to start, with the export it needs first (web layers) and a name for its layers."""

    job: SegmentJob
    export: ExportPlan | None
    name: str


def plan_run(c: DockChoices, project: QgsProject | None = None) -> RunPlan:
    """Check the choices and turn them into a job; raise a FastUNetError saying what to fix."""
    proj = project or QgsProject.instance()
    layer = check_raster_layer(c.layer)
    from fastunet_core.inference.resolution import parse_resolution

    parse_resolution(c.resolution)
    model = Path(c.model.strip()) if c.model.strip() else None
    if model is None:
        raise ConfigError("choose a model file (.safetensors) first")
    if not model.exists():  # a file, or an smp save_pretrained folder
        raise ConfigError(f"the model file does not exist: {model}")
    area = _area(c, layer, proj)
    check_overlap(layer, area)  # now, not after the engine has started and loaded the model
    path = raster_file_path(layer)
    bands = parse_bands(c.bands)
    if path is not None and c.model_bands is not None:  # found now, not after the engine has started
        bands = check_bands(layer, c.model_bands, bands)
    export = None
    if path is None:
        export = plan_export(layer, area, _export_resolution(c, layer, area), proj.transformContext())
        path = Path(layer.source())  # replaced by the export when the task runs
    name = layer.name()
    class_out = _output(c.class_output, f"{name}_classes.tif", (".tif", ".tiff"))
    polygons_out = _output(c.polygons_output, f"{name}_polygons.gpkg", (".gpkg", ".shp", ".geojson")) \
        if c.vectorize else None
    job = SegmentJob(raster=path, model=model, class_output=class_out, polygons_output=polygons_out,
                     tile_size_px=c.tile_size_px, overlap_px=c.overlap_px, batch_size=c.batch_size,
                     device=c.device, area=area, simplify_m=c.simplify_m, min_area_m2=c.min_area_m2,
                     overwrite=False, work_dir=Path(QgsProcessingUtils.tempFolder()), bands=bands,
                     resolution=c.resolution.strip() or "auto")
    return RunPlan(job, export, name)


def existing_outputs(job: SegmentJob) -> list[Path]:
    """Return the files the run would replace: its class raster(s) and polygon file(s) that exist already.

    A Shapefile's sidecars count with it (named alone only when its .shp is missing). A Deepness ONNX model
    may have several output heads, each written as ``X_headK`` beside ``X`` (see the core's ``head_path``);
    the dock does not know how many before the engine runs, so every existing ``X_headK`` file is named too.
    The dock asks before replacing them and then runs with ``overwrite``; without it the core refuses a file
    that appeared meanwhile.
    """
    several_heads = job.model.suffix.lower() == ".onnx"
    found: list[Path] = []
    for out, vector in ((job.class_output, False), (job.polygons_output, True)):
        if out is None:
            continue
        for target in [out, *(_head_files(out) if several_heads else [])]:
            present = [p for p in (output_paths(target) if vector else [target]) if p.exists()]
            found += [target] if target in present else present
    return found


def _head_files(out: Path) -> list[Path]:
    """Return the existing ``X_headK`` files beside ``out`` (``X``), in head order."""
    pattern = re.compile(rf"{re.escape(out.stem)}_head(\d+){re.escape(out.suffix)}")
    heads = [(int(m.group(1)), p) for p in out.parent.glob(f"{glob.escape(out.stem)}_head*{glob.escape(out.suffix)}")
             if (m := pattern.fullmatch(p.name))]
    return [p for _k, p in sorted(heads)]


def _area(c: DockChoices, layer: QgsMapLayer, project: QgsProject) -> AreaSpec:
    crs = layer.crs()
    if c.area == "extent":
        if c.map_extent is None or c.map_crs is None:
            raise ConfigError("the current map extent is not known")
        return extent_area(c.map_extent, c.map_crs, crs, project.transformContext(), "the current map extent")
    if c.area == "polygons":
        poly = c.polygon_layer
        if not isinstance(poly, QgsVectorLayer) or not poly.isValid():
            raise ConfigError("choose a valid polygon layer for the processed area")
        features = poly.selectedFeatures() if c.selected_only else poly.getFeatures()
        return polygon_area(features, poly.crs(), crs, project.transformContext(), repr(poly.name()))
    return AreaSpec()


def _export_resolution(c: DockChoices, layer: QgsMapLayer, area: AreaSpec) -> tuple[float, float]:
    """Return the model's ground resolution in the layer's units; without one, the map's current one."""
    bounds = area_bounds(area)
    if c.model_resolution_m:
        return pixel_size_in_layer_units(layer.crs(), c.model_resolution_m, bounds)
    if c.map_width_px <= 0 or c.map_extent is None or c.map_crs is None:
        raise ConfigError("the model does not record its ground resolution and the map's is unknown")
    shown = extent_area(c.map_extent, c.map_crs, layer.crs(), QgsProject.instance().transformContext(),
                        "the current map extent")
    xmin, _ymin, xmax, _ymax = shown.bounds or (0.0, 0.0, 0.0, 0.0)
    size = (xmax - xmin) / c.map_width_px
    return size, size


def _output(text: str, default_name: str, suffixes: tuple[str, ...]) -> Path:
    """Return the user's output path, or a new temporary file in QGIS's Processing temp folder."""
    if text.strip():
        out = Path(text.strip()).expanduser()
        if out.suffix.lower() not in suffixes:
            raise ConfigError(f"{out.name}: the output must end in {' or '.join(suffixes)}")
        if not out.parent.is_dir():
            raise ConfigError(f"the output folder does not exist: {out.parent}")
        return out
    out = Path(QgsProcessingUtils.generateTempFilename(_safe(default_name)))
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)
