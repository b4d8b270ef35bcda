"""``fastunetgeo:segment``: segment a raster into a class raster and, optionally, class polygons."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import (
    Qgis,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBand,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
)

from fastunet_core.runtime.device import CPU_BATCH, CUDA_BATCH

from ..deps import SEGMENT_MODULES
from .common import (
    DEVICE_OPTIONS,
    ClassStyle,
    FastUNetAlgorithm,
    FeedbackSink,
    engine_errors,
    polygon_option_parameters,
    require_engine,
)


class SegmentAlgorithm(FastUNetAlgorithm):
    """Segment a raster layer with a fastunet-geo model."""

    INPUT, MODEL, DEVICE = "INPUT", "MODEL", "DEVICE"
    EXTENT, MASK = "EXTENT", "MASK"
    TILE_SIZE, OVERLAP, BATCH_SIZE, RESOLUTION = "TILE_SIZE", "OVERLAP", "BATCH_SIZE", "RESOLUTION"
    RUN_RESOLUTION, OUTPUT_GRID = "RUN_RESOLUTION", "OUTPUT_GRID"
    SIMPLIFY, MIN_AREA, BANDS = "SIMPLIFY", "MIN_AREA", "BANDS"
    OUTPUT, OUTPUT_POLYGONS = "OUTPUT", "OUTPUT_POLYGONS"

    def name(self) -> str:
        """Return the algorithm id."""
        return "segment"

    def displayName(self) -> str:
        """Return the name shown in the toolbox."""
        return "Segment raster"

    def shortHelpString(self) -> str:
        """Describe the algorithm."""
        return ("Segments a raster with a fastunet-geo model (.safetensors) into a class raster (one class id per "
                "pixel, nodata 255, colours and names from the model), tile by tile in bounded memory. "
                "The polygons output (on by default) vectorizes the classes, simplified by one pixel and without "
                "polygons under two pixels unless set otherwise. Bands: the raster bands to read, in the model's "
                "order, when the raster's do not match the model's. "
                "Tile size 0 and overlap -1 take the model's values. Extent and mask polygons limit the "
                "processed area. Web layers (WMS, XYZ) are first written to a temporary GeoTIFF at the "
                "model's resolution (or the resolution given).")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        """Declare the parameters."""
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Input raster"))
        self.addParameter(QgsProcessingParameterFile(
            self.MODEL, "Model (.safetensors, or a Deepness-format .onnx)", Qgis.ProcessingFileParameterBehavior.File,
            fileFilter="Models (*.safetensors *.onnx);;All files (*)"))
        self.addParameter(QgsProcessingParameterEnum(self.DEVICE, "Device", DEVICE_OPTIONS, defaultValue=0))
        self.addParameter(QgsProcessingParameterExtent(self.EXTENT, "Processed extent", optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.MASK, "Process only inside these polygons", [QgsProcessing.SourceType.TypeVectorPolygon],
            optional=True))
        advanced = [
            QgsProcessingParameterNumber(self.TILE_SIZE, "Tile size (px, 0: the model's)",
                                         Qgis.ProcessingNumberParameterType.Integer, 0, minValue=0),
            QgsProcessingParameterNumber(self.OVERLAP, "Overlap (px, -1: the model's)",
                                         Qgis.ProcessingNumberParameterType.Integer, -1, minValue=-1),
            QgsProcessingParameterNumber(self.BATCH_SIZE, f"Batch size (tiles per model call, 0: {CPU_BATCH} on a "
                                         f"CPU, {CUDA_BATCH} on CUDA)",
                                         Qgis.ProcessingNumberParameterType.Integer, 0, minValue=0),
            QgsProcessingParameterNumber(self.RESOLUTION, "Web layers: ground resolution (m, 0: the model's)",
                                         Qgis.ProcessingNumberParameterType.Double, 0.0, minValue=0.0),
            QgsProcessingParameterString(
                self.RUN_RESOLUTION, "Resolution to run the model at (auto: its own when the raster's differs by "
                "more than 10 %; native: the raster's; or metres)", "auto"),
            QgsProcessingParameterEnum(self.OUTPUT_GRID, "Class raster grid when resampling",
                                       ["source raster's grid", "the grid the model ran on"], defaultValue=0),
        ]
        for param in advanced:
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
            self.addParameter(param)
        self.addParameter(QgsProcessingParameterBand(
            self.BANDS, "Bands, in the model's order (none: the model's)", parentLayerParameterName=self.INPUT,
            optional=True, allowMultiple=True))
        for param in polygon_option_parameters(self.SIMPLIFY, self.MIN_AREA, "Polygons: "):
            self.addParameter(param)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Class raster"))
        self.addParameter(QgsProcessingParameterVectorDestination(
            self.OUTPUT_POLYGONS, "Class polygons", QgsProcessing.SourceType.TypeVectorPolygon, optional=True,
            createByDefault=True))
        self.addOutput(QgsProcessingOutputString("DEVICE", "Device used, and why"))
        self.addOutput(QgsProcessingOutputNumber("TILES", "Tiles"))
        self.addOutput(QgsProcessingOutputNumber("FEATURES", "Polygons written"))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        """Read the parameters, run the core, return the outputs."""
        from ..engine_process import run_segment
        from ..qgis_inputs import exported_input
        from .segment_inputs import segment_job

        require_engine(SEGMENT_MODULES)
        with engine_errors():
            job, export = segment_job(self, parameters, context)
            with exported_input(job, export, feedback) as ready:
                outcome = run_segment(ready, FeedbackSink(feedback))
        source = self.parameterAsRasterLayer(parameters, self.INPUT, context).name()
        heads = [(outcome.class_raster, outcome.polygons), *outcome.more_heads]
        if len(heads) > 1:  # a model with several output heads: its outputs are named X_headK, not X
            _load_instead(context, job.class_output, [raster for raster, _ in heads])
            if job.polygons_output is not None:
                _load_instead(context, job.polygons_output, [p for _, p in heads if p is not None])
        for k, (raster, polygons) in enumerate(heads):
            label = f"{source} head{k}" if len(heads) > 1 else source
            ClassStyle.attach(context, str(raster), sort_key=1,
                              name=(self.parameterDefinition(self.OUTPUT).description(), f"{label} classes"))
            if polygons is not None:
                ClassStyle.attach(context, str(polygons), sort_key=2, above=str(raster),
                                  name=(self.parameterDefinition(self.OUTPUT_POLYGONS).description(),
                                        f"{label} polygons"))
        return {self.OUTPUT: str(outcome.class_raster),
                self.OUTPUT_POLYGONS: str(outcome.polygons) if outcome.polygons is not None else None,
                "DEVICE": outcome.device, "TILES": outcome.tiles, "FEATURES": outcome.features}


def _load_instead(context: QgsProcessingContext, declared: Path, written: list[Path]) -> None:
    """Load the files ``written`` (each head's ``X_headK.tif``) where Processing would load ``declared`` (``X.tif``).

    A model with several output heads writes no ``declared`` file: each head's file is loaded in its place,
    with the same details (the layer name is then set per head by :meth:`ClassStyle.attach`).
    """
    loads = context.layersToLoadOnCompletion()
    details = loads.pop(str(declared), None)
    if details is None:
        return
    for path in written:
        copy = QgsProcessingContext.LayerDetails(details.name, details.project, details.outputName)
        copy.layerTypeHint = details.layerTypeHint
        loads[str(path)] = copy
    context.setLayersToLoadOnCompletion(loads)
