"""The Train tab's choices as plain data, and the training run they describe.

:func:`training_config` is the one place a raster + polygon labels training configuration (the core's YAML
layout, ``data.kind: raster_vector``) is put together: the Train tab and the Processing algorithm both call it.
:func:`plan_training` (main thread) checks the tab's choices, writes the label layer to the run folder (so
that memory layers, unsaved edits and filtered layers train as they are shown) and returns the plan the
:class:`~.train_task.TrainTask` runs. Nothing here imports torch: the engine checks the configuration again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qgis.core import (
    Qgis,
    QgsCoordinateTransform,
    QgsCsException,
    QgsGeometry,
    QgsMapLayer,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorFileWriter,
    QgsVectorLayer,
    QgsWkbTypes,
)

from fastunet_core.errors import ConfigError, OutputExistsError, OutputWriteError

from .qgis_inputs import check_raster_layer, raster_file_path

HISTORY_FILE = "history.json"  # fastunet_core.train.state.HISTORY_FILE (that module imports torch)
LABELS_FILE = "labels.gpkg"  # the label layer as trained on, in the run folder
RUN_FOLDER_SUFFIX = "_training"  # the run folder beside the model file: <model stem>_training
MAX_CLASSES_SHOWN = 12
STATS_SAMPLE = 250_000  # pixels QGIS samples for a band's maximum (the automatic value range)
_WIDE_UNSIGNED = {Qgis.DataType.UInt16: 16, Qgis.DataType.UInt32: 32}


def training_config(raster: Path, labels: str, class_field: str | None, class_names: list[str] | None,
                    architecture: str, tile_size: int, epochs: int, batch_size: int, lr: float,
                    val_fraction: float, output: Path, device: str,
                    value_range: tuple[float, float] | None = None) -> dict[str, Any]:
    """Return the training configuration of one raster with polygon labels (not yet checked: see config_from_dict).

    ``class_names`` None: the core names the classes from the field's values (``background`` first).
    """
    config: dict[str, Any] = {
        "data": {"kind": "raster_vector", "root": str(raster.parent), "raster": str(raster), "vector": labels,
                 "class_field": class_field or None, "class_names": class_names, "tile_size": tile_size,
                 "val_fraction": val_fraction},
        "model": {"architecture": architecture},
        "optim": {"epochs": epochs, "batch_size": batch_size, "micro_batch": batch_size, "lr": lr,
                  "num_workers": 0},  # no DataLoader worker processes inside QGIS or its engine process
        "output": str(output),
        "device": device,
    }
    if value_range is not None:
        config["input"] = {"value_range": [float(value_range[0]), float(value_range[1])]}
    return config


@dataclass
class TrainChoices:
    """What the Train tab's widgets hold."""

    raster: QgsMapLayer | None
    labels: QgsMapLayer | None
    class_field: str  # "": every polygon is one class, named after the layer
    architecture: str
    epochs: int
    model: str  # the model file to write; "": beside the raster, named after it
    tile_size_px: int = 256
    batch_size: int = 8
    lr: float = 1e-3
    val_fraction: float = 0.2
    device: str = "auto"
    value_range: str = ""  # "min,max" of the raw values; "": automatic (see auto_value_range)
    start_over: bool = False
    replace_model: bool = False  # the model file typed exists, and the user agreed to its replacement


@dataclass(frozen=True)
class TrainPlan:
    """A checked training run: the configuration for the engine and where the results go."""

    config: dict[str, Any]
    model: Path  # written (atomically) only when the run ends well
    run_folder: Path  # checkpoints, state, history and curves of the run; a stopped run resumes from here
    fresh: bool
    name: str  # the raster layer's name
    classes: tuple[str, ...]  # as the tab shows them (the engine names them the same way)
    value_range: tuple[float, float] | None  # None: the data type's whole range

    @property
    def history(self) -> Path:
        """The run's per-epoch figures (written by the core as each epoch ends)."""
        return self.run_folder / HISTORY_FILE

    def payload(self) -> dict[str, Any]:
        """Return the engine's ``train`` request."""
        return {"config": self.config, "fresh": self.fresh, "model": str(self.model)}


def default_model_path(raster: Path, architecture: str) -> Path:
    """Return the model file written when none is chosen: beside the raster, named after it and the architecture."""
    return raster.with_name(f"{raster.stem}_{architecture}.safetensors")


def run_folder_for(model: Path) -> Path:
    """Return the run folder of a model file: ``<stem>_training`` beside it."""
    return model.with_name(model.stem + RUN_FOLDER_SUFFIX)


def class_names_of(layer: QgsVectorLayer, field: str) -> tuple[str, ...]:
    """Return the classes the core will make of ``layer``'s polygons (see the raster_vector dataset)."""
    if not field:
        return ("background", layer.name())
    index = layer.fields().indexFromName(field)
    if index < 0:
        raise ConfigError(f"the label layer {layer.name()!r} has no field {field!r}")
    values = [v for v in layer.uniqueValues(index) if v is not None and str(v) != "NULL"]
    if layer.fields().at(index).isNumeric():
        codes = sorted({int(v) for v in values} - {0})
        return ("background", *[f"class_{c}" for c in codes])
    names = sorted({str(v) for v in values})
    return ("background", *[n for n in names if n.lower() != "background"])


def parse_value_range(text: str) -> tuple[float, float] | None:
    """Read ``min,max`` (None for an empty text); raise ConfigError saying the expected form."""
    if not text.strip():
        return None
    try:
        lo, hi = (float(v) for v in text.replace(";", ",").split(","))
    except ValueError:
        raise ConfigError(f"value range must be 'min,max', e.g. 0,2047; got {text.strip()!r}") from None
    if not hi > lo:
        raise ConfigError(f"value range must have max > min, got {text.strip()!r}")
    return lo, hi


def auto_value_range(layer: QgsRasterLayer) -> tuple[float, float] | None:
    """Return 0..2^bits-1 for an unsigned raster wider than 8 bits whose values use fewer bits, else None.

    Sensors store 11-, 12- or 14-bit values in 16-bit files: scaled by the data type's range (0..65535) their
    pixels would all lie near 0. The bits come from the bands' largest value (QGIS's sampled statistics);
    None means the data type's range (the core's default), as for 8-bit and floating-point rasters.
    """
    provider = layer.dataProvider()
    width = _WIDE_UNSIGNED.get(provider.dataType(1))
    if width is None:
        return None
    top = max(provider.bandStatistics(band, Qgis.RasterBandStatistic.Max, QgsRectangle(), STATS_SAMPLE).maximumValue
              for band in range(1, layer.bandCount() + 1))
    bits = max(8, int(top).bit_length()) if top > 0 else width
    return None if bits >= width else (0.0, float(2**bits - 1))


def describe_classes(names: tuple[str, ...]) -> str:
    """Return the classes as one short line."""
    shown = list(names[:MAX_CLASSES_SHOWN]) + ([f"… ({len(names)} in all)"] if len(names) > MAX_CLASSES_SHOWN else [])
    return ", ".join(shown)


def plan_training(c: TrainChoices) -> TrainPlan:
    """Check the choices, write the labels to the run folder, and return the run; raise ConfigError in plain words.

    A model file typed in the tab that exists raises OutputExistsError (unless ``c.replace_model``), so that the
    tab can ask first; the default name beside the raster is taken on (its run resumes, as before).
    """
    raster_layer = check_raster_layer(c.raster)
    raster = raster_file_path(raster_layer)
    if raster is None:
        raise ConfigError(f"the layer '{raster_layer.name()}' is not a local raster file; save it as a GeoTIFF "
                          "(Export > Save As…) to train on it")
    labels = c.labels
    if not isinstance(labels, QgsVectorLayer) or not labels.isValid():
        raise ConfigError("choose a valid polygon layer with the labels")
    if QgsWkbTypes.geometryType(labels.wkbType()) != QgsWkbTypes.GeometryType.PolygonGeometry:
        raise ConfigError(f"the layer '{labels.name()}' is not a polygon layer; the labels must be polygons")
    if labels.featureCount() == 0:
        raise ConfigError(f"the layer '{labels.name()}' holds no polygons; draw some labels first")
    check_labels_overlap(labels, raster_layer)
    classes = class_names_of(labels, c.class_field)
    if len(classes) < 2:
        raise ConfigError(f"the field {c.class_field!r} holds no class; fill it in for the polygons")
    model = Path(c.model.strip()).expanduser() if c.model.strip() else default_model_path(raster, c.architecture)
    if model.suffix.lower() != ".safetensors":
        raise ConfigError(f"the model file must end in .safetensors (got {model.name})")
    if not model.parent.is_dir():
        raise ConfigError(f"the folder of the model file does not exist: {model.parent}")
    if model.is_dir():
        raise ConfigError(f"{model} is a folder; choose a file name ending in .safetensors")
    if c.model.strip() and model.exists() and not c.replace_model:  # asked before anything is written
        raise OutputExistsError(f"{model} exists")
    folder = run_folder_for(model)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder} is a file; the run's folder needs that name (choose another model file)")
    try:
        folder.mkdir(exist_ok=True)
    except OSError as exc:
        raise OutputWriteError(f"cannot make the run folder {folder}: {exc.strerror or exc}") from exc
    value_range = parse_value_range(c.value_range) if c.value_range.strip() else auto_value_range(raster_layer)
    vector = export_labels(labels, c.class_field, folder / LABELS_FILE)
    names = None if c.class_field else list(classes)  # with a field, the core names the classes as shown
    config = training_config(raster, str(vector), c.class_field or None, names, c.architecture, c.tile_size_px,
                             c.epochs, c.batch_size, c.lr, c.val_fraction, folder, c.device, value_range)
    return TrainPlan(config, model, folder, c.start_over, raster_layer.name(), classes, value_range)


def check_labels_overlap(labels: QgsVectorLayer, raster: QgsRasterLayer) -> None:
    """Raise ConfigError, naming both layers, when no label polygon overlaps the raster (before anything is written).

    The training finds this too, but it names the copy it reads (the run folder's labels.gpkg), not the layer.
    """
    extent = QgsGeometry.fromRect(raster.extent())
    xform = None
    if labels.crs().isValid() and raster.crs().isValid() and labels.crs() != raster.crs():
        xform = QgsCoordinateTransform(labels.crs(), raster.crs(), QgsProject.instance())
    for feature in labels.getFeatures():
        geom = QgsGeometry(feature.geometry())
        if geom.isNull():
            continue
        if xform is not None:
            try:
                geom.transform(xform)
            except QgsCsException:  # nowhere in the raster's CRS: not over the raster either
                continue
        if geom.intersects(extent):
            return
    raise ConfigError(f"none of the polygons of the layer {labels.name()!r} ({labels.crs().authid()}) overlaps the "
                      f"raster {raster.name()!r} ({raster.crs().authid()}); check that both cover the same area and "
                      "carry the right CRS")


def export_labels(layer: QgsVectorLayer, class_field: str, target: Path) -> Path:
    """Write the layer's polygons (and the class field) to a GeoPackage as QGIS shows them; return its path.

    Written to a temporary name and renamed, so a failed write leaves the earlier labels file (if any).
    """
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = "labels"
    options.fileEncoding = "UTF-8"
    if class_field:
        options.attributes = [layer.fields().indexFromName(class_field)]
    else:
        options.skipAttributeCreation = True
    tmp = target.with_name(f".{target.stem}.tmp{target.suffix}")
    tmp.unlink(missing_ok=True)
    context = QgsProject.instance().transformContext()
    error, message, _path, _layer = QgsVectorFileWriter.writeAsVectorFormatV3(layer, str(tmp), context, options)
    if error != QgsVectorFileWriter.WriterError.NoError:
        tmp.unlink(missing_ok=True)
        raise OutputWriteError(f"cannot write the labels of {layer.name()} to {target}: {message}")
    os.replace(tmp, target)
    return target
