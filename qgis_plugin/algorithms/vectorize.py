"""``fastunetgeo:vectorize``: turn a class raster into polygons with class attributes and a style."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
)

from ..deps import SEGMENT_MODULES
from .common import (
    ClassStyle,
    FastUNetAlgorithm,
    FeedbackSink,
    engine_errors,
    output_path,
    polygon_option_parameters,
    require_engine,
)


class VectorizeAlgorithm(FastUNetAlgorithm):
    """Vectorize a class raster (e.g. the output of Segment raster)."""

    INPUT, CLASSES, SIMPLIFY, MIN_AREA, DISSOLVE, OUTPUT = "INPUT", "CLASSES", "SIMPLIFY", "MIN_AREA", "DISSOLVE", \
        "OUTPUT"

    def name(self) -> str:
        """Return the algorithm id."""
        return "vectorize"

    def displayName(self) -> str:
        """Return the name shown in the toolbox."""
        return "Vectorize class raster"

    def shortHelpString(self) -> str:
        """Describe the algorithm."""
        return ("Turns a class raster into polygons with class id, name, area and perimeter, in bounded memory and "
                "without seams. Neighbouring polygons keep sharing their edges when simplified. Classes: names or "
                "ids separated by commas (empty: every class but 'background'). Writes a QGIS style beside the "
                "output.")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        """Declare the parameters."""
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, "Class raster"))
        self.addParameter(QgsProcessingParameterString(self.CLASSES, "Classes to keep (names or ids)",
                                                       optional=True))
        for param in polygon_option_parameters(self.SIMPLIFY, self.MIN_AREA):
            param.setDescription(param.description()[:1].upper() + param.description()[1:])
            self.addParameter(param)
        self.addParameter(QgsProcessingParameterBoolean(self.DISSOLVE, "One multipolygon per class", False))
        self.addParameter(QgsProcessingParameterVectorDestination(self.OUTPUT, "Class polygons",
                                                                  QgsProcessing.SourceType.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputNumber("FEATURES", "Polygons written"))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        """Read the parameters, run the core, return the outputs."""
        from ..engine_process import run_engine
        from ..qgis_inputs import check_raster_layer, raster_file_path

        require_engine(SEGMENT_MODULES)
        with engine_errors():
            layer = check_raster_layer(self.parameterAsRasterLayer(parameters, self.INPUT, context))
            raster = raster_file_path(layer)
            if raster is None:
                raise QgsProcessingException(f"{layer.name()} is not a local raster file")
            text = self.parameterAsString(parameters, self.CLASSES, context)
            out = output_path(self.parameterAsOutputLayer(parameters, self.OUTPUT, context))
            result = run_engine("vectorize", {
                "raster": str(raster), "output": str(out),
                "classes": [c.strip() for c in text.split(",") if c.strip()] or None,
                "simplify_m": self.parameterAsDouble(parameters, self.SIMPLIFY, context),
                "min_area_m2": self.parameterAsDouble(parameters, self.MIN_AREA, context),
                "dissolve": self.parameterAsBool(parameters, self.DISSOLVE, context)}, FeedbackSink(feedback))
        for warning in result["warnings"]:
            feedback.pushWarning(warning)
        source = layer.name().removesuffix(" classes")  # the dock's and Segment raster's class raster: "ortho classes"
        ClassStyle.attach(context, str(out), name=(self.parameterDefinition(self.OUTPUT).description(),
                                                   f"{source} polygons"))
        return {self.OUTPUT: result["output"], "FEATURES": result["features"]}
