"""The dock's Train tab in a real, headless QGIS: train from a raster and a label layer, live curves, cancel, resume."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import rasterio
from qgis.core import (
    Qgis,
    QgsApplication,
    QgsFeature,
    QgsGeometry,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis_helpers import hold_after_progress, wait_for

pytestmark = pytest.mark.qgis

LEVELS = (Qgis.MessageLevel.Info, Qgis.MessageLevel.Warning, Qgis.MessageLevel.Critical, Qgis.MessageLevel.Success)


@pytest.fixture
def dock(qgis_iface: object, qgis_new_project: QgsProject) -> Iterator[object]:
    from qgis_plugin.dock import SegmentDock

    qgis_iface.messageBar().clear_messages()  # type: ignore[attr-defined]
    widget = SegmentDock(qgis_iface)
    yield widget
    tab = widget.train_tab
    if tab.task is not None:
        tab.cancel_training()
        wait_for(lambda: tab.task is None)
    QgsProject.instance().removeAllMapLayers()
    widget.deleteLater()
    QgsApplication.processEvents()


def messages(iface: object, level: Qgis.MessageLevel) -> list[str]:
    return iface.messageBar().get_messages(level)  # type: ignore[attr-defined]


def all_messages(iface: object) -> list[str]:
    return [m for level in LEVELS for m in messages(iface, level)]


def label_layer(raster: Path) -> QgsVectorLayer:
    """A memory layer (as an analyst draws one): buildings and a road over the raster, field 'kind'."""
    with rasterio.open(raster) as src:
        b = src.bounds
    layer = QgsVectorLayer("Polygon?crs=EPSG:3857&field=kind:string", "labels", "memory")
    features = []
    for i, kind in enumerate(("building", "road", "building", "road")):
        x0 = b.left + 10 + 30 * i
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromRect(QgsRectangle(x0, b.bottom + 10, x0 + 20, b.top - 10)))
        feature["kind"] = kind
        features.append(feature)
    layer.dataProvider().addFeatures(features)
    QgsProject.instance().addMapLayer(layer)
    return layer


def fill(tab: object, raster: Path, model: Path, epochs: int) -> QgsVectorLayer:
    """Choose the inputs as a user would: layers, field, a tiny UNet, small tiles, the CPU."""
    layer = QgsRasterLayer(str(raster), "ortho")
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    labels = label_layer(raster)
    f = tab.form  # type: ignore[attr-defined]
    f.raster.setLayer(layer)
    f.labels.setLayer(labels)
    f.class_field.setField("kind")
    f.architecture.setCurrentIndex(f.architecture.findData("unet_tiny"))
    f.epochs.setValue(epochs)
    f.model_file.setFilePath(str(model))
    f.tile.setValue(64)
    f.batch.setValue(4)
    f.device.setCurrentIndex(f.device.findData("cpu"))
    return labels


def watch_curves(tab: object) -> list[tuple[int, bool]]:
    """Record, at each curve update, how many points the plot holds and whether the run was still going."""
    seen: list[tuple[int, bool]] = []
    task = tab.task  # type: ignore[attr-defined]
    task.epochs.connect(lambda _records: seen.append((len(tab.form.curves.points), tab.task is not None)))
    return seen


def history(folder: Path) -> list[dict[str, float]]:
    return json.loads((folder / "history.json").read_text())


def test_train_tab_trains_shows_curves_and_hands_the_model_to_the_dock(dock: object, qgis_iface: object,
                                                                       small_raster: Path, tmp_path: Path) -> None:
    tab = dock.train_tab  # type: ignore[attr-defined]
    assert [dock.tabs.tabText(i) for i in range(dock.tabs.count())] == ["Segment", "Train"]  # type: ignore[attr-defined]
    model = tmp_path / "roofs.safetensors"
    fill(tab, small_raster, model, epochs=2)
    assert tab.form.classes_info.text() == "Classes: background, building, road"
    task = tab.start_training()
    assert task is not None, all_messages(qgis_iface)
    seen = watch_curves(tab)
    wait_for(lambda: tab.task is None, timeout=120)
    assert task.outcome is not None, task.error
    # the model file, with what was chosen in the tab
    assert model.is_file()
    from fastunet_core.models.checkpoint import read_metadata

    meta = read_metadata(model)
    assert meta.architecture == "unet_tiny" and meta.tile_size_px == 64
    assert [c.name for c in meta.classes] == ["background", "building", "road"]
    # the curves: one point per epoch, arriving while the run went on, equal to the run's history file
    run = tmp_path / "roofs_training"
    records = history(run)
    assert [r["epoch"] for r in records] == [1, 2]
    assert [n for n, _running in seen] == [1, 2]
    assert seen[0][1], "the first epoch's point came only after the run had ended"
    assert tab.form.curves.points == [{k: r[k] for k in ("epoch", "train_loss", "val_loss", "val_miou")}
                                      for r in records]
    # the Segment tab now has the model, read from its header
    assert dock.form.model_file.filePath() == str(model)  # type: ignore[attr-defined]
    assert dock.meta is not None and dock.form.tile.value() == 64  # type: ignore[attr-defined]
    [success] = messages(qgis_iface, Qgis.MessageLevel.Success)
    assert "roofs.safetensors" in success and "Segment tab's model" in success and "2 epochs" in success
    assert tab.form.result.text().startswith("Trained unet_tiny on ortho: 2 epochs, best epoch ")
    assert not [m for m in all_messages(qgis_iface) if "--" in m]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["roofs.safetensors", "roofs_training"]  # no temp file


def test_cancel_leaves_no_model_then_train_resumes(dock: object, qgis_iface: object, small_raster: Path,
                                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTUNET_GEO_ENGINE", "subprocess")  # as inside QGIS: the engine in its own process
    tab = dock.train_tab  # type: ignore[attr-defined]
    model = tmp_path / "roofs.safetensors"
    fill(tab, small_raster, model, epochs=50)
    task = tab.start_training()
    assert task is not None, all_messages(qgis_iface)
    wait_for(lambda: len(tab.form.curves.points) >= 1 or tab.task is None, timeout=120)
    tab.cancel_training()
    wait_for(lambda: tab.task is None, timeout=60)
    assert task.was_cancelled and task.outcome is None, task.error
    assert not model.exists(), "a cancelled run wrote the model file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["roofs_training"]  # and no temporary file
    run = tmp_path / "roofs_training"
    kept = len(history(run))
    assert kept >= 1 and (run / "last_state.pt").is_file()
    assert len(tab.form.curves.points) == kept  # the plot kept the finished epochs
    [info] = messages(qgis_iface, Qgis.MessageLevel.Info)
    assert "cancelled" in info and "no model file was written" in info and "--" not in info
    monkeypatch.delenv("FASTUNET_GEO_ENGINE")  # the rest in this process (quicker: torch is loaded once)
    # other settings in the same run folder: said in the tab's words, nothing starts
    tab.form.architecture.setCurrentIndex(tab.form.architecture.findData("unet_skinny"))
    failed = tab.start_training()
    assert failed is not None
    wait_for(lambda: tab.task is None, timeout=60)
    [error] = messages(qgis_iface, Qgis.MessageLevel.Critical)
    assert "another configuration" in error and "'Model file'" in error and "'Start over'" in error, error
    assert "--" not in error
    assert not model.exists()
    # the same settings again, two epochs more: the run resumes after the kept epochs and ends well
    tab.form.architecture.setCurrentIndex(tab.form.architecture.findData("unet_tiny"))
    tab.form.epochs.setValue(kept + 2)
    resumed = tab.start_training()
    assert resumed is not None
    wait_for(lambda: tab.task is None, timeout=120)
    assert resumed.outcome is not None, resumed.error
    assert any(line.startswith("resuming") for line in tab.form.log.toPlainText().splitlines())
    assert model.is_file()
    assert [r["epoch"] for r in history(run)] == list(range(1, kept + 3))
    assert [p["epoch"] for p in tab.form.curves.points] == list(range(1, kept + 3))


def test_a_package_missing_in_the_engines_python_is_named(dock: object, qgis_iface: object, small_raster: Path,
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTUNET_GEO_PYTHON", "/usr/bin/python3")  # Debian's Python: no pydantic, no torch
    tab = dock.train_tab  # type: ignore[attr-defined]
    model = tmp_path / "roofs.safetensors"
    fill(tab, small_raster, model, epochs=1)
    assert tab.start_training() is not None  # an engine of its own: its packages are known only when it starts
    wait_for(lambda: tab.task is None, timeout=60)
    [error] = messages(qgis_iface, Qgis.MessageLevel.Critical)
    assert "Training needs the package pydantic, which the engine's Python (/usr/bin/python3) lacks" in error
    assert not model.exists()


def test_missing_training_packages_are_said_when_the_tab_opens(qgis_iface: object, qgis_new_project: QgsProject,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from qgis_plugin import deps
    from qgis_plugin.dock import SegmentDock

    monkeypatch.setitem(deps.TRAIN_MODULES, "fastunet_no_such_module", "fastunet-no-such-package")
    monkeypatch.delenv("FASTUNET_GEO_PYTHON", raising=False)
    qgis_iface.messageBar().clear_messages()  # type: ignore[attr-defined]
    dock = SegmentDock(qgis_iface)
    tab = dock.train_tab
    assert not tab.form.engine_note.isHidden()
    note = tab.form.engine_note.text()
    assert "fastunet-no-such-package" in note
    # the note is in the dock: it names the dock's button as the Segment tab shows it, and where it is
    assert dock.form.install.text() == "Repair / reinstall the engine" and not dock.form.engine_box.isHidden()
    assert "Press 'Repair / reinstall the engine' in the Segment tab's Engine group" in note, note
    assert "fastunet-geo dock" not in note
    assert tab.start_training() is None and tab.task is None
    [warning] = messages(qgis_iface, Qgis.MessageLevel.Warning)
    assert warning.startswith("fastunet-geo:Training needs Python packages") and "fastunet-no-such-package" in warning
    dock.deleteLater()


def test_without_the_segmentation_engine_the_note_points_at_the_install_button(
        qgis_iface: object, qgis_new_project: QgsProject, monkeypatch: pytest.MonkeyPatch) -> None:
    from qgis_plugin import deps
    from qgis_plugin.dock import SegmentDock

    monkeypatch.setitem(deps.SEGMENT_MODULES, "fastunet_no_such_module", "fastunet-no-such-package")
    monkeypatch.setitem(deps.TRAIN_MODULES, "fastunet_no_such_module", "fastunet-no-such-package")
    monkeypatch.delenv("FASTUNET_GEO_PYTHON", raising=False)
    dock = SegmentDock(qgis_iface)
    note = dock.train_tab.form.engine_note.text()
    assert dock.form.install.text() == "Install the engine"
    assert dock.form.install.parent() is not dock.form.engine_box  # on top of the Segment tab
    assert "Press 'Install the engine' at the top of the Segment tab" in note, note
    assert "fastunet-geo dock" not in note
    dock.deleteLater()


def test_bad_choices_are_refused_before_anything_starts(dock: object, qgis_iface: object, small_raster: Path,
                                                        tmp_path: Path) -> None:
    tab = dock.train_tab  # type: ignore[attr-defined]
    model = tmp_path / "roofs.safetensors"
    labels = fill(tab, small_raster, model, epochs=1)
    tab.form.model_file.setFilePath(str(tmp_path / "roofs.pt"))
    assert tab.start_training() is None
    tab.form.model_file.setFilePath(str(model))
    labels.dataProvider().truncate()
    assert tab.start_training() is None
    tab.form.labels.setLayer(None)
    assert tab.start_training() is None
    assert [m.removeprefix("fastunet-geo:") for m in messages(qgis_iface, Qgis.MessageLevel.Warning)] == [
        "The model file must end in .safetensors (got roofs.pt)",
        "The layer 'labels' holds no polygons; draw some labels first",
        "Choose a valid polygon layer with the labels"]
    assert list(tmp_path.iterdir()) == []


def test_value_range_follows_the_bits_a_16_bit_raster_uses(dock: object, qgis_iface: object, small_raster: Path,
                                                           tmp_path: Path) -> None:
    from qgis_plugin.train_plan import plan_training

    with rasterio.open(small_raster) as src:
        pixels, profile = src.read().astype("uint16"), dict(src.profile, dtype="uint16")
    twelve_bit, full = tmp_path / "twelve_bit.tif", tmp_path / "full.tif"
    with rasterio.open(twelve_bit, "w", **profile) as dst:
        dst.write(pixels * 11)  # at most 2805: a 12-bit sensor's values in a 16-bit file
    with rasterio.open(full, "w", **profile) as dst:
        dst.write(pixels * 250)  # up to 63750: the whole 16-bit range
    tab = dock.train_tab  # type: ignore[attr-defined]
    fill(tab, twelve_bit, tmp_path / "m.safetensors", 1)
    plan = plan_training(tab.choices())
    assert plan.value_range == (0.0, 4095.0) and plan.config["input"] == {"value_range": [0.0, 4095.0]}
    tab.form.value_range.setText("0, 2047")
    assert plan_training(tab.choices()).config["input"] == {"value_range": [0.0, 2047.0]}
    tab.form.value_range.setText("2047")
    assert tab.start_training() is None
    assert "Value range must be 'min,max'" in messages(qgis_iface, Qgis.MessageLevel.Warning)[-1]
    tab.form.value_range.clear()
    fill(tab, full, tmp_path / "m.safetensors", 1)
    assert plan_training(tab.choices()).value_range is None  # the data type's range
    fill(tab, small_raster, tmp_path / "m.safetensors", 1)
    assert "input" not in plan_training(tab.choices()).config  # 8-bit: 0..255, the core's default


def test_train_tab_fits_300_px_and_every_control_has_a_tooltip(dock: object, small_raster: Path,
                                                               tmp_path: Path) -> None:
    from qgis.PyQt.QtWidgets import QAbstractButton, QAbstractSpinBox, QComboBox, QLabel, QLineEdit, QWidget

    from qgis_plugin.train_tab import TrainForm

    tab = dock.train_tab  # type: ignore[attr-defined]
    fill(tab, small_raster, tmp_path / "a_model_name_long_enough_to_need_the_whole_width.safetensors", 3)
    dock.resize(300, 900)  # type: ignore[attr-defined]
    dock.tabs.setCurrentWidget(tab)  # type: ignore[attr-defined]
    dock.show()  # type: ignore[attr-defined]
    QgsApplication.processEvents()
    assert tab.widget().minimumSizeHint().width() <= tab.viewport().width() <= 300
    assert not tab.horizontalScrollBar().isVisible()
    controls = [getattr(tab.form, name) for name in TrainForm.__dataclass_fields__]
    untipped = [name for name, w in zip(TrainForm.__dataclass_fields__, controls, strict=True)
                if isinstance(w, QWidget) and not isinstance(w, QLabel) and not w.toolTip()]
    assert untipped == []
    assert sum(isinstance(w, (QAbstractButton, QAbstractSpinBox, QComboBox, QLineEdit)) for w in controls) >= 12
    dock.hide()  # type: ignore[attr-defined]


def test_curve_plot_draws_points(qgis_app: object) -> None:
    from qgis.PyQt.QtGui import QColor, QImage

    from qgis_plugin.curve_plot import MIOU_COLOUR, CurvePlot

    plot = CurvePlot()
    plot.resize(260, 170)
    plot.clear(planned=3)
    plot.set_history([{"epoch": 1.0, "train_loss": 0.9, "val_loss": 0.8, "val_miou": 0.2},
                      {"epoch": 2.0, "train_loss": 0.7, "val_loss": 0.75, "val_miou": 0.5}])
    image = QImage(plot.size(), QImage.Format.Format_ARGB32)
    image.fill(QColor("white"))
    plot.render(image)
    low = range(int(image.height() * 0.7), image.height())  # the mIoU panel's lower part: below its legend
    greens = sum(1 for y in low for x in range(image.width()) if QColor(image.pixel(x, y)) == MIOU_COLOUR)
    assert greens > 20  # the mIoU line (0.2 -> 0.5) and its points are drawn


def test_tile_size_steps_by_what_each_architecture_takes(dock: object) -> None:
    """The tile arrows offer only sizes the chosen network can take (training refuses the others up front)."""
    from fastunet_core.models.registry import check_tile_multiple, size_divisor

    form = dock.train_tab.form  # type: ignore[attr-defined]
    divisors = {}
    for index in range(form.architecture.count()):
        form.architecture.setCurrentIndex(index)
        name = form.architecture.currentData()
        divisors[name] = size_divisor(name)
        check_tile_multiple(form.tile.value(), name)  # the value moved onto the new architecture's grid
        form.tile.stepUp()
        check_tile_multiple(form.tile.value(), name)
        assert form.tile.singleStep() == divisors[name] and form.tile.minimum() == divisors[name]
        form.tile.stepDown()
        check_tile_multiple(form.tile.value(), name)
    assert len(set(divisors.values())) > 1, divisors  # the architectures differ, so the step must follow them


def test_labels_away_from_the_raster_are_named_as_the_layer(dock: object, qgis_iface: object, small_raster: Path,
                                                             tmp_path: Path) -> None:
    """The tester's 'far labels': the sentence names the layer chosen, not the run folder's labels.gpkg."""
    tab = dock.train_tab  # type: ignore[attr-defined]
    model = tmp_path / "roofs.safetensors"
    labels = fill(tab, small_raster, model, epochs=1)
    labels.setName("far labels")
    away = [feature.id() for feature in labels.getFeatures()]
    labels.dataProvider().changeGeometryValues({fid: QgsGeometry.fromRect(QgsRectangle(0, 0, 10 + i, 10))
                                                for i, fid in enumerate(away)})  # off the coast of Africa
    assert tab.start_training() is None and tab.task is None
    [warning] = [m.removeprefix("fastunet-geo:") for m in messages(qgis_iface, Qgis.MessageLevel.Warning)]
    assert warning == ("None of the polygons of the layer 'far labels' (EPSG:3857) overlaps the raster 'ortho' "
                       "(EPSG:3857); check that both cover the same area and carry the right CRS")
    assert list(tmp_path.iterdir()) == []  # nothing written: no run folder, no labels.gpkg


def test_training_goes_on_when_another_project_is_opened(dock: object, qgis_iface: object, small_raster: Path,
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Training reads files only, so opening another project mid-run lets it end well (unlike a segmentation,
    whose layers belong to the project): the tab says so, and no layer lands in the other project."""
    from qgis_plugin.train_task import TrainTask

    QgsProject.instance().write(str(tmp_path / "other.qgz"))  # an empty project to open mid-run
    tab = dock.train_tab  # type: ignore[attr-defined]
    model = tmp_path / "roofs.safetensors"
    fill(tab, small_raster, model, epochs=2)
    opened = hold_after_progress(monkeypatch, TrainTask, 0)  # the engine waits until the other project is open
    task = tab.start_training()
    assert task is not None, all_messages(qgis_iface)

    def open_other(percent: float) -> None:
        if percent > 0 and not opened.is_set():
            assert QgsProject.instance().read(str(tmp_path / "other.qgz"))
            opened.set()

    task.progressChanged.connect(open_other)
    wait_for(lambda: tab.task is None, timeout=120)
    assert opened.is_set() and task.outcome is not None, task.error
    assert model.is_file() and [r["epoch"] for r in history(tmp_path / "roofs_training")] == [1, 2]
    assert QgsProject.instance().mapLayers() == {}  # nothing added to the project opened meanwhile
    [note] = [m for m in messages(qgis_iface, Qgis.MessageLevel.Info) if "goes on" in m]
    assert note.endswith(":Training on ortho goes on: it reads the raster file and its own copy of the labels "
                         "(roofs_training), not the closed project's layers. Cancel it in the Train tab or QGIS's "
                         "task bar.")
    [success] = messages(qgis_iface, Qgis.MessageLevel.Success)
    assert "Segment tab's model" in success and dock.form.model_file.filePath() == str(model)  # type: ignore[attr-defined]
    assert "the project was closed: training goes on" in tab.form.log.toPlainText()


def test_unloading_the_plugin_mid_training_stops_its_engine_and_keeps_the_epochs(
        qgis_iface: object, qgis_new_project: QgsProject, small_raster: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """What QGIS does when it quits (after its own 'cancel the active tasks?'), or the Plugin Manager when the plugin
    is turned off: the training's engine process ends before unload() returns, the finished epochs stay saved
    with no temporary file, and Train resumes them."""
    from qgis_plugin.dock import SegmentDock
    from qgis_plugin.plugin import FastUNetPlugin

    monkeypatch.setenv("FASTUNET_GEO_ENGINE", "subprocess")  # as inside QGIS: the engine in its own process
    qgis_iface.messageBar().clear_messages()  # type: ignore[attr-defined]
    plugin = FastUNetPlugin(qgis_iface)
    plugin.initGui()
    model = tmp_path / "roofs.safetensors"
    try:
        tab = plugin.show_dock(True).train_tab
        fill(tab, small_raster, model, epochs=50)
        task = tab.start_training()
        assert task is not None, all_messages(qgis_iface)
        ended: list[bool] = []
        task.taskTerminated.connect(lambda: ended.append(True))
        wait_for(lambda: len(tab.form.curves.points) >= 1 or tab.task is None, timeout=120)
        pid = task.session.pid
        assert pid is not None and Path(f"/proc/{pid}").exists()
        plugin.unload()
        assert not Path(f"/proc/{pid}").exists()  # told to exit and reaped before unload() returned
        wait_for(lambda: bool(ended), timeout=60)
        assert task.was_cancelled and task.outcome is None, task.error
    finally:
        if plugin.dock is not None:
            plugin.unload()
    run = tmp_path / "roofs_training"
    kept = len(history(run))
    assert kept >= 1 and (run / "last_state.pt").is_file() and not model.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["roofs_training"]
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []  # no temporary file left
    assert not messages(qgis_iface, Qgis.MessageLevel.Critical)

    monkeypatch.delenv("FASTUNET_GEO_ENGINE")  # QGIS started again: Train, one epoch more, resumes
    QgsProject.instance().removeAllMapLayers()
    again = SegmentDock(qgis_iface)
    try:
        fill(again.train_tab, small_raster, model, epochs=kept + 1)
        resumed = again.train_tab.start_training()
        assert resumed is not None
        wait_for(lambda: again.train_tab.task is None, timeout=120)
        assert resumed.outcome is not None, resumed.error
        assert [r["epoch"] for r in history(run)] == list(range(1, kept + 2)) and model.is_file()
        assert any(line.startswith("resuming") for line in again.train_tab.form.log.toPlainText().splitlines())
    finally:
        again.shutdown()
        again.deleteLater()
        QgsProject.instance().removeAllMapLayers()
        QgsApplication.processEvents()


def test_a_model_file_chosen_that_exists_is_replaced_only_after_yes(dock: object, qgis_iface: object,
                                                                    small_raster: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """L11 in the Train tab: asked before anything is written; No leaves the file and writes no run folder."""
    from qgis.PyQt.QtWidgets import QMessageBox

    tab = dock.train_tab  # type: ignore[attr-defined]
    model = tmp_path / "roofs.safetensors"
    model.write_bytes(b"a colleague's model")
    fill(tab, small_raster, model, epochs=1)
    asked: list[str] = []
    answer = [QMessageBox.StandardButton.No]
    monkeypatch.setattr(QMessageBox, "question", lambda _parent, _title, text, *_args: asked.append(text) or answer[0])
    assert tab.start_training() is None and tab.task is None
    assert asked == [f"{model} already exists.\nReplace it?"]
    assert model.read_bytes() == b"a colleague's model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["roofs.safetensors"]  # no run folder, no labels copy
    assert "not started: roofs.safetensors kept as it is" in tab.form.log.toPlainText()

    answer[0] = QMessageBox.StandardButton.Yes
    task = tab.start_training()
    assert task is not None and len(asked) == 2
    wait_for(lambda: tab.task is None, timeout=120)
    assert task.outcome is not None, task.error
    from fastunet_core.models.checkpoint import read_metadata

    assert read_metadata(model).architecture == "unet_tiny"  # replaced by the trained model
