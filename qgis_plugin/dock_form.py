"""The dock's widgets, built in code (no .ui file), grouped in one dataclass the dock and tests use."""

from __future__ import annotations

from dataclasses import dataclass

from qgis.core import QgsMapLayerProxyModel
from qgis.gui import QgsDoubleSpinBox, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

DEVICES = (("Auto", "auto"), ("CUDA", "cuda"), ("CPU", "cpu"))
AREAS = (("Whole layer", "layer"), ("Current map extent", "extent"), ("Polygons of a layer", "polygons"))
TEMP_HINT = "[temporary file]"


@dataclass
class DockForm:
    """Every input and output widget of the dock."""

    root: QWidget
    engine_note: QLabel
    model_file: QgsFileWidget
    model_info: QLabel
    layer: QgsMapLayerComboBox
    layer_note: QLabel
    device: QComboBox
    device_info: QLabel
    tile: QSpinBox
    overlap: QSpinBox
    batch: QSpinBox
    area: QComboBox
    polygon_layer: QgsMapLayerComboBox
    selected_only: QCheckBox
    vectorize: QGroupBox
    simplify: QgsDoubleSpinBox
    min_area: QgsDoubleSpinBox
    class_output: QgsFileWidget
    polygons_output: QgsFileWidget
    run: QPushButton
    cancel: QPushButton
    export: QPushButton
    progress: QProgressBar
    summary: QLabel
    log: QPlainTextEdit


def _note() -> QLabel:
    label = QLabel()
    label.setWordWrap(True)
    label.setVisible(False)
    return label


def _spin(lo: int, hi: int, value: int, suffix: str = "") -> QSpinBox:
    box = QSpinBox()
    box.setRange(lo, hi)
    box.setValue(value)
    box.setSuffix(suffix)
    return box


def _double(hi: float, suffix: str, decimals: int = 2) -> QgsDoubleSpinBox:
    box = QgsDoubleSpinBox()
    box.setRange(0.0, hi)
    box.setDecimals(decimals)
    box.setSuffix(suffix)
    box.setClearValue(0.0)
    return box


def _save_widget(file_filter: str) -> QgsFileWidget:
    widget = QgsFileWidget()
    widget.setStorageMode(QgsFileWidget.StorageMode.SaveFile)
    widget.setFilter(file_filter)
    widget.lineEdit().setPlaceholderText(TEMP_HINT)
    widget.lineEdit().setShowClearButton(True)
    return widget


def build_form(root: QWidget) -> DockForm:
    """Create the widgets inside ``root`` and lay them out; return them."""
    engine_note = _note()
    engine_note.setStyleSheet("QLabel { background: #fff3cd; padding: 4px; }")
    engine_note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)  # copy the command

    model_file = QgsFileWidget()
    model_file.setFilter("Models (*.safetensors *.onnx);;All files (*)")
    model_file.setDialogTitle("Choose a fastunet-geo model")
    model_info = QLabel("No model chosen.")
    model_info.setWordWrap(True)

    layer = QgsMapLayerComboBox()
    layer.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
    layer_note = _note()
    device = QComboBox()
    for text, value in DEVICES:
        device.addItem(text, value)
    device_info = QLabel("")
    device_info.setWordWrap(True)

    tile, overlap, batch = _spin(16, 8192, 512, " px"), _spin(0, 4096, 64, " px"), _spin(1, 1024, 4)
    tile.setSingleStep(16)

    area = QComboBox()
    for text, value in AREAS:
        area.addItem(text, value)
    polygon_layer = QgsMapLayerComboBox()
    polygon_layer.setFilters(QgsMapLayerProxyModel.Filter.PolygonLayer)
    polygon_layer.setEnabled(False)
    selected_only = QCheckBox("Selected features only")
    selected_only.setEnabled(False)

    vectorize = QGroupBox("Vectorize to polygons")
    vectorize.setCheckable(True)
    vectorize.setChecked(True)
    simplify, min_area = _double(1000.0, " m"), _double(1e9, " m²", 1)
    simplify.setValue(0.5)
    polygons_output = _save_widget("GeoPackage (*.gpkg);;ESRI Shapefile (*.shp);;GeoJSON (*.geojson)")
    vform = QFormLayout(vectorize)
    vform.addRow("Simplify", simplify)
    vform.addRow("Minimum area", min_area)
    vform.addRow("Polygons", polygons_output)

    class_output = _save_widget("GeoTIFF (*.tif)")
    run, cancel, export = QPushButton("Run"), QPushButton("Cancel"), QPushButton("Export polygons…")
    cancel.setEnabled(False)
    export.setEnabled(False)
    export.setToolTip("Write the last polygons to a GeoPackage or Shapefile, with their style")
    progress = QProgressBar()
    progress.setRange(0, 100)
    progress.setValue(0)
    summary = QLabel()
    summary.setWordWrap(True)
    summary.setVisible(False)
    summary.setToolTip("Area and share of each class in the last class raster (nodata left out), measured on "
                       "the ground in square metres")
    log = QPlainTextEdit()
    log.setReadOnly(True)
    log.setMaximumBlockCount(500)
    log.setFixedHeight(90)

    form = QFormLayout()
    form.addRow("Model", model_file)
    form.addRow(model_info)
    form.addRow("Raster", layer)
    form.addRow(layer_note)
    form.addRow("Device", device)
    form.addRow(device_info)
    form.addRow("Tile size", tile)
    form.addRow("Overlap", overlap)
    form.addRow("Batch size", batch)
    form.addRow("Area", area)
    form.addRow("Polygons layer", polygon_layer)
    form.addRow(selected_only)
    form.addRow("Class raster", class_output)
    buttons = QHBoxLayout()
    for button in (run, cancel, export):
        buttons.addWidget(button)
    outer = QVBoxLayout(root)
    outer.addWidget(engine_note)
    outer.addLayout(form)
    outer.addWidget(vectorize)
    outer.addLayout(buttons)
    outer.addWidget(progress)
    outer.addWidget(summary)
    outer.addWidget(log)
    outer.addStretch(1)
    return DockForm(root, engine_note, model_file, model_info, layer, layer_note, device, device_info, tile,
                    overlap, batch, area, polygon_layer, selected_only, vectorize, simplify, min_area,
                    class_output, polygons_output, run, cancel, export, progress, summary, log)
