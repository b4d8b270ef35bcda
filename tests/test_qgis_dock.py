"""The dock in a real, headless QGIS: metadata, device report, runs through its QgsTask, cancel, bad input."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
from cli_helpers import run_cli
from pyproj import Transformer
from qgis.core import (
    Qgis,
    QgsApplication,
    QgsCategorizedSymbolRenderer,
    QgsCoordinateReferenceSystem,
    QgsFeature,
    QgsGeometry,
    QgsPalettedRasterRenderer,
    QgsPointXY,
    QgsProject,
    QgsRasterLayer,
    QgsRectangle,
    QgsTask,
    QgsVectorLayer,
)
from qgis_helpers import hold_after_progress, open_segment_dock, wait_for

pytestmark = pytest.mark.qgis

MODEL_CLASSES = [(0, "building", "#e31a1c"), (1, "water", "#1f78b4"), (2, "woodland", "#33a02c")]


@pytest.fixture
def dock(qgis_iface: object, qgis_new_project: QgsProject) -> Iterator[object]:
    yield from open_segment_dock(qgis_iface)


def messages(iface: object, level: Qgis.MessageLevel) -> list[str]:
    return iface.messageBar().get_messages(level)  # type: ignore[attr-defined]


def add_raster(path: Path, name: str = "ortho") -> QgsRasterLayer:
    layer = QgsRasterLayer(str(path), name)
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    return layer


def run_to_end(dock: object) -> tuple[object, list[float]]:
    task = dock.start_run()
    assert task is not None, f"the run did not start: {messages(dock.iface, Qgis.MessageLevel.Warning)}"
    progress: list[float] = []
    task.progressChanged.connect(progress.append)
    wait_for(lambda: dock.task is None)
    return task, progress


def test_dock_shows_model_metadata_and_device(dock: object, qgis_model: Path) -> None:
    assert dock.load_model(str(qgis_model))
    info = dock.form.model_info.text()
    assert "test_pixel_colour" in info and "128 px, overlap 16 px" in info and "1, 2, 3 (uint8" in info
    for _cid, name, color in MODEL_CLASSES:
        assert name in info and color in info
    assert (dock.form.tile.value(), dock.form.overlap.value()) == (128, 16)
    dock.refresh_device_info()  # starts the GPU check in the background; the line fills in when it answers
    wait_for(lambda: dock.gpu is not None)
    assert dock.form.device_info.text().startswith("Auto uses the CPU: no CUDA: ")
    # the batch size the run will use is the engine's own default for that device (predict's: 1 on a CPU)
    from fastunet_core.runtime.device import CPU_BATCH, CUDA_BATCH

    assert dock.form.batch.text() == f"auto: {CPU_BATCH}" and dock.choices().batch_size is None
    dock.form.device.setCurrentIndex(1)  # CUDA
    assert "CUDA cannot be used" in dock.form.device_info.text()
    assert dock.form.batch.text() == f"auto: {CUDA_BATCH}"
    dock.form.batch.setValue(2)  # the user's own value is kept as typed
    assert dock.form.batch.text() == "2" and dock.choices().batch_size == 2


def test_dock_runs_task_and_adds_styled_layers(dock: object, qgis_iface: object, qgis_model: Path,
                                               small_raster: Path, tmp_path: Path) -> None:
    layer = add_raster(small_raster)
    qgis_iface.setActiveLayer(layer)  # type: ignore[attr-defined]
    from qgis_plugin.dock import SegmentDock

    fresh = SegmentDock(qgis_iface)  # the default raster is the active layer
    assert fresh.form.layer.currentLayer() == layer
    fresh.deleteLater()

    dock.form.layer.setLayer(layer)
    dock.form.model_file.setFilePath(str(qgis_model))  # loads the model through the widget's signal
    assert dock.meta is not None
    dock.form.batch.setValue(2)
    started: list[bool] = []
    QgsApplication.taskManager().taskAdded.connect(lambda _id: started.append(True))
    task, progress = run_to_end(dock)
    assert started and task.outcome is not None and task.error is None
    assert progress and progress == sorted(progress) and progress[-1] == 100
    assert task.outcome.tiles == 6  # 256 x 200 px: 3 x 2 tiles of 128 with overlap 16

    layers = {lyr.name(): lyr for lyr in QgsProject.instance().mapLayers().values()}
    assert set(layers) == {"ortho", "ortho classes", "ortho polygons"}
    classes = layers["ortho classes"]
    renderer = classes.renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer)
    assert [(int(c.value), c.label, c.color.name()) for c in renderer.classes()] == MODEL_CLASSES
    assert classes.extent().toString(6) == layer.extent().toString(6) and classes.crs() == layer.crs()
    polygons = layers["ortho polygons"]
    assert isinstance(polygons.renderer(), QgsCategorizedSymbolRenderer)
    assert polygons.featureCount() == task.outcome.features >= 1
    assert {"class_id", "class_name"} <= set(polygons.fields().names())
    assert any("Segmented ortho" in m for m in messages(qgis_iface, Qgis.MessageLevel.Success))
    assert dock.form.export.isEnabled()

    exported = dock.export_polygons(str(tmp_path / "export.shp"))
    assert exported == tmp_path / "export.shp"
    copy = QgsVectorLayer(str(exported), "copy", "ogr")
    assert copy.featureCount() == polygons.featureCount() and (tmp_path / "export.qml").is_file()
    del copy
    # the same fields (names and types) as the core writes for the same format: the CLI's vectorize
    for suffix, perimeter in ((".shp", "perim_m"), (".gpkg", "perimeter_m")):
        mine = dock.export_polygons(str(tmp_path / f"mine{suffix}"))
        assert mine is not None
        code, err = run_cli("vectorize", str(task.outcome.class_raster), "-o", str(tmp_path / f"core{suffix}"))
        assert code == 0, err
        ours = pyogrio.read_info(str(mine), layer="mine")
        core = pyogrio.read_info(str(tmp_path / f"core{suffix}"), layer="core")
        assert list(ours["fields"]) == list(core["fields"]) == ["class_id", "class_name", "area_m2", perimeter]
        assert list(ours["dtypes"]) == list(core["dtypes"])


def test_dock_processes_map_extent_into_chosen_files(dock: object, qgis_iface: object, qgis_model: Path,
                                                     rio_data: Path, tmp_path: Path) -> None:
    layer = add_raster(rio_data / "cogeo.tif", "cogeo")
    canvas = qgis_iface.mapCanvas()  # type: ignore[attr-defined]
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:4326"))  # the map in another CRS
    ext = layer.extent()
    part = QgsRectangle(ext.xMinimum() + 100, ext.yMaximum() - 200, ext.xMinimum() + 250, ext.yMaximum() - 60)
    from qgis.core import QgsCoordinateTransform

    to_map = QgsCoordinateTransform(layer.crs(), canvas.mapSettings().destinationCrs(), QgsProject.instance())
    canvas.setExtent(to_map.transformBoundingBox(part))
    dock.form.layer.setLayer(layer)
    dock.load_model(str(qgis_model))
    dock.form.area.setCurrentIndex(1)  # current map extent
    dock.form.class_output.setFilePath(str(tmp_path / "classes.tif"))
    dock.form.polygons_output.setFilePath(str(tmp_path / "polygons.gpkg"))
    task, _progress = run_to_end(dock)
    assert task.outcome is not None, task.error
    assert task.outcome.class_raster == tmp_path / "classes.tif"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.qml", "classes.tif", "classes.tif.aux.xml",
                                                          "polygons.gpkg"]  # its style inside
    with rasterio.open(tmp_path / "classes.tif") as dst:
        b = dst.bounds
        shown = canvas.extent()
    back = QgsCoordinateTransform(canvas.mapSettings().destinationCrs(), layer.crs(), QgsProject.instance())
    shown = back.transformBoundingBox(shown).intersect(ext)  # the map extent, clipped to the raster
    px, eps = layer.rasterUnitsPerPixelX(), 1e-6
    # the window covers that, widened outward to whole source pixels
    assert shown.xMinimum() - px - eps <= b.left <= shown.xMinimum() + eps
    assert shown.xMaximum() - eps <= b.right <= shown.xMaximum() + px + eps
    assert shown.yMinimum() - px - eps <= b.bottom <= shown.yMinimum() + eps
    assert shown.yMaximum() - eps <= b.top <= shown.yMaximum() + px + eps
    assert 0 < (b.right - b.left) < 0.8 * ext.width()


def test_dock_polygons_area_masks_outside(dock: object, qgis_model: Path, small_raster: Path) -> None:
    layer = add_raster(small_raster)
    ext = layer.extent()
    area = QgsVectorLayer("Polygon?crs=EPSG:3857", "area", "memory")
    feature = QgsFeature()
    x0, y0 = ext.xMinimum() + 30, ext.yMinimum() + 20  # a right triangle: half of its bounding box is outside
    feature.setGeometry(QgsGeometry.fromPolygonXY([[QgsPointXY(x0, y0), QgsPointXY(x0 + 60, y0),
                                                     QgsPointXY(x0, y0 + 60), QgsPointXY(x0, y0)]]))
    area.dataProvider().addFeatures([feature])
    QgsProject.instance().addMapLayer(area)
    dock.form.layer.setLayer(layer)
    dock.load_model(str(qgis_model))
    dock.form.area.setCurrentIndex(2)
    assert dock.form.polygon_layer.isEnabled()
    dock.form.polygon_layer.setLayer(area)
    dock.form.vectorize.setChecked(False)
    task, _ = run_to_end(dock)
    assert task.outcome is not None, task.error
    assert task.outcome.polygons is None
    px = layer.rasterUnitsPerPixelX()
    with rasterio.open(task.outcome.class_raster) as dst:
        assert dst.width == pytest.approx(60 / px, abs=1.01)
        assert dst.bounds.left == pytest.approx(x0, abs=px)
        classes, nodata = dst.read(1), dst.nodata
        rows, cols = np.mgrid[:dst.height, :dst.width]
        xs, ys = rasterio.transform.xy(dst.transform, rows.ravel(), cols.ravel())
    reach = ((np.asarray(xs) - x0) + (np.asarray(ys) - y0)).reshape(classes.shape) / 60  # < 1 inside
    margin = 1.5 * px / 60
    inside, outside = classes[reach < 1 - margin], classes[reach > 1 + margin]
    assert outside.size > 0.3 * classes.size and (outside == nodata).all()  # masked to the polygon...
    assert (inside != nodata).all() and len(np.unique(inside)) >= 2  # ... and segmented within it


def set_up_cogeo_run(dock: object, qgis_model: Path, rio_data: Path, out: Path) -> Path:
    """Choose cogeo.tif and the model in the dock, one tile per batch, the class raster into ``out`` (made)."""
    dock.form.layer.setLayer(add_raster(rio_data / "cogeo.tif", "cogeo"))
    dock.load_model(str(qgis_model))
    dock.form.batch.setValue(1)
    out.mkdir()
    dock.form.class_output.setFilePath(str(out / "classes.tif"))
    return out


def test_cancelled_run_leaves_no_layer_and_no_file(dock: object, qgis_iface: object, qgis_model: Path,
                                                   rio_data: Path, tmp_path: Path) -> None:
    out = set_up_cogeo_run(dock, qgis_model, rio_data, tmp_path / "out")
    dock.form.polygons_output.setFilePath(str(out / "polygons.gpkg"))
    # QGIS's main window announces every finished task that is not flagged Silent, as "Task failed" / "Task
    # complete" with the task's description: a desktop notification, or, where the desktop has none (the
    # tester's Xvfb), a second line in the message bar beside the dock's own (QgisApp::onTaskCompleteShowNotify)
    manager = QgsApplication.taskManager()
    announced: list[str] = []

    def announce(task_id: int, status: int) -> None:
        done = manager.task(task_id)
        if done is not None and status in (QgsTask.TaskStatus.Complete, QgsTask.TaskStatus.Terminated) \
                and not done.flags() & QgsTask.Flag.Silent:
            announced.append(done.description())

    manager.statusChanged.connect(announce)
    task = dock.start_run()
    assert task is not None
    progress: list[float] = []
    task.progressChanged.connect(progress.append)
    task.progressChanged.connect(lambda p: dock.cancel_run() if p > 5 else None)  # mid-run, after some tiles
    terminated: list[bool] = []
    task.taskTerminated.connect(lambda: terminated.append(True))
    wait_for(lambda: dock.task is None)
    manager.statusChanged.disconnect(announce)
    assert task.was_cancelled and task.outcome is None and terminated
    assert max(progress) < 50  # stopped within a batch of the cancel, far from the end
    assert [lyr.name() for lyr in QgsProject.instance().mapLayers().values()] == ["cogeo"]
    assert list(out.iterdir()) == []
    said = [m for m in messages(qgis_iface, Qgis.MessageLevel.Info) if "cancelled" in m] + announced
    assert len(said) == 1 and said[0].endswith("Segmentation cancelled; nothing was written."), said  # the dock's
    assert not messages(qgis_iface, Qgis.MessageLevel.Critical)


@pytest.mark.parametrize("how", ["close", "open another"])
def test_closing_the_project_cancels_the_run(dock: object, qgis_iface: object, qgis_model: Path, rio_data: Path,
                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """A run whose project is closed (or replaced by another) stops; no layer lands in the next project."""
    other = QgsProject.instance()
    if how == "open another":
        other.write(str(tmp_path / "other.qgz"))  # an empty project to open mid-run
    out = set_up_cogeo_run(dock, qgis_model, rio_data, tmp_path / "out")
    from qgis_plugin.task import SegmentTask

    closed = hold_after_progress(monkeypatch, SegmentTask, 5)  # after its first tiles, until the project is gone
    task = dock.start_run()
    assert task is not None

    def close_project(percent: float) -> None:
        if percent > 5 and not closed.is_set():
            if how == "close":
                QgsProject.instance().clear()
            else:
                assert QgsProject.instance().read(str(tmp_path / "other.qgz"))
            closed.set()

    task.progressChanged.connect(close_project)
    wait_for(lambda: dock.task is None)
    assert task.project_closed and task.was_cancelled and task.outcome is None, task.error
    assert QgsProject.instance().mapLayers() == {}
    assert list(out.iterdir()) == []
    said = [m for m in messages(qgis_iface, Qgis.MessageLevel.Info) if "cancelled" in m]
    assert len(said) == 1 and said[0].endswith(":The project was closed: segmentation cancelled; nothing was written.")
    assert "the project was closed: cancelling" in dock.form.log.toPlainText()


def test_a_run_that_ended_as_its_project_closed_adds_nothing(
        dock: object, qgis_iface: object, qgis_model: Path, small_raster: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The run had finished (its results written) when the project closed, before QGIS handed it back: no layer is
    added to the next project, and the message says where the results are."""
    from qgis_plugin.task import SegmentTask

    dock.form.layer.setLayer(add_raster(small_raster))
    dock.load_model(str(qgis_model))
    handed_back = SegmentTask.finished

    def closed_first(self: SegmentTask, result: bool) -> None:
        QgsProject.instance().clear()  # the project closes between the end of run() and finished()
        handed_back(self, result)

    monkeypatch.setattr(SegmentTask, "finished", closed_first)
    task, _ = run_to_end(dock)
    assert task.project_closed and task.outcome is not None and task.outcome.class_raster.is_file()
    assert QgsProject.instance().mapLayers() == {}
    [said] = [m for m in messages(qgis_iface, Qgis.MessageLevel.Info) if "project was closed" in m]
    assert said.endswith(f"its results were not added to this project ({task.outcome.class_raster}).")
    assert not messages(qgis_iface, Qgis.MessageLevel.Success)


def test_closing_the_dock_says_the_run_goes_on(dock: object, qgis_iface: object, qgis_model: Path,
                                               small_raster: Path) -> None:
    """Closing the panel hides it (as any QGIS panel): the run goes on, and the dock says so."""
    dock.form.layer.setLayer(add_raster(small_raster))
    dock.load_model(str(qgis_model))
    dock.show()
    task = dock.start_run()
    assert task is not None
    dock.close()
    [note] = [m for m in messages(qgis_iface, Qgis.MessageLevel.Info) if "background" in m]
    assert ":The segmentation of ortho goes on in the background" in note
    wait_for(lambda: dock.task is None)
    assert task.outcome is not None, task.error
    assert {"ortho classes", "ortho polygons"} <= {lyr.name() for lyr in QgsProject.instance().mapLayers().values()}


def test_a_run_leaves_the_boxes_as_the_user_chose(dock: object, qgis_model: Path, small_raster: Path) -> None:
    """The new layers never become the Raster or the Area polygons: a second Run must not segment the class map."""
    layer = add_raster(small_raster)
    dock.form.layer.setLayer(layer)
    dock.load_model(str(qgis_model))
    assert dock.form.polygon_layer.currentLayer() is None  # no polygon layer in the project yet
    first, _ = run_to_end(dock)
    assert first.outcome is not None, first.error
    assert dock.form.layer.currentLayer() is layer
    assert dock.form.polygon_layer.currentLayer() is None  # not the run's polygons

    QgsProject.instance().removeAllMapLayers()
    layer = add_raster(small_raster)
    dock.form.layer.setLayer(layer)
    task = dock.start_run()  # the input layer is removed during this run: the Raster box is left empty
    assert task is not None
    input_id = layer.id()
    task.progressChanged.connect(lambda p: QgsProject.instance().removeMapLayer(input_id)
                                 if p > 0 and QgsProject.instance().mapLayer(input_id) else None)
    wait_for(lambda: dock.task is None)
    assert task.outcome is not None, task.error
    assert {lyr.name() for lyr in QgsProject.instance().mapLayers().values()} == {"ortho classes", "ortho polygons"}
    assert dock.form.layer.currentLayer() is None  # not the class raster
    assert dock.form.polygon_layer.currentLayer() is None


def test_a_map_extent_that_cannot_be_transformed_is_one_line(dock: object, qgis_iface: object, qgis_model: Path,
                                                              small_raster: Path) -> None:
    """Projected numbers as a map extent in EPSG:4326 (no such place): a sentence, not a QgsCsException."""
    dock.form.layer.setLayer(add_raster(small_raster))  # EPSG:3857
    dock.load_model(str(qgis_model))
    canvas = qgis_iface.mapCanvas()  # type: ignore[attr-defined]
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:4326"))
    canvas.setExtent(QgsRectangle(300000, 5000000, 310000, 5010000))
    dock.form.area.setCurrentIndex(1)  # current map extent
    assert dock.start_run() is None
    [warning] = messages(qgis_iface, Qgis.MessageLevel.Warning)
    assert "The current map extent cannot be transformed from EPSG:4326 to the raster's CRS EPSG:3857" in warning
    assert warning.endswith("zoom to the raster, or choose polygons as the area") and "\n" not in warning


def test_missing_engine_packages_are_named_not_raised(qgis_iface: object, qgis_new_project: QgsProject,
                                                      monkeypatch: pytest.MonkeyPatch, qgis_model: Path) -> None:
    from qgis_plugin import deps
    from qgis_plugin import dock as dock_module

    monkeypatch.setitem(deps.SEGMENT_MODULES, "fastunet_no_such_module", "fastunet-no-such-package")
    qgis_iface.messageBar().clear_messages()  # type: ignore[attr-defined]
    widget = dock_module.SegmentDock(qgis_iface)
    note = widget.form.engine_note
    assert not note.isHidden() and "fastunet-no-such-package" in note.text()
    # short, and the folder is this profile's (QGIS_CUSTOM_CONFIG_PATH, --profile), not a guessed default one
    from qgis_plugin.installer import engine_venv

    assert f"a private Python environment in {engine_venv(QgsApplication.qgisSettingsDirPath())}," in note.text()
    assert "~/" not in note.text() and "pip install" not in note.text() and len(note.text()) < 400, note.text()
    assert not widget.form.run.isEnabled()
    assert widget.load_model(str(qgis_model)) is False
    assert widget.start_run() is None
    assert any("fastunet-no-such-package" in m for m in messages(qgis_iface, Qgis.MessageLevel.Warning))
    widget.deleteLater()


def test_invalid_layer_shows_a_message(dock: object, qgis_iface: object, qgis_model: Path) -> None:
    broken = QgsRasterLayer("/nonexistent/ortho.tif", "broken")
    QgsProject.instance().addMapLayer(broken)
    dock.form.layer.setLayer(broken)
    dock.load_model(str(qgis_model))
    assert dock.start_run() is None
    [warning] = messages(qgis_iface, Qgis.MessageLevel.Warning)
    assert "'broken' is not valid" in warning
    dock.form.layer.setLayer(None)
    assert dock.start_run() is None
    assert "Choose a raster layer" in messages(qgis_iface, Qgis.MessageLevel.Warning)[-1]


def test_vanished_file_fails_with_a_message(dock: object, qgis_iface: object, qgis_model: Path,
                                            small_raster: Path, tmp_path: Path) -> None:
    copy = tmp_path / "gone.tif"
    shutil.copy(small_raster, copy)
    layer = add_raster(copy, "gone")
    dock.form.layer.setLayer(layer)
    dock.load_model(str(qgis_model))
    copy.unlink()
    task, _ = run_to_end(dock)
    assert task.outcome is None and not task.was_cancelled
    [error] = messages(qgis_iface, Qgis.MessageLevel.Critical)
    assert "not found" in error and "Traceback" not in error
    assert [lyr.name() for lyr in QgsProject.instance().mapLayers().values()] == ["gone"]


def test_web_layer_is_written_to_a_geotiff_first(dock: object, qgis_iface: object, qgis_model: Path,
                                                 small_raster: Path, tmp_path: Path) -> None:
    """An XYZ layer (local tiles made by gdal2tiles) is exported at the model's resolution, then segmented."""
    gdal2tiles = shutil.which("gdal2tiles.py") or shutil.which("gdal2tiles")
    if gdal2tiles is None:
        pytest.skip("gdal2tiles is not installed")
    tiles = tmp_path / "tiles"
    subprocess.run([gdal2tiles, "--xyz", "-z", "17", "-w", "none", "-q", str(small_raster), str(tiles)], check=True,
                   capture_output=True, timeout=120)
    url = f"file://{tiles}/%7Bz%7D/%7Bx%7D/%7By%7D.png"
    web = QgsRasterLayer(f"type=xyz&url={url}&zmin=17&zmax=17", "tiles", "wms")
    assert web.isValid()
    QgsProject.instance().addMapLayer(web)
    dock.load_model(str(qgis_model))
    dock.form.layer.setLayer(web)
    note = dock.form.layer_note
    assert not note.isHidden() and "temporary GeoTIFF at the model's resolution (0.5 m)" in note.text()
    dock.form.area.setCurrentIndex(0)  # whole layer: refused for a web layer
    assert dock.start_run() is None
    assert "choose the current map extent or polygons" in messages(qgis_iface, Qgis.MessageLevel.Warning)[-1]

    canvas = qgis_iface.mapCanvas()  # type: ignore[attr-defined]
    canvas.setDestinationCrs(web.crs())
    with rasterio.open(small_raster) as src:
        b = src.bounds
    canvas.setExtent(QgsRectangle(b.left, b.bottom, b.right, b.top))
    dock.form.area.setCurrentIndex(1)
    dock.form.vectorize.setChecked(False)
    task, _ = run_to_end(dock)
    assert task.outcome is not None, task.error
    assert any("temporary GeoTIFF" in line for line in dock.form.log.toPlainText().splitlines())
    with rasterio.open(task.outcome.class_raster) as dst:
        assert dst.crs.to_epsg() == 3857 and dst.res == pytest.approx((0.5, 0.5))
        assert dst.bounds.left == pytest.approx(canvas.extent().xMinimum(), abs=1.0)


def test_cancel_reaches_a_separate_engine_process(dock: object, qgis_model: Path, rio_data: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """As inside the qgis executables: the engine runs in a child process; Cancel still stops it cleanly."""
    monkeypatch.setenv("FASTUNET_GEO_ENGINE", "subprocess")
    layer = add_raster(rio_data / "cogeo.tif", "cogeo")
    dock.form.layer.setLayer(layer)
    dock.load_model(str(qgis_model))
    dock.form.batch.setValue(1)
    dock.form.class_output.setFilePath(str(tmp_path / "classes.tif"))
    task = dock.start_run()
    assert task is not None
    progress: list[float] = []
    task.progressChanged.connect(progress.append)
    task.progressChanged.connect(lambda p: dock.cancel_run() if p > 10 else None)
    wait_for(lambda: dock.task is None)
    assert task.was_cancelled and task.outcome is None, task.error
    assert progress and max(progress) < 60
    assert "engine: a separate Python process" in dock.form.log.toPlainText()
    assert list(tmp_path.iterdir()) == []


def test_results_read_over_imagery_and_second_run_gets_new_names(dock: object, make_checkpoint: object,
                                                                 small_raster: Path) -> None:
    from qgis.core import QgsLayerTreeLayer

    layer = add_raster(small_raster)
    model = make_checkpoint(classes="background=#000000,building=#e31a1c,water=#1f78b4")  # type: ignore[operator]
    dock.form.layer.setLayer(layer)
    assert dock.load_model(str(model))
    first, _ = run_to_end(dock)
    second, _ = run_to_end(dock)
    assert first.outcome is not None and second.outcome is not None
    names = [node.layer().name() for node in QgsProject.instance().layerTreeRoot().findLayers()]
    assert names == ["ortho polygons (2)", "ortho classes (2)", "ortho polygons", "ortho classes", "ortho"]
    assert all(isinstance(n, QgsLayerTreeLayer) for n in QgsProject.instance().layerTreeRoot().children())

    raster = QgsProject.instance().mapLayersByName("ortho classes")[0]
    palette = {c.label: c.color for c in raster.renderer().classes()}
    assert palette["background"].alpha() == 0 and palette["building"].alpha() == 255
    assert raster.opacity() < 1
    polygons = QgsProject.instance().mapLayersByName("ortho polygons")[0]
    for category in polygons.renderer().categories():
        fill = category.symbol().symbolLayer(0)
        assert fill.color().alpha() < 128  # see-through fill ...
        assert fill.strokeColor().name() == fill.color().name()  # ... with an outline in the class colour

    # per-class area: pixels of each class in the class raster times the pixel's ground area (Web Mercator)
    with rasterio.open(first.outcome.class_raster) as src:
        values = src.read(1)
        _x, y = src.xy(np.arange(src.height), np.zeros(src.height, int))
        lat = Transformer.from_crs(src.crs, "EPSG:4326", always_xy=True).transform(np.zeros(src.height), y)[1]
        scale = np.cos(np.radians(lat)) ** 2  # Mercator's area scale at each row
        row_area = src.res[0] * src.res[1] * scale
    areas = {row[1]: row for row in first.outcome.class_areas}
    for cid, name in ((0, "background"), (1, "building"), (2, "water")):
        expected = float(((values == cid) * row_area[:, None]).sum())
        assert areas[name][2] == int((values == cid).sum())
        assert areas[name][3] == pytest.approx(expected, rel=2e-3)  # the sphere's scale vs the ellipsoid's area
    assert sum(row[4] for row in first.outcome.class_areas) == pytest.approx(1.0)
    text = dock.form.summary.text()
    assert dock.form.summary.isVisibleTo(dock) and all(name in text for name in areas)
    assert f"{100 * areas['building'][4]:.1f} %" in text


def test_dock_fits_300_px_and_every_control_has_a_tooltip(dock: object, qgis_model: Path, small_raster: Path,
                                                          tmp_path: Path) -> None:
    from qgis.PyQt.QtWidgets import QAbstractButton, QAbstractSpinBox, QComboBox, QLineEdit, QWidget

    from qgis_plugin.dock_form import DockForm

    long_name = tmp_path / "orthophoto_of_the_whole_municipality_2024_rgb_10cm.tif"
    shutil.copy(small_raster, long_name)
    dock.form.layer.setLayer(add_raster(long_name, long_name.stem))
    assert dock.load_model(str(qgis_model))
    dock.form.class_output.setFilePath(str(tmp_path / "a_rather_long_output_name_for_the_classes.tif"))
    dock.resize(300, 900)
    dock.show()
    QgsApplication.processEvents()
    scroll = dock.tabs.widget(0)  # the Segment tab
    # the form's minimum width fits the dock's viewport, so no horizontal scroll bar appears at 300 px
    assert dock.form.root.minimumSizeHint().width() <= scroll.viewport().width() <= 300
    assert not scroll.horizontalScrollBar().isVisible()
    controls = [getattr(dock.form, name) for name in DockForm.__dataclass_fields__]
    inputs = [w for w in controls if isinstance(w, (QAbstractButton, QAbstractSpinBox, QComboBox, QLineEdit))
              or type(w).__name__ in ("QgsFileWidget", "QGroupBox", "QProgressBar", "QPlainTextEdit")]
    assert len(inputs) >= 18
    untipped = [type(w).__name__ for w in inputs if isinstance(w, QWidget) and not w.toolTip()]
    assert untipped == []
    dock.hide()


def test_band_mismatch_is_found_before_the_engine_and_bands_can_be_chosen(
        dock: object, qgis_iface: object, qgis_model: Path, small_raster: Path, tmp_path: Path) -> None:
    single = tmp_path / "red.tif"
    with rasterio.open(small_raster) as src:
        profile = dict(src.profile, count=1)
        with rasterio.open(single, "w", **profile) as dst:
            dst.write(src.read(1), 1)
    dock.show()  # the note's visibility as the user sees it
    dock.form.layer.setLayer(add_raster(single, "red"))
    note = dock.form.bands_note
    assert not note.isVisible()  # no model yet: nothing to compare with
    assert dock.load_model(str(qgis_model))
    # said under Bands as soon as both are chosen, before Run; the layer's name as the user wrote it
    assert note.isVisible() and "The layer 'red' has 1 band(s) but the model needs 3" in note.text()
    assert "under Bands, e.g. 1, 1, 1" in note.text() and dock.form.run.isEnabled()  # Bands can fix it
    started: list[int] = []
    QgsApplication.taskManager().taskAdded.connect(started.append)
    assert dock.start_run() is None and not started  # no task, no engine
    [warning] = messages(qgis_iface, Qgis.MessageLevel.Warning)
    assert "The layer 'red' has 1 band(s) but the model needs 3" in warning and "under Bands, e.g. 1, 1, 1" in warning
    assert "--" not in warning  # no CLI flag in QGIS
    dock.form.bands.setText("1, 2")
    assert note.isVisible() and "choose 3 band numbers under Bands" in note.text()
    assert dock.start_run() is None
    assert "choose 3 band numbers under Bands" in messages(qgis_iface, Qgis.MessageLevel.Warning)[-1]
    dock.form.bands.setText("1, 1, 1")
    assert not note.isVisible()  # they fit: the note goes
    dock.form.bands.setText("")
    dock.load_model("")  # no model: no note
    assert not note.isVisible()
    dock.form.bands.setText("1, 1, 1")
    assert dock.load_model(str(qgis_model)) and not note.isVisible()
    task, _ = run_to_end(dock)
    assert task.outcome is not None, task.error
    assert task.job.bands == (1, 1, 1)


def test_dock_and_processing_defaults_agree() -> None:
    from qgis.PyQt.QtWidgets import QWidget

    from qgis_plugin.algorithms.segment import SegmentAlgorithm
    from qgis_plugin.dock_form import build_form

    form = build_form(QWidget())
    alg = SegmentAlgorithm()
    alg.initAlgorithm()
    assert alg.parameterDefinition("SIMPLIFY").defaultValue() == form.simplify.value() == -1  # one pixel
    assert alg.parameterDefinition("MIN_AREA").defaultValue() == form.min_area.value() == -1  # two pixels
    assert alg.parameterDefinition("BATCH_SIZE").defaultValue() == form.batch.value() == 0  # the device's default
    assert form.simplify.text() == "one pixel" and form.min_area.text() == "two pixels"
    assert alg.parameterDefinition("OUTPUT_POLYGONS").createByDefault() == form.vectorize.isChecked() is True
    from qgis_plugin.algorithms.vectorize import VectorizeAlgorithm

    vectorize = VectorizeAlgorithm()
    vectorize.initAlgorithm()
    for name in ("SIMPLIFY", "MIN_AREA"):  # Vectorize class raster too (README: defaults agree)
        assert vectorize.parameterDefinition(name).defaultValue() == alg.parameterDefinition(name).defaultValue()


def _deepness_model(shared_data: Path, tmp_path: Path) -> Path:
    """An ONNX model from Deepness's tests, told that it works at 3 cm (its metadata needs the engine to read)."""
    from click.testing import CliRunner

    from fastunet_core.cli import cli

    model = tmp_path / "red_3cm.onnx"
    source = shared_data / "deepness-testdata" / "models" / "one_output_sigmoid_red_detector.onnx"
    result = CliRunner().invoke(cli, ["init", "--from", str(source), "--classes", "soil,red=#ff0000",
                                      "--resolution-m", "0.03", "-o", str(model)])
    assert result.exit_code == 0, result.stderr
    return model


def test_an_onnx_model_is_read_off_the_gui_thread(dock: object, shared_data: Path, tmp_path: Path,
                                                  qgis_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine reads an ONNX model's metadata on another thread; an answer for a model no longer chosen is
    dropped."""
    import threading

    from fastunet_core.models import checkpoint_file

    model = _deepness_model(shared_data, tmp_path)
    read = checkpoint_file.read_metadata
    release = threading.Event()
    threads: list[threading.Thread] = []

    def held_read(path: object) -> object:  # the engine's read, held until the test lets it answer
        threads.append(threading.current_thread())
        release.wait(timeout=120)
        return read(path)  # type: ignore[arg-type]

    monkeypatch.setattr(checkpoint_file, "read_metadata", held_read)
    assert dock.load_model(str(model)) is True  # returns while the read is held: the GUI thread goes on
    assert dock.meta is None and dock.form.model_info.text() == "Reading the model…"
    assert not dock.form.run.isEnabled()
    release.set()
    wait_for(lambda: dock.meta is not None)
    assert threads and threads[0] is not threading.main_thread()
    assert [c.name for c in dock.meta.classes] == ["soil", "red"] and "red" in dock.form.model_info.text()

    release.clear()
    answers: list[int] = []
    dock._model_reader.answered.connect(lambda number, _answer: answers.append(number))
    assert dock.load_model(str(model))  # read again, and a checkpoint chosen before the answer comes
    assert dock.load_model(str(qgis_model)) and dock.meta.architecture != "onnx"
    chosen = dock.meta
    release.set()
    wait_for(lambda: answers != [])  # the ONNX model's answer has reached the GUI thread ...
    assert dock.meta is chosen and "soil" not in dock.form.model_info.text()  # ... and was dropped


def test_dock_runs_a_deepness_onnx_model_at_its_resolution(dock: object, shared_data: Path, tmp_path: Path) -> None:
    """An ONNX model from Deepness's tests, told once it works at 3 cm, on Deepness's real 2 cm orthophoto."""
    model = _deepness_model(shared_data, tmp_path)
    layer = add_raster(shared_data / "deepness-testdata" / "dummy_fotomap_small.tif")
    dock.form.layer.setLayer(layer)
    dock.form.model_file.setFilePath(str(model))
    wait_for(lambda: dock.meta is not None)  # the engine reads an ONNX model's metadata, off the GUI thread
    assert [c.name for c in dock.meta.classes] == ["soil", "red"]
    assert dock.meta.classes[1].color == (255, 0, 0)  # the colour given to init --from is kept in the file
    assert 'background-color:#ff0000">' in dock.form.model_info.text()
    assert "red" in dock.form.model_info.text()
    dock.form.vectorize.setChecked(False)
    dock.form.run_resolution.setCurrentText("auto")
    task, _ = run_to_end(dock)
    assert task.outcome is not None, task.error
    log = dock.form.log.toPlainText()
    assert "resolution: the model's 0.03 m (the raster's 0.02 m is 33% finer)" in log
    with rasterio.open(task.outcome.class_raster) as dst:
        assert (dst.width, dst.height) == (1243, 841)  # the source grid
        assert 0.01 < float((dst.read(1) == 1).mean()) < 0.99


def test_the_wheel_over_the_dock_changes_no_setting_until_clicked(dock: object) -> None:
    """Scrolling the dock with the pointer over a combo box or spin box leaves the setting as it was."""
    from qgis.PyQt.QtCore import QPoint, QPointF, Qt
    from qgis.PyQt.QtGui import QWheelEvent
    from qgis.PyQt.QtWidgets import QApplication

    form = dock.form  # type: ignore[attr-defined]
    combo, spin = form.run_resolution, form.tile
    combo.setCurrentIndex(0)
    before = (combo.currentIndex(), spin.value())

    def wheel(widget: object) -> None:
        event = QWheelEvent(QPointF(5, 5), QPointF(5, 5), QPoint(0, 0), QPoint(0, -120), Qt.MouseButton.NoButton,
                            Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
        QApplication.sendEvent(widget, event)

    wheel(combo)
    wheel(spin)
    assert (combo.currentIndex(), spin.value()) == before
    spin.setFocus()
    if spin.hasFocus():  # offscreen platforms may not give focus; the guard is what this test is about
        wheel(spin)
        assert spin.value() != before[1]


def test_dock_adds_a_layer_per_head_of_a_two_head_model(dock: object, shared_data: Path) -> None:
    """FINDINGS4 H1: vectorising is on by default; a two-head Deepness model failed with "input raster not found"."""
    layer = add_raster(shared_data / "deepness-testdata" / "dummy_fotomap_small.tif", "fotomap")
    dock.form.layer.setLayer(layer)
    dock.form.model_file.setFilePath(str(shared_data / "deepness-testdata" / "models" /
                                         "two_outputs_softmax_bsx2x512x512.onnx"))
    wait_for(lambda: dock.meta is not None)
    assert dock.form.vectorize.isChecked()
    task, _ = run_to_end(dock)
    assert task.outcome is not None, task.error
    names = sorted(lyr.name() for lyr in QgsProject.instance().mapLayers().values() if lyr.id() != layer.id())
    assert names == ["fotomap head0 classes", "fotomap head0 polygons", "fotomap head1 classes",
                     "fotomap head1 polygons"]
    heads = [lyr for lyr in QgsProject.instance().mapLayers().values() if lyr.name().endswith("classes")]
    assert all(lyr.isValid() and lyr.renderer().type() == "paletted" for lyr in heads)
