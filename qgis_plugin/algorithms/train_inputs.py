"""Read the train algorithm's parameters into the core's training configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import QgsProcessingAlgorithm, QgsProcessingContext, QgsProcessingFeedback

from fastunet_core.errors import ConfigError

from ..qgis_inputs import check_raster_layer, raster_file_path
from ..train_plan import parse_value_range, training_config
from .common import ARCHITECTURES, DEVICE_OPTIONS


def train_config(alg: QgsProcessingAlgorithm, parameters: dict[str, Any], context: QgsProcessingContext,
                 feedback: QgsProcessingFeedback) -> dict[str, Any]:
    """Return the training configuration (the core's YAML layout) the parameters describe.

    The engine process checks it (``config_from_dict``) before training: that check imports the core's
    training modules, which QGIS's own process must not import (torch; see :mod:`..engine_process`). Labels
    that are not a GeoPackage, Shapefile or GeoJSON file (memory layers, database tables ...) are first
    written to a temporary GeoPackage.
    """
    layer = check_raster_layer(alg.parameterAsRasterLayer(parameters, "INPUT", context))
    raster = raster_file_path(layer)
    if raster is None:
        raise ConfigError(f"the layer '{layer.name()}' is not a local raster file; save it as a GeoTIFF to train on it")
    labels = alg.parameterAsCompatibleSourceLayerPath(parameters, "LABELS", context, ["gpkg", "shp", "geojson"],
                                                      "gpkg", feedback)
    names = [n.strip() for n in alg.parameterAsString(parameters, "CLASS_NAMES", context).split(",") if n.strip()]
    if len(names) < 2:
        raise ConfigError("give at least two class names, e.g. background,building")
    fields = alg.parameterAsStrings(parameters, "CLASS_FIELD", context)
    bounds = parse_value_range(alg.parameterAsString(parameters, "VALUE_RANGE", context))
    return training_config(
        raster, labels, fields[0] if fields else None, names,
        ARCHITECTURES[alg.parameterAsEnum(parameters, "ARCHITECTURE", context)],
        alg.parameterAsInt(parameters, "TILE_SIZE", context), alg.parameterAsInt(parameters, "EPOCHS", context),
        alg.parameterAsInt(parameters, "BATCH_SIZE", context),
        alg.parameterAsDouble(parameters, "LEARNING_RATE", context),
        alg.parameterAsDouble(parameters, "VAL_FRACTION", context),
        Path(alg.parameterAsFileOutput(parameters, "OUTPUT_FOLDER", context)),
        DEVICE_OPTIONS[alg.parameterAsEnum(parameters, "DEVICE", context)], bounds)
