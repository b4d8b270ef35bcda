"""The dock's Train tab: train a model on a raster and the polygons labelled in QGIS, with live curves.

The tab reads its widgets into :class:`~.train_plan.TrainChoices`, checks them and writes the labels to the
run folder (:func:`~.train_plan.plan_training`), and hands the plan to a :class:`~.train_task.TrainTask`,
which runs the engine's ``train`` call (the one the Processing algorithm makes) in the background. The
curves grow as epochs finish; at the end the model file is offered to the Segment tab (:attr:`model_ready`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qgis.core import (
    Qgis,
    QgsApplication,
    QgsMapLayer,
    QgsMapLayerProxyModel,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.gui import QgsCollapsibleGroupBox, QgsDoubleSpinBox, QgsFieldComboBox, QgsFileWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from .algorithms.common import ARCHITECTURES, DEVICE_OPTIONS
from .curve_plot import CurvePlot
from .deps import TRAIN_MODULES, EngineStatus, check_engine, train_tab_hint
from .dock_form import _form, _narrow, _spin, _wheel_scrolls_the_dock, may_replace, show_progress, show_starting
from .train_plan import TrainChoices, class_names_of, describe_classes, plan_training
from .words import sentence

Notify = Callable[[str, Qgis.MessageLevel], None]
DEFAULT_EPOCHS = 20
DEFAULT_ARCHITECTURE = "unet_skinny"
# QGIS quits or the plugin unloads during a run: how long the engine may take to end its optimiser step (and an
# epoch's saving, if one is under way) before it is killed; its files are written whole or not at all either way
STOP_WAIT_S = 30.0


@dataclass
class TrainForm:
    """Every widget of the Train tab."""

    raster: QgsMapLayerComboBox
    labels: QgsMapLayerComboBox
    class_field: QgsFieldComboBox
    classes_info: QLabel
    architecture: QComboBox
    epochs: QSpinBox
    model_file: QgsFileWidget
    tile: QSpinBox
    batch: QSpinBox
    lr: QgsDoubleSpinBox
    val_fraction: QgsDoubleSpinBox
    device: QComboBox
    value_range: QLineEdit
    start_over: QCheckBox
    train: QPushButton
    cancel: QPushButton
    progress: QProgressBar
    result: QLabel
    curves: CurvePlot
    log: QPlainTextEdit
    engine_note: QLabel


def architecture_label(name: str) -> tuple[str, str]:
    """Return the text and tooltip of an architecture: the paper's name where it has one (from the registry)."""
    from fastunet_core.models.registry import REGISTRY  # torch-free at import

    description = REGISTRY[name].description
    if description.startswith("paper: "):
        return description[len("paper: "):].split(",")[0], description
    return name, description


def _tile_follows_architecture(architecture: QComboBox, tile: QSpinBox) -> None:
    """Step the tile size by what the chosen architecture needs, now and whenever the choice changes.

    The network takes multiples of its size divisor (2 to the power of its halvings); so the arrows only offer those.
    """
    from fastunet_core.models.registry import size_divisor  # torch-free at import

    def fit() -> None:
        divisor = size_divisor(architecture.currentData())
        tile.setSingleStep(divisor)
        tile.setMinimum(divisor)
        tile.setValue(max(divisor, round(tile.value() / divisor) * divisor))

    architecture.currentIndexChanged.connect(fit)
    fit()


def build_train_form(root: QWidget) -> TrainForm:
    """Create the tab's widgets inside ``root`` and lay them out."""
    engine_note = QLabel()
    engine_note.setWordWrap(True)
    engine_note.setVisible(False)
    engine_note.setStyleSheet("QLabel { background: #fff3cd; padding: 4px; }")
    engine_note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

    raster = _narrow(QgsMapLayerComboBox())
    raster.setFilters(QgsMapLayerProxyModel.Filter.RasterLayer)
    raster.setToolTip("The image to learn from: a raster file (GeoTIFF). Its bands and data type become the "
                      "model's input")
    labels = _narrow(QgsMapLayerComboBox())
    labels.setFilters(QgsMapLayerProxyModel.Filter.PolygonLayer)
    labels.setToolTip("The polygons you drew over the raster, in any CRS. Trained on as QGIS shows them "
                      "(unsaved edits and filters included). Pixels outside every polygon are background")
    class_field = _narrow(QgsFieldComboBox())
    class_field.setAllowEmptyFieldName(True)
    class_field.setToolTip("The attribute that holds each polygon's class: a name (building, road …) or a "
                           "whole-number code. Empty: every polygon is one class, named after the layer")
    classes_info = QLabel()
    classes_info.setWordWrap(True)
    classes_info.setToolTip("The classes the model will learn, background first")

    architecture = _narrow(QComboBox())
    for name in ARCHITECTURES:
        text, description = architecture_label(name)
        architecture.addItem(text, name)
        architecture.setItemData(architecture.count() - 1, description, Qt.ItemDataRole.ToolTipRole)
    architecture.setCurrentIndex(max(0, architecture.findData(DEFAULT_ARCHITECTURE)))
    architecture.setToolTip("The network: the UNet variants of Cai & Zhang's paper (Skinny and Less-Conv are the "
                            "fast ones), or a tiny UNet for quick trials on a CPU")
    epochs = _spin(1, 1000, DEFAULT_EPOCHS)
    epochs.setToolTip("Passes over the training tiles at most; training stops earlier when the validation "
                      "loss has not improved for 5 epochs")
    model_file = QgsFileWidget()
    model_file.setStorageMode(QgsFileWidget.StorageMode.SaveFile)
    model_file.setFilter("Models (*.safetensors)")
    model_file.setDialogTitle("Save the trained model as")
    model_file.lineEdit().setPlaceholderText("[beside the raster]")
    model_file.lineEdit().setShowClearButton(True)
    model_file.setToolTip("The model file written when training ends well (empty: beside the raster, named after "
                          "it and the architecture); a file chosen that exists is replaced only after you agree. "
                          "The run's checkpoints, history and curves are kept in the "
                          "folder <name>_training beside it, from which a stopped run resumes")

    advanced = QgsCollapsibleGroupBox("Advanced")
    advanced.setCollapsed(True)
    advanced.setToolTip("Tile size, batch size, learning rate, validation share and device")
    tile, batch = _spin(16, 4096, 256, " px"), _spin(1, 512, 8)
    tile.setToolTip("Side of the square training tiles; also the model's tile size when it segments")
    batch.setToolTip("Tiles per optimiser step: more is smoother and needs more memory")
    lr = QgsDoubleSpinBox()
    lr.setDecimals(5)
    lr.setRange(0.00001, 1.0)
    lr.setSingleStep(0.0001)
    lr.setValue(0.001)
    lr.setClearValue(0.001)
    lr.setToolTip("Adam's learning rate (the paper's 0.001); it halves when the validation loss stalls")
    val_fraction = QgsDoubleSpinBox()
    val_fraction.setRange(0.05, 0.9)
    val_fraction.setSingleStep(0.05)
    val_fraction.setValue(0.2)
    val_fraction.setClearValue(0.2)
    val_fraction.setToolTip("Share of the raster held out to measure the model: a strip along its bottom edge, "
                            "never trained on")
    device = _narrow(QComboBox())
    for value in DEVICE_OPTIONS:
        device.addItem({"auto": "Auto", "cuda": "CUDA", "cpu": "CPU"}[value], value)
    device.setToolTip("Where the model trains. Auto: the GPU when CUDA can be used, else the CPU")
    value_range = QLineEdit()
    value_range.setClearButtonEnabled(True)
    value_range.setPlaceholderText("auto")
    value_range.setToolTip("The raw pixel values that become 0 and 1 for the model, as min,max (e.g. 0,2047); "
                           "stored in the model, so it scales other rasters the same way. Empty: the data type's "
                           "range (0-255 for 8-bit), except 16-bit rasters whose values use fewer bits (11-, 12-, "
                           "14-bit sensors): 0 up to that bit depth's largest value")
    _tile_follows_architecture(architecture, tile)
    aform = _form(advanced)
    aform.addRow("Tile size", tile)
    aform.addRow("Batch size", batch)
    aform.addRow("Learning rate", lr)
    aform.addRow("Validation share", val_fraction)
    aform.addRow("Device", device)
    aform.addRow("Value range", value_range)

    start_over = QCheckBox("Start over")
    start_over.setToolTip("Ignore an earlier run of this model file and train from scratch. Unticked, a stopped "
                          "run with the same settings resumes after its last finished epoch")
    train, cancel = QPushButton("Train"), QPushButton("Cancel")
    train.setToolTip("Train in the background; the curves below grow as epochs finish")
    cancel.setToolTip("Stop after the current step: the finished epochs are kept (Train resumes them) and no "
                      "model file is written")
    cancel.setEnabled(False)
    progress = QProgressBar()
    progress.setRange(0, 100)
    progress.setValue(0)
    progress.setToolTip("Progress of the training run")
    result = QLabel()
    result.setWordWrap(True)
    result.setVisible(False)
    result.setToolTip("How the last run ended")
    curves = CurvePlot()
    log = QPlainTextEdit()
    log.setReadOnly(True)
    log.setMaximumBlockCount(500)
    log.setFixedHeight(90)
    log.setToolTip("What the training runs did, epoch by epoch")

    form = _form()
    form.addRow("Raster", raster)
    form.addRow("Labels", labels)
    form.addRow("Class field", class_field)
    form.addRow(classes_info)
    form.addRow("Architecture", architecture)
    form.addRow("Epochs", epochs)
    form.addRow("Model file", model_file)
    buttons = QHBoxLayout()
    buttons.addWidget(train)
    buttons.addWidget(cancel)
    outer = QVBoxLayout(root)
    outer.addWidget(engine_note)
    outer.addLayout(form)
    outer.addWidget(advanced)
    outer.addWidget(start_over)
    outer.addLayout(buttons)
    outer.addWidget(progress)
    outer.addWidget(result)
    outer.addWidget(curves)
    outer.addWidget(log)
    outer.addStretch(1)
    _wheel_scrolls_the_dock(root)
    return TrainForm(raster, labels, class_field, classes_info, architecture, epochs, model_file, tile, batch, lr,
                     val_fraction, device, value_range, start_over, train, cancel, progress, result, curves, log,
                     engine_note)


def training_engine_status() -> EngineStatus:
    """Return what training lacks: here, or nothing when the engine has a Python of its own.

    The tab builds no configuration in QGIS's process, so an engine venv is all it needs; a package missing
    there is named when the run starts.
    """
    from .engine_process import engine_python

    return EngineStatus(()) if engine_python() is not None else check_engine(TRAIN_MODULES)


class TrainTab(QScrollArea):
    """The Train tab (a scroll area, so it fits the dock's default width and any height)."""

    model_ready = pyqtSignal(str)  # the trained model's file, once a run has ended well

    def __init__(self, iface: Any, notify: Notify, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.iface = iface
        self.notify = notify
        root = QWidget()
        self.form = build_train_form(root)
        self.setWidget(root)
        self.task: Any = None  # the running TrainTask
        f = self.form
        f.labels.layerChanged.connect(self._labels_changed)
        f.class_field.fieldChanged.connect(lambda _name: self._show_classes())
        f.train.clicked.connect(self.start_training)
        f.cancel.clicked.connect(self.cancel_training)
        active = iface.activeLayer() if iface is not None else None
        if isinstance(active, QgsRasterLayer):
            f.raster.setLayer(active)
        elif isinstance(active, QgsVectorLayer) and _is_polygon(active):
            f.labels.setLayer(active)
        self._labels_changed(f.labels.currentLayer())
        self._show_engine_status()
        # a run reads files only (the raster's, its own copy of the labels): it goes on when the project closes
        QgsProject.instance().aboutToBeCleared.connect(self._project_closing)
        app = QgsApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)

    # -- inputs --
    def _labels_changed(self, layer: QgsMapLayer | None) -> None:
        self.form.class_field.setLayer(layer)
        if isinstance(layer, QgsVectorLayer):  # a field named like a class field is the likely one
            names = [fld.name() for fld in layer.fields()]
            guess = next((n for n in names if n.lower() in ("class", "classname", "class_name", "label", "kind")),
                         "")
            self.form.class_field.setField(guess)
        self._show_classes()

    def _show_classes(self) -> None:
        layer = self.form.labels.currentLayer()
        info = self.form.classes_info
        if not isinstance(layer, QgsVectorLayer):
            info.setText("Choose the polygon layer with your labels.")
            return
        try:
            names = class_names_of(layer, self.form.class_field.currentField())
        except Exception as exc:  # a layer that cannot be read: say so instead of raising into QGIS
            info.setText(f"The classes cannot be read: {exc}")
            return
        info.setText(f"Classes: {describe_classes(names)}" if len(names) > 1
                     else "The class field holds no value yet.")

    def choices(self) -> TrainChoices:
        """Read the widgets."""
        f = self.form
        return TrainChoices(raster=f.raster.currentLayer(), labels=f.labels.currentLayer(),
                            class_field=f.class_field.currentField(), architecture=f.architecture.currentData(),
                            epochs=f.epochs.value(), model=f.model_file.filePath(), tile_size_px=f.tile.value(),
                            batch_size=f.batch.value(), lr=f.lr.value(), val_fraction=f.val_fraction.value(),
                            device=f.device.currentData(), value_range=f.value_range.text(),
                            start_over=f.start_over.isChecked())

    def _show_engine_status(self) -> str:
        """Show (and return) what training lacks, or hide the note; finding packages imports nothing."""
        status = training_engine_status()
        missing = (f"Training needs Python packages that QGIS's Python does not have: {', '.join(status.missing)}. "
                   f"{train_tab_hint(status.missing)}") if not status.ok else ""
        self.form.engine_note.setText(missing)
        self.form.engine_note.setVisible(not status.ok)
        return missing

    # -- running --
    def start_training(self) -> Any:
        """Check the inputs and start training; return the task, or None after saying what is wrong."""
        if self.task is not None:
            self.notify("A training run is already going.", Qgis.MessageLevel.Warning)
            return None
        missing = self._show_engine_status()
        if missing:
            self.notify(missing, Qgis.MessageLevel.Warning)
            return None
        from fastunet_core.errors import FastUNetError, OutputExistsError
        from fastunet_core.hints import speaking

        from .train_task import TrainTask
        from .words import TRAIN_TAB

        choices = self.choices()
        try:
            with speaking(TRAIN_TAB):
                try:
                    plan = plan_training(choices)
                except OutputExistsError:  # the model file typed in the tab: asked before anything is written
                    existing = Path(choices.model.strip()).expanduser()
                    if not may_replace(self, [existing]):
                        self._log(f"not started: {existing.name} kept as it is")
                        return None
                    choices.replace_model = True
                    plan = plan_training(choices)
        except FastUNetError as exc:
            self.notify(sentence(str(exc)), Qgis.MessageLevel.Warning)
            return None
        task = TrainTask(plan, self._done)
        task.logged.connect(self._log)
        task.epochs.connect(self.form.curves.set_history)
        task.progressChanged.connect(self._progress)
        self.task = task
        self._set_running(True)
        self.form.curves.clear(plan.config["optim"]["epochs"])
        self.form.result.setVisible(False)
        show_starting(self.form.progress)
        self._log(f"training {self.form.architecture.currentText()} on {plan.name} ({describe_classes(plan.classes)})"
                  f" -> {plan.model}")
        if plan.value_range is not None:
            self._log(f"input values {plan.value_range[0]:g}..{plan.value_range[1]:g} become 0..1")
        QgsApplication.taskManager().addTask(task)
        return task

    def _progress(self, percent: float) -> None:
        show_progress(self.form.progress, percent)

    def cancel_training(self) -> None:
        """Ask the run to stop (after its current optimiser step)."""
        if self.task is not None:
            self._log("cancelling…")
            self.task.cancel()

    def _project_closing(self) -> None:
        """Say that a run goes on when its project is closed or replaced (main thread).

        Training reads the raster file and its own copy of the labels, and writes the run folder and the model
        file: no layer of the project. Stopping an hour of training because another project was opened would
        lose the epoch under way for nothing; the user may still cancel it.
        """
        task = self.task
        if task is None:
            return
        self._log("the project was closed: training goes on")
        self.notify(f"Training on {task.plan.name} goes on: it reads the raster file and its own copy of the labels "
                    f"({task.plan.run_folder.name}), not the closed project's layers. Cancel it in the Train tab or "
                    "QGIS's task bar.", Qgis.MessageLevel.Info)

    def shutdown(self) -> None:
        """Stop a running task and detach it, so that it ends without touching this (deleted) tab.

        Called when QGIS quits or the plugin is unloaded. The engine process is told to exit: it stops the run
        after its current optimiser step, with the finished epochs saved (Train resumes them), and is waited for
        (:data:`STOP_WAIT_S`), so that none outlives QGIS.
        """
        with contextlib.suppress(TypeError):  # already disconnected (a second shutdown)
            QgsProject.instance().aboutToBeCleared.disconnect(self._project_closing)
        task, self.task = self.task, None
        if task is not None:
            task.on_done = None
            task.cancel()
            task.session.shutdown(STOP_WAIT_S)

    def _done(self, task: Any) -> None:
        """Report how the run ended; offer the model to the Segment tab (main thread)."""
        self.task = None
        self._set_running(False)
        self.form.progress.setFormat("%p%")
        said = sentence(task.result_sentence())
        self.form.result.setText(said + ("." if not said.endswith(".") else ""))
        self.form.result.setVisible(True)
        if task.outcome is not None:
            self.form.progress.setValue(100)
            self._log(f"done: {task.result_sentence()}")
            self.model_ready.emit(str(task.outcome.model))
            self.notify(f"{said}; it is now the Segment tab's model.", Qgis.MessageLevel.Success)
        elif task.was_cancelled:
            self.form.progress.setValue(0)
            self._log(task.result_sentence())
            self.notify(f"{said}.", Qgis.MessageLevel.Info)
        else:
            self.form.progress.setValue(0)
            self._log(f"failed: {task.error}")
            self.notify(sentence(task.error or "the training failed"), Qgis.MessageLevel.Critical)

    def _set_running(self, running: bool) -> None:
        self.form.train.setEnabled(not running)
        self.form.cancel.setEnabled(running)

    def _log(self, text: str) -> None:
        self.form.log.appendPlainText(text)


def _is_polygon(layer: QgsVectorLayer) -> bool:
    from qgis.core import QgsWkbTypes

    return QgsWkbTypes.geometryType(layer.wkbType()) == QgsWkbTypes.GeometryType.PolygonGeometry
