"""``fastunetgeo:train``: train a model from an orthophoto and polygon labels (the core's raster_vector data)."""

from __future__ import annotations

from typing import Any

from qgis.core import (
    Qgis,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingOutputFile,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterField,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
)

from ..deps import TRAIN_MODULES
from .common import ARCHITECTURES, DEVICE_OPTIONS, FastUNetAlgorithm, FeedbackSink, engine_errors, require_engine

# The architectures offered in the toolbox (the registry may hold more; a test checks these exist there).


class TrainAlgorithm(FastUNetAlgorithm):
    """Train a segmentation model on a raster with vector labels."""

    def name(self) -> str:
        """Return the algorithm id."""
        return "train"

    def displayName(self) -> str:
        """Return the name shown in the toolbox."""
        return "Train model from raster and polygons"

    def shortHelpString(self) -> str:
        """Describe the algorithm."""
        return ("Trains a fastunet-geo model on one orthophoto and polygon labels, rasterised on the raster's "
                "grid. The class field holds each polygon's class name (listed in Class names) or code; without "
                "one, every polygon is the second class. If the first class is 'background', unlabelled pixels "
                "are background. The bottom part of the raster (validation fraction) is held out. Writes "
                "best.safetensors, last.safetensors, the history and curves to the output folder; a stopped run "
                "resumes from there.")

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        """Declare the parameters."""
        integer, double = Qgis.ProcessingNumberParameterType.Integer, Qgis.ProcessingNumberParameterType.Double
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Orthophoto"))
        self.addParameter(QgsProcessingParameterFeatureSource(
            "LABELS", "Label polygons", [QgsProcessing.SourceType.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterField("CLASS_FIELD", "Class field", parentLayerParameterName="LABELS",
                                                      optional=True))
        self.addParameter(QgsProcessingParameterString("CLASS_NAMES", "Class names (comma-separated)",
                                                       "background,building"))
        self.addParameter(QgsProcessingParameterEnum("ARCHITECTURE", "Architecture", ARCHITECTURES, defaultValue=0))
        self.addParameter(QgsProcessingParameterNumber("TILE_SIZE", "Tile size (px)", integer, 256, minValue=16))
        self.addParameter(QgsProcessingParameterNumber("EPOCHS", "Epochs", integer, 20, minValue=1))
        self.addParameter(QgsProcessingParameterEnum("DEVICE", "Device", DEVICE_OPTIONS, defaultValue=0))
        advanced = [
            QgsProcessingParameterNumber("BATCH_SIZE", "Batch size", integer, 8, minValue=1),
            QgsProcessingParameterNumber("LEARNING_RATE", "Learning rate", double, 1e-3, minValue=0.0),
            QgsProcessingParameterNumber("VAL_FRACTION", "Validation fraction", double, 0.2, minValue=0.0,
                                         maxValue=0.9),
            QgsProcessingParameterString("VALUE_RANGE", "Input value range 'min,max' (empty: the data type's)",
                                         optional=True),
            QgsProcessingParameterBoolean("FRESH", "Start over (ignore an earlier run in the folder)", False),
        ]
        for param in advanced:
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.Flag.FlagAdvanced)
            self.addParameter(param)
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT_FOLDER", "Run folder"))
        self.addOutput(QgsProcessingOutputFile("CHECKPOINT", "Best checkpoint"))
        self.addOutput(QgsProcessingOutputNumber("BEST_EPOCH", "Best epoch"))
        self.addOutput(QgsProcessingOutputNumber("VAL_MIOU", "Validation mIoU of the best epoch"))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        """Read the parameters, train with the core, return the outputs."""
        from ..engine_process import run_engine
        from .train_inputs import train_config

        require_engine(TRAIN_MODULES)
        with engine_errors():
            request = {"config": train_config(self, parameters, context, feedback),
                       "fresh": self.parameterAsBool(parameters, "FRESH", context)}
            result = run_engine("train", request, FeedbackSink(feedback))
        return {"OUTPUT_FOLDER": result["output_dir"], "CHECKPOINT": result["best_checkpoint"],
                "BEST_EPOCH": result["best_epoch"], "VAL_MIOU": result["val_miou"]}
