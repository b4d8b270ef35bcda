"""The dock's widgets, built in code (no .ui file), grouped in one dataclass the dock and tests use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qgis.core import QgsMapLayerProxyModel
from qgis.gui import QgsCollapsibleGroupBox, QgsDoubleSpinBox, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import QEvent, QObject, QPoint, Qt
from qgis.PyQt.QtWidgets import (
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .jobs import AUTO

DEVICES = (("Auto", "auto"), ("CUDA", "cuda"), ("CPU", "cpu"))
AREAS = (("Whole layer", "layer"), ("Current map extent", "extent"), ("Polygons of a layer", "polygons"))
TEMP_HINT = "[temporary file]"
TITLE = "fastunet-geo"
BATCH_AUTO = "auto"  # the batch box at 0: the engine's default for the device ("auto: 1" once the device is known)


@dataclass
class DockForm:
    """Every input and output widget of the dock."""

    root: QWidget
    engine_note: QLabel
    install: QPushButton
    model_file: QgsFileWidget
    model_info: QLabel
    layer: QgsMapLayerComboBox
    layer_note: QLabel
    device: QComboBox
    device_info: QLabel
    bands: QLineEdit
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
    run_resolution: QComboBox
    engine_box: QgsCollapsibleGroupBox  # at the bottom, collapsed: holds ``install`` while the engine works
    bands_note: QLabel  # under Bands: a layer the model cannot read as it is, said as soon as both are chosen


def place_install_button(form: DockForm, engine_ok: bool) -> None:
    """Put the engine button where it belongs: on top while the engine is missing, else in the Engine box below.

    A working dock should not open on "Repair / reinstall the engine", which reads as if something were broken.
    """
    top = form.root.layout()
    box = form.engine_box.layout()
    if engine_ok and form.install.parent() is not form.engine_box:
        top.removeWidget(form.install)
        box.addWidget(form.install)
    elif not engine_ok and form.install.parent() is form.engine_box:
        box.removeWidget(form.install)
        top.insertWidget(top.indexOf(form.engine_note) + 1, form.install)
    form.engine_box.setVisible(engine_ok)


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


def _double(hi: float, suffix: str, decimals: int, auto_text: str) -> QgsDoubleSpinBox:
    """Return a spin box whose lowest value (-1) means "automatic" and shows ``auto_text``."""
    box = QgsDoubleSpinBox()
    box.setRange(AUTO, hi)
    box.setDecimals(decimals)
    box.setSuffix(suffix)
    box.setSpecialValueText(auto_text)
    box.setClearValue(AUTO)
    box.setValue(AUTO)
    return box


def _narrow(combo: QComboBox) -> QComboBox:
    """Let a combo box shrink to the dock's width instead of growing with its longest item."""
    combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    combo.setMinimumContentsLength(4)
    return combo


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
    install = QPushButton("Install the engine")
    install.setToolTip("Install torch, rasterio and the other engine packages into a private Python environment "
                       "in this QGIS profile (QGIS's own Python is left as it is); again later to repair it")

    model_file = QgsFileWidget()
    model_file.setFilter("Models (*.safetensors *.onnx config.json);;All files (*)")
    model_file.setDialogTitle("Choose a fastunet-geo model")
    model_file.setToolTip("A fastunet-geo model file (.safetensors), a Deepness-format .onnx, or an smp "
                          "save_pretrained folder (choose its model.safetensors or config.json): its classes, bands "
                          "and tile size are shown below once it is read")
    model_info = QLabel("No model chosen.")
    model_info.setWordWrap(True)

    layer = _narrow(QgsMapLayerComboBox())
    layer.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
    layer.setToolTip("The raster to segment: a file, or a web layer (WMS, XYZ), which is first written to a "
                     "temporary GeoTIFF at the model's resolution")
    layer_note, bands_note = _note(), _note()
    bands = QLineEdit()
    bands.setClearButtonEnabled(True)
    bands.setPlaceholderText("the model's")
    bands.setToolTip("Which of the raster's bands to feed the model, in the model's order, e.g. 3, 2, 1. "
                     "Empty: the bands the model was trained on")
    device = _narrow(QComboBox())
    for text, value in DEVICES:
        device.addItem(text, value)
    device.setToolTip("Where the model runs. Auto: the GPU when CUDA can be used, else the CPU")
    device_info = QLabel("Looking for a GPU…")
    device_info.setWordWrap(True)

    tile, overlap, batch = _spin(16, 8192, 512, " px"), _spin(0, 4096, 64, " px"), _spin(0, 1024, 0)
    tile.setSingleStep(16)
    tile.setToolTip("Side of the square tiles the raster is cut into (the model's by default)")
    overlap.setToolTip("How much neighbouring tiles overlap; overlaps are blended, so no seams show")
    batch.setToolTip("Tiles per model call: more is faster on a GPU and needs more memory. auto: the engine's "
                     "default for the device (1 on a CPU, 4 on CUDA)")
    batch.setSpecialValueText(BATCH_AUTO)  # 0: the device's default, shown once the device is known
    run_resolution = _narrow(QComboBox())
    run_resolution.setEditable(True)
    run_resolution.addItems(["auto", "native"])
    run_resolution.setToolTip("Ground resolution the model runs at. auto: the model's own when the raster's differs "
                              "by more than 10 % (tiles read resampled, the class raster stays on the raster's "
                              "grid); native: the raster's pixels; or type metres, e.g. 0.3")

    area = _narrow(QComboBox())
    for text, value in AREAS:
        area.addItem(text, value)
    area.setToolTip("Which part of the raster to segment")
    polygon_layer = _narrow(QgsMapLayerComboBox())
    polygon_layer.setFilters(QgsMapLayerProxyModel.Filter.PolygonLayer)
    polygon_layer.setEnabled(False)
    polygon_layer.setToolTip("Only pixels inside these polygons are segmented (Area: polygons of a layer)")
    selected_only = QCheckBox("Selected features only")
    selected_only.setEnabled(False)
    selected_only.setToolTip("Use only the selected polygons of the area layer")

    vectorize = QGroupBox("Vectorize to polygons")
    vectorize.setCheckable(True)
    vectorize.setChecked(True)
    vectorize.setToolTip("Also turn the class raster into polygons with class, area and perimeter")
    simplify = _double(1000.0, " m", 2, "one pixel")
    simplify.setToolTip("Simplify tolerance in metres; shared edges stay shared. Lowest value: one pixel")
    min_area = _double(1e8, " m²", 1, "two pixels")
    min_area.setToolTip("Polygons (and holes) smaller than this are dropped. Lowest value: two pixels, which "
                        "removes single-pixel speckle")
    polygons_output = _save_widget("GeoPackage (*.gpkg);;ESRI Shapefile (*.shp);;GeoJSON (*.geojson)")
    polygons_output.setToolTip("Where the polygons are written (empty: a temporary GeoPackage)")
    vform = _form(vectorize)
    vform.addRow("Simplify", simplify)
    vform.addRow("Minimum area", min_area)
    vform.addRow("Polygons file", polygons_output)

    class_output = _save_widget("GeoTIFF (*.tif)")
    class_output.setToolTip("Where the class raster is written (empty: a temporary GeoTIFF)")
    run, cancel, export = QPushButton("Run"), QPushButton("Cancel"), QPushButton("Export polygons…")
    run.setToolTip("Segment the raster in the background; the results are added to the map")
    cancel.setToolTip("Stop the run; nothing is written")
    cancel.setEnabled(False)
    export.setEnabled(False)
    export.setToolTip("Write the last polygons to a GeoPackage or Shapefile, with their style")
    progress = QProgressBar()
    progress.setRange(0, 100)
    progress.setValue(0)
    progress.setToolTip("Progress of the run")
    summary = QLabel()
    summary.setWordWrap(True)
    summary.setVisible(False)
    summary.setToolTip("Area and share of each class in the last class raster (nodata left out), measured on "
                       "the ground in square metres")
    log = QPlainTextEdit()
    log.setReadOnly(True)
    log.setMaximumBlockCount(500)
    log.setFixedHeight(90)
    log.setToolTip("What the runs did")

    form = _form()
    form.addRow("Model", model_file)
    form.addRow(model_info)
    form.addRow("Raster", layer)
    form.addRow(layer_note)
    form.addRow("Bands", bands)
    form.addRow(bands_note)
    form.addRow("Device", device)
    form.addRow(device_info)
    form.addRow("Tile size", tile)
    form.addRow("Overlap", overlap)
    form.addRow("Batch size", batch)
    form.addRow("Resolution", run_resolution)
    form.addRow("Area", area)
    form.addRow("Area polygons", polygon_layer)
    form.addRow(selected_only)
    form.addRow("Class raster file", class_output)
    buttons = QHBoxLayout()
    for button in (run, cancel):
        buttons.addWidget(button)
    outer = QVBoxLayout(root)
    outer.addWidget(engine_note)
    outer.addWidget(install)
    outer.addLayout(form)
    outer.addWidget(vectorize)
    outer.addLayout(buttons)
    outer.addWidget(progress)
    outer.addWidget(summary)
    outer.addWidget(export)
    outer.addWidget(log)
    engine_box = QgsCollapsibleGroupBox("Engine")
    engine_box.setSaveCollapsedState(False)
    engine_box.setToolTip("The engine's Python environment: repair or reinstall it")
    QVBoxLayout(engine_box)
    engine_box.setCollapsed(True)
    engine_box.setVisible(False)
    outer.addWidget(engine_box)
    outer.addStretch(1)
    _wheel_scrolls_the_dock(root)
    return DockForm(root, engine_note, install, model_file, model_info, layer, layer_note, device, device_info, bands,
                    tile, overlap, batch, area, polygon_layer, selected_only, vectorize, simplify, min_area,
                    class_output, polygons_output, run, cancel, export, progress, summary, log, run_resolution,
                    engine_box, bands_note)


class _WheelOnlyWhenFocused(QObject):
    """Let the mouse wheel scroll the dock instead of changing a setting the pointer happens to pass over."""

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        """Pass a wheel event on to the scroll area unless the widget under it has the keyboard focus."""
        if event.type() == QEvent.Type.Wheel and isinstance(watched, QWidget) and not watched.hasFocus():
            event.ignore()
            return True
        return False


def _wheel_scrolls_the_dock(root: QWidget) -> None:
    """Value widgets change on the wheel only after a click (a scroll once switched Resolution auto -> native)."""
    guard = _WheelOnlyWhenFocused(root)  # parented: lives as long as the dock
    for widget in root.findChildren(QAbstractSpinBox) + root.findChildren(QComboBox):
        widget.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        widget.installEventFilter(guard)


def _form(parent: QWidget | None = None) -> QFormLayout:
    """Return a form whose fields go under their labels when the dock is narrow."""
    form = QFormLayout(parent) if parent is not None else QFormLayout()
    form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
    form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
    return form


def bring_into_view(scroll: QScrollArea, widgets: tuple[QWidget, ...]) -> None:
    """Scroll so that each of ``widgets`` shows whole (the last one wins where they cannot all show).

    Not ``ensureWidgetVisible``: for a text box it shows only the text cursor's line.
    """
    inner = scroll.widget()
    inner.layout().activate()  # text and buttons may just have changed: place the widgets first
    for widget in widgets:
        top = widget.mapTo(inner, QPoint(0, 0))
        half = widget.height() // 2
        scroll.ensureVisible(top.x(), top.y() + half, 0, half)


def show_starting(bar: QProgressBar) -> None:
    """Show "Starting the engine…" on ``bar`` until the task reports its first progress."""
    bar.setValue(0)
    bar.setFormat("Starting the engine…")


def show_progress(bar: QProgressBar, percent: float) -> None:
    """Show a task's progress on ``bar`` (a percentage once there is some)."""
    if percent > 0:
        bar.setFormat("%p%")
    bar.setValue(round(percent))


def may_replace(parent: QWidget, files: list[Path]) -> bool:
    """Ask once, as QGIS does, whether to replace output files that exist already; return True for Yes.

    Asked only about files the user typed or picked in an output box: a name the dock makes is new, or (a Train
    tab's default model) taken on as before.
    """
    if len(files) == 1:
        text = f"{files[0]} already exists.\nReplace it?"
    else:
        text = "These files already exist:\n" + "\n".join(str(p) for p in files) + "\nReplace them?"
    buttons = QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No
    answer = QMessageBox.question(parent, TITLE, text, buttons, QMessageBox.StandardButton.No)
    return bool(answer == QMessageBox.StandardButton.Yes)
