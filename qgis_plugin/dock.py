"""The dock: choose a model, a raster and options, run the segmentation as a task, add the results.

The dock reads its widgets into :class:`~.dock_plan.DockChoices`, turns them into a job
(:func:`~.dock_plan.plan_run`) and hands that to a :class:`~.task.SegmentTask`. Problems found before
the start and errors of the run are shown in the message bar in plain words; nothing here raises into QGIS.
"""

from __future__ import annotations

import contextlib
import dataclasses
import html
import logging
from pathlib import Path
from typing import Any

from qgis.core import Qgis, QgsApplication, QgsMapLayer, QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.gui import QgsDockWidget
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QFileDialog, QScrollArea, QTabWidget, QWidget

from fastunet_core.hints import counted
from fastunet_core.runtime.device import default_batch_size

from .deps import INSTALL_BUTTON, REPAIR_BUTTON, EngineStatus, check_engine
from .device_probe import DeviceProbe, start_device_probe
from .dock_form import (
    BATCH_AUTO,
    TITLE,
    DockForm,
    bring_into_view,
    build_form,
    may_replace,
    place_install_button,
    show_progress,
    show_starting,
)
from .dock_plan import DockChoices, existing_outputs, plan_run
from .engine_session import EngineSession
from .model_info import model_summary_html
from .model_reader import ModelReader, start_model_read
from .qgis_inputs import check_bands, parse_bands, raster_file_path
from .words import sentence

log = logging.getLogger(__name__)


class SegmentDock(QgsDockWidget):
    """The segmentation dock (one per QGIS window)."""

    def __init__(self, iface: Any, parent: QWidget | None = None) -> None:
        super().__init__(TITLE, parent)
        self.setObjectName("FastUNetGeoDock")
        self.iface = iface
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        root = QWidget()
        self.form: DockForm = build_form(root)
        scroll.setWidget(root)
        self.scroll = scroll
        from .train_tab import TrainTab

        self.train_tab = TrainTab(iface, self.notify)  # the Train tab; a trained model becomes this tab's model
        self.train_tab.model_ready.connect(self.load_model)
        self.tabs = QTabWidget()
        self.tabs.addTab(scroll, "Segment")
        self.tabs.addTab(self.train_tab, "Train")
        self.setWidget(self.tabs)
        from .install_task import activate_installed_engine

        activate_installed_engine()  # an engine installed with the button runs in its own venv
        self.engine: EngineStatus = check_engine()
        self.install_task: Any = None
        self.meta: Any = None  # the chosen model's ModelMeta
        self.task: Any = None  # the running SegmentTask
        self.last_polygons: QgsVectorLayer | None = None
        self._device_checked = False
        self.gpu: dict[str, Any] | None = None  # the GPU check's answer, once it has come
        # one engine process for the dock's runs (in the QGIS executables and with the installed engine): started
        # by the GPU check or the first Run, it keeps the model loaded; it goes when the dock closes
        self.engine_process = EngineSession()
        self._closed = False
        app = QgsApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.engine_process.shutdown)
        # closing the project (or opening, or starting, another) cancels a run: its layers belong to that project
        QgsProject.instance().aboutToBeCleared.connect(self._project_closing)
        self._probe = DeviceProbe(self)
        self._probe.answered.connect(self._device_found)
        self._model_reader = ModelReader(self)  # ONNX files and smp folders are read by the engine, off this thread
        self._model_reader.answered.connect(self._model_read)
        self._model_request = 0  # the number of the latest model chosen: older background reads are dropped
        self._connect()
        self._show_engine_status()
        active = iface.activeLayer() if iface is not None else None
        if isinstance(active, QgsRasterLayer):
            self.form.layer.setLayer(active)
        self._layer_changed(self.form.layer.currentLayer())

    # -- set-up --
    def _connect(self) -> None:
        f = self.form
        f.model_file.fileChanged.connect(self.load_model)
        f.layer.layerChanged.connect(self._layer_changed)
        f.bands.textChanged.connect(lambda _text: self._check_bands())
        f.device.currentIndexChanged.connect(lambda _i: self.refresh_device_info())
        f.area.currentIndexChanged.connect(self._area_changed)
        f.run.clicked.connect(self.start_run)
        f.cancel.clicked.connect(self.cancel_run)
        f.export.clicked.connect(self._export_clicked)
        f.install.clicked.connect(lambda: self.start_install())

    def _show_engine_status(self) -> None:
        f = self.form
        f.engine_note.setText(self.engine.message(in_dock=True))
        f.engine_note.setVisible(not self.engine.ok or bool(self.engine.lacking))
        self._enable_run()
        f.install.setText(INSTALL_BUTTON if not self.engine.ok and not self.engine.lacking else REPAIR_BUTTON)
        place_install_button(f, self.engine.ok)
        f.install.setEnabled(self.task is None and self.install_task is None)
        if not self.engine.ok:
            f.device_info.setText("Known once the engine is installed.")

    # -- the engine's own environment --
    def start_install(self, source: Any = None) -> Any:
        """Install (or reinstall) the engine in the background; return the task, or None if busy."""
        if self.task is not None or self.install_task is not None:
            self.notify("Wait for the running task to end first.", Qgis.MessageLevel.Warning)
            return None
        from fastunet_core.errors import FastUNetError

        from .install_task import InstallTask, install_plan

        try:
            plan = install_plan(source)
        except FastUNetError as exc:  # the plugin's list of packages is missing (a damaged plugin folder)
            self.notify(str(exc), Qgis.MessageLevel.Critical)
            return None
        task = InstallTask(plan, self._install_done)
        task.line.connect(self._log)
        task.progressChanged.connect(self._progress)
        self.install_task = task
        self._log(f"installing the engine: {plan.describe()}")
        self.form.progress.setValue(0)
        self.form.progress.setFormat("Installing the engine…")
        self.form.cancel.setEnabled(True)
        self._show_engine_status()
        QgsApplication.taskManager().addTask(task)
        # the button is at the top of the dock, the progress bar, Cancel and the log at the bottom: show them
        bring_into_view(self.scroll, (self.form.log, self.form.progress, self.form.cancel))
        return task

    def _install_done(self, task: Any) -> None:
        self.install_task = None
        self.form.cancel.setEnabled(False)
        self.form.progress.setFormat("%p%")
        self.engine = check_engine()
        self._show_engine_status()
        if task.python is not None:
            self.gpu, self._device_checked = None, False
            self.refresh_device_info()
            self.load_model(self.form.model_file.filePath())
            self.notify(f"The engine is installed ({task.plan.venv}).", Qgis.MessageLevel.Success)
        elif task.was_cancelled:
            self.form.progress.setValue(0)
            self.notify("Engine installation cancelled; nothing was kept.", Qgis.MessageLevel.Info)
        else:
            self.form.progress.setValue(0)
            self._log(f"failed: {task.error}")  # pip's own output is above it
            self.notify(sentence(task.error or "the engine installation failed"), Qgis.MessageLevel.Critical)

    def showEvent(self, event: Any) -> None:
        """On first show, start looking for a GPU in the background (the answer fills in the device line)."""
        super().showEvent(event)
        self._closed = False
        if not self._device_checked:
            QTimer.singleShot(0, self.refresh_device_info)

    def closeEvent(self, event: Any) -> None:
        """Let the engine process go when the dock is closed (after the running task); the next Run starts one.

        A running segmentation goes on: closing a panel in QGIS hides it and stops nothing (QGIS's own task bar
        still shows the task, with its cancel button), so the dock says so, and adds the layers when the run ends.
        """
        super().closeEvent(event)
        self._closed = True
        if self.task is None:
            self.engine_process.shutdown()
        else:
            self.notify(f"The segmentation of {self.task.name} goes on in the background; its layers are added when "
                        "it ends (cancel it in QGIS's task bar, or by opening the dock again).", Qgis.MessageLevel.Info)

    def _project_closing(self) -> None:
        """Cancel the run when the project it was started in is closed or replaced (main thread)."""
        if self.task is not None:
            self.task.project_closed = True
            self._log("the project was closed: cancelling…")
            self.task.cancel()

    # -- model, layer, device, area --
    def load_model(self, path: str) -> bool:
        """Read a model's metadata, show it and take tile size and overlap from it.

        Return True when the model was read, or is being read in the background (ONNX files and smp folders:
        :attr:`meta` is set when the answer arrives), False when it cannot be.
        """
        f = self.form
        from fastunet_core.models.bare_weights import smp_folder_of

        folder = smp_folder_of(path)  # the file picker picks files: an smp folder's model.safetensors means the folder
        path = str(folder) if folder is not None else path
        self.meta = None  # the previous model's info goes too: nothing stale is shown, or run
        self._model_request += 1  # an earlier model's background read, if any, is answered to no one
        self._enable_run()
        self._check_bands()  # no model, no band note
        if f.model_file.filePath() != path:
            f.model_file.blockSignals(True)
            f.model_file.setFilePath(path)
            f.model_file.blockSignals(False)
        if not path.strip():
            f.model_info.setText("No model chosen.")
            return False
        if not self.engine.ok:
            f.model_info.setText("The model cannot be read until the engine's packages are installed (see above).")
            return False
        from fastunet_core.errors import FastUNetError

        from .model_header import needs_engine, read_model_meta

        if needs_engine(path):  # an ONNX file or smp folder: the engine reads it, on another thread
            f.model_info.setText("Reading the model…")
            start_model_read(self._model_reader, self._model_request, path, self.engine_process)
            return True
        try:
            meta = read_model_meta(path)  # the header alone: no torch on the GUI thread
        except FastUNetError as exc:
            return self._show_model(str(exc))
        return self._show_model(meta)

    def _model_read(self, number: int, answer: Any) -> None:
        """Take a background model read's answer (main thread), unless another model was chosen meanwhile."""
        if number == self._model_request:
            self._show_model(answer)

    def _show_model(self, answer: Any) -> bool:
        """Show the model's metadata (a ModelMeta) or why it cannot be read (a sentence); return True for a model."""
        f = self.form
        if isinstance(answer, str):
            f.model_info.setText(f'<span style="color:#b00020">{html.escape(answer, quote=False)}</span>')
            return False
        self.meta = answer
        self._enable_run()
        f.model_info.setText(model_summary_html(answer))
        f.tile.setValue(answer.tile_size_px)
        f.overlap.setValue(answer.overlap_px)
        self._layer_changed(f.layer.currentLayer())
        return True

    def refresh_device_info(self) -> None:
        """Show which device Auto picks and why; the GPU check runs in the background, never on this thread."""
        if not self.engine.ok:
            return  # the engine status says "Known once the engine is installed."
        if self.gpu is None:
            if not self._device_checked:
                self._device_checked = True
                self.form.device_info.setText("Looking for a GPU…")
                start_device_probe(self._probe, self.engine_process)
            return
        choice = self.form.device.currentData()
        why_not, gpu = self.gpu.get("why_not"), self.gpu.get("gpu")
        cuda = choice == "cuda" or (choice == "auto" and why_not is None)  # a CUDA choice runs there or not at all
        self.form.batch.setSpecialValueText(f"{BATCH_AUTO}: {default_batch_size(cuda)}")  # as the engine will run
        if choice == "cpu":
            text = "CPU."
        elif why_not is None:
            text = f"GPU: {gpu}"
        elif choice == "cuda":
            text = f'<span style="color:#b00020">CUDA cannot be used: {why_not}</span>'
        else:
            text = f"Auto uses the CPU: {why_not}"
        self.form.device_info.setText(text)

    def _device_found(self, answer: dict[str, Any]) -> None:
        """Take the background GPU check's answer (main thread)."""
        if "error" in answer:
            self.form.device_info.setText(f"The GPU check failed: {answer['error']}")
            return
        self.gpu = answer
        self.refresh_device_info()

    def _layer_changed(self, layer: QgsMapLayer | None) -> None:
        note = self.form.layer_note
        if isinstance(layer, QgsRasterLayer) and layer.isValid() and raster_file_path(layer) is None:
            res = f"the model's resolution ({self.meta.resolution_m:g} m)" if self.meta and self.meta.resolution_m \
                else "the map's current resolution (the model records none)"
            note.setText(f"{layer.name()} is not a file ({layer.providerType()}): the processed area is first "
                         f"written to a temporary GeoTIFF at {res}. Choose the map extent or polygons as the area.")
            note.setVisible(True)
        else:
            note.setVisible(False)
        self._check_bands()

    def _check_bands(self) -> None:
        """Say under Bands, as soon as a raster file and a model are chosen, when the model cannot read the layer.

        The same check as Run's (which repeats it in the message bar); Run stays enabled, since typing bands
        (e.g. 1, 1, 1) is how the user fixes it, and the note goes as soon as they fit.
        """
        from fastunet_core.errors import ConfigError

        from .words import in_qgis_words

        f, layer = self.form, self.form.layer.currentLayer()
        problem = ""
        if self.meta is not None and isinstance(layer, QgsRasterLayer) and layer.isValid() \
                and raster_file_path(layer) is not None:  # a web layer's bands are those of its export
            try:
                with in_qgis_words():
                    check_bands(layer, self.meta.input.bands, parse_bands(f.bands.text()))
            except ConfigError as exc:
                problem = sentence(str(exc))
        f.bands_note.setText(f'<span style="color:#b00020">{html.escape(problem, quote=False)}</span>')
        f.bands_note.setVisible(bool(problem))

    def _area_changed(self, _index: int) -> None:
        polygons = self.form.area.currentData() == "polygons"
        self.form.polygon_layer.setEnabled(polygons)
        self.form.selected_only.setEnabled(polygons)

    # -- running --
    def choices(self) -> DockChoices:
        """Read the widgets."""
        f = self.form
        canvas = self.iface.mapCanvas() if self.iface is not None else None
        return DockChoices(
            layer=f.layer.currentLayer(), model=f.model_file.filePath(), device=f.device.currentData(),
            tile_size_px=f.tile.value(), overlap_px=f.overlap.value(), batch_size=f.batch.value() or None,
            area=f.area.currentData(), map_extent=canvas.extent() if canvas else None,
            map_crs=canvas.mapSettings().destinationCrs() if canvas else None,
            map_width_px=canvas.width() if canvas else 0, polygon_layer=f.polygon_layer.currentLayer(),
            selected_only=f.selected_only.isChecked(), vectorize=f.vectorize.isChecked(),
            simplify_m=f.simplify.value(), min_area_m2=f.min_area.value(), class_output=f.class_output.filePath(),
            polygons_output=f.polygons_output.filePath(),
            model_resolution_m=self.meta.resolution_m if self.meta is not None else None, bands=f.bands.text(),
            model_bands=self.meta.input.bands if self.meta is not None else None,
            resolution=f.run_resolution.currentText())

    def start_run(self) -> Any:
        """Check the inputs and start the task; return it, or None after telling the user what is wrong."""
        if self.task is not None:
            self.notify("A segmentation is already running.", Qgis.MessageLevel.Warning)
            return None
        self.engine = check_engine()
        self._show_engine_status()
        if not self.engine.ok:
            self.notify(self.engine.message(in_dock=True), Qgis.MessageLevel.Warning)
            return None
        from fastunet_core.errors import FastUNetError

        from .task import SegmentTask
        from .words import in_qgis_words

        try:
            with in_qgis_words():
                plan = plan_run(self.choices())
        except FastUNetError as exc:
            self.notify(sentence(str(exc)), Qgis.MessageLevel.Warning)
            return None
        existing = existing_outputs(plan.job)
        if existing:
            if not may_replace(self, existing):
                self._log(f"not started: {', '.join(p.name for p in existing)} kept as they are")
                return None
            plan.job = dataclasses.replace(plan.job, overwrite=True)
        self._closed = False  # a Run: the dock is in use again
        task = SegmentTask(plan.job, plan.export, plan.name, self._task_done, self.engine_process)
        task.logged.connect(self._log)
        task.progressChanged.connect(self._progress)
        self.task = task
        task.chosen = (self.form.layer.currentLayer(), self.form.polygon_layer.currentLayer())
        self._set_running(True)
        show_starting(self.form.progress)  # until the first tile is done
        self.form.summary.setVisible(False)
        self._log(f"started: {plan.name} -> {plan.job.class_output}")
        QgsApplication.taskManager().addTask(task)
        return task

    def _progress(self, percent: float) -> None:
        show_progress(self.form.progress, percent)

    def cancel_run(self) -> None:
        """Ask the running task to stop (it stops before its next batch of tiles)."""
        if self.install_task is not None:
            self._log("cancelling the installation…")
            self.install_task.cancel()
        if self.task is not None:
            self._log("cancelling…")
            self.task.cancel()

    def shutdown(self) -> None:
        """Cancel a running task and detach it, so that it ends without touching this (deleted) dock; end the engine.

        The engine process is told to exit (it cancels what runs) and killed if it has not within a few seconds.
        """
        self.train_tab.shutdown()
        if self.install_task is not None:
            self.install_task.on_done = None
            self.install_task.cancel()
            self.install_task = None
        if self.task is not None:
            self.task.on_done = None
            self.task.cancel()
            self.task = None
        with contextlib.suppress(TypeError):  # already disconnected (a second shutdown)
            QgsProject.instance().aboutToBeCleared.disconnect(self._project_closing)
        self.engine_process.shutdown()

    def _task_done(self, task: Any) -> None:
        """Add the layers, or say why there are none (main thread)."""
        self.task = None
        self._set_running(False)
        self.form.progress.setFormat("%p%")
        if self._closed:  # the dock was closed during the run
            self.engine_process.shutdown()
        if task.outcome is not None and task.project_closed:  # it ended before the cancel reached it
            self._log(f"done after its project was closed: {task.outcome.class_raster}")
            self.notify(f"The project was closed before the segmentation of {task.name} ended; its results were not "
                        f"added to this project ({task.outcome.class_raster}).", Qgis.MessageLevel.Info)
        elif task.outcome is not None:
            from fastunet_core.errors import FastUNetError

            from .results import add_result_layers, class_area_html

            out = task.outcome
            try:
                if out.more_heads:  # a model with several output heads: a raster (and polygons) per head
                    layers = add_result_layers(out.class_raster, out.polygons, f"{task.name} head0", out.classes)
                    for k, (raster, polys) in enumerate(out.more_heads, start=1):
                        layers += add_result_layers(raster, polys, f"{task.name} head{k}")
                else:
                    layers = add_result_layers(out.class_raster, out.polygons, task.name, out.classes)
            except FastUNetError as exc:
                self.notify(sentence(str(exc)), Qgis.MessageLevel.Critical)
                return
            self._keep_choices(task.chosen, layers)
            polygons = [lyr for lyr in layers if isinstance(lyr, QgsVectorLayer)]
            self.last_polygons = polygons[0] if polygons else None
            self.form.export.setEnabled(self.last_polygons is not None)
            self.form.progress.setValue(100)
            if out.class_areas:
                table = class_area_html(out.class_areas, out.classes)
                self.form.summary.setText(f"<b>{task.name}</b>: area by class{table}")
                self.form.summary.setVisible(True)
            summary = f"{task.name}: {counted(out.tiles, 'tile')} in {out.seconds:.1f} s on {out.device}"
            if out.polygons is not None:
                summary += f", {counted(out.features, 'polygon')}"
            self._log(f"done: {summary}")
            self.notify(f"Segmented {summary}.", Qgis.MessageLevel.Success)
            for text in out.warnings:
                self.notify(sentence(text), Qgis.MessageLevel.Warning)
        elif task.was_cancelled:
            self.form.progress.setValue(0)
            self._log("cancelled; nothing was written")
            why = "The project was closed: segmentation" if task.project_closed else "Segmentation"
            self.notify(f"{why} cancelled; nothing was written.", Qgis.MessageLevel.Info)
        else:
            self.form.progress.setValue(0)
            self._log(f"failed: {task.error}")
            self.notify(sentence(task.error or "the segmentation failed"), Qgis.MessageLevel.Critical)

    def _keep_choices(self, chosen: tuple[Any, Any], added: list[QgsMapLayer]) -> None:
        """Keep the Raster and Area polygons boxes on the user's layers, never on the run's new ones.

        A box that was empty, or whose layer went during the run, would otherwise take a new layer of its kind
        (a second Run would then segment the class map).
        """
        ids = {lyr.id() for lyr in added}
        for box, before in zip((self.form.layer, self.form.polygon_layer), chosen, strict=True):
            now = box.currentLayer()
            if now is not None and now.id() in ids:
                alive = before is not None and QgsProject.instance().mapLayer(_layer_id(before)) is not None
                box.setLayer(before if alive else None)

    def _enable_run(self) -> None:
        """Run is offered only with the engine installed, a model read, and nothing running."""
        self.form.run.setEnabled(self.engine.ok and self.meta is not None and self.task is None
                                 and self.install_task is None)

    def _set_running(self, running: bool) -> None:
        self._enable_run()
        self.form.cancel.setEnabled(running)
        self.form.install.setEnabled(not running)

    # -- export --
    def _export_clicked(self) -> None:
        path, _filter = QFileDialog.getSaveFileName(self, "Export polygons", "",
                                                    "GeoPackage (*.gpkg);;ESRI Shapefile (*.shp)")
        if path:
            self.export_polygons(path)

    def export_polygons(self, path: str) -> Path | None:
        """Write the last polygons to ``path`` (.gpkg or .shp) with their style; report in the message bar."""
        from fastunet_core.errors import FastUNetError

        from .results import export_polygons

        layer = self.last_polygons
        try:
            if layer is None or QgsProject.instance().mapLayer(layer.id()) is None:
                self.notify("There are no polygons to export; run a segmentation with Vectorize on.",
                            Qgis.MessageLevel.Warning)
                return None
        except RuntimeError:  # the layer was removed and deleted
            self.notify("The polygons layer was removed; run the segmentation again.", Qgis.MessageLevel.Warning)
            return None
        try:
            out = export_polygons(layer, path)
        except FastUNetError as exc:
            self.notify(sentence(str(exc)), Qgis.MessageLevel.Critical)
            return None
        self.notify(f"Polygons written to {out}.", Qgis.MessageLevel.Success)
        return out

    # -- messages --
    def notify(self, text: str, level: Qgis.MessageLevel) -> None:
        """Show a message in QGIS's message bar (and the dock's log)."""
        if self.iface is not None:
            duration = 0 if level in (Qgis.MessageLevel.Critical, Qgis.MessageLevel.Warning) else 8
            self.iface.messageBar().pushMessage(TITLE, text, level=level, duration=duration)
        else:
            log.info("%s", text)

    def _log(self, text: str) -> None:
        self.form.log.appendPlainText(text)


def _layer_id(layer: QgsMapLayer) -> str:
    """Return the layer's id, or "" once QGIS has deleted it."""
    try:
        return str(layer.id())
    except RuntimeError:
        return ""
