"""Read the train algorithm's parameters into the core's training configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qgis.core import QgsProcessingAlgorithm, QgsProcessingContext, QgsProcessingFeedback

from fastunet_core.errors import ConfigError
from fastunet_core.train.config import config_from_dict

from ..qgis_inputs import check_raster_layer, raster_file_path
from .common import ARCHITECTURES, DEVICE_OPTIONS


def train_config(alg: QgsProcessingAlgorithm, parameters: dict[str, Any], context: QgsProcessingContext,
                 feedback: QgsProcessingFeedback) -> dict[str, Any]:
    """Return the training configuration (the core's YAML layout, checked) the parameters describe.

    Labels that are not a GeoPackage, Shapefile or GeoJSON file (memory layers, database tables ...) are
    first written to a temporary GeoPackage.
    """
    layer = check_raster_layer(alg.parameterAsRasterLayer(parameters, "INPUT", context))
    raster = raster_file_path(layer)
    if raster is None:
        raise ConfigError(f"{layer.name()} is not a local raster file; save it as a GeoTIFF to train on it")
    labels = alg.parameterAsCompatibleSourceLayerPath(parameters, "LABELS", context, ["gpkg", "shp", "geojson"],
                                                      "gpkg", feedback)
    names = [n.strip() for n in alg.parameterAsString(parameters, "CLASS_NAMES", context).split(",") if n.strip()]
    if len(names) < 2:
        raise ConfigError("give at least two class names, e.g. background,building")
    fields = alg.parameterAsStrings(parameters, "CLASS_FIELD", context)
    batch = alg.parameterAsInt(parameters, "BATCH_SIZE", context)
    config: dict[str, Any] = {
        "data": {"kind": "raster_vector", "root": str(raster.parent), "raster": str(raster), "vector": labels,
                 "class_field": fields[0] if fields else None, "class_names": names,
                 "tile_size": alg.parameterAsInt(parameters, "TILE_SIZE", context),
                 "val_fraction": alg.parameterAsDouble(parameters, "VAL_FRACTION", context)},
        "model": {"architecture": ARCHITECTURES[alg.parameterAsEnum(parameters, "ARCHITECTURE", context)]},
        "optim": {"epochs": alg.parameterAsInt(parameters, "EPOCHS", context), "batch_size": batch,
                  "micro_batch": batch, "lr": alg.parameterAsDouble(parameters, "LEARNING_RATE", context),
                  "num_workers": 0},  # no DataLoader worker processes inside QGIS
        "output": str(Path(alg.parameterAsFileOutput(parameters, "OUTPUT_FOLDER", context))),
        "device": DEVICE_OPTIONS[alg.parameterAsEnum(parameters, "DEVICE", context)],
    }
    value_range = alg.parameterAsString(parameters, "VALUE_RANGE", context).strip()
    if value_range:
        try:
            lo, hi = (float(v) for v in value_range.split(","))
        except ValueError:
            raise ConfigError(f"value range must be 'min,max', e.g. 0,2047; got {value_range!r}") from None
        config["input"] = {"value_range": [lo, hi]}
    config_from_dict(config)  # check it here, with a plain message, before the engine starts
    return config
