"""The dock asks before a run replaces files the user chose (as QGIS asks); its own temporary files never ask."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from qgis.core import Qgis, QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtWidgets import QMessageBox
from qgis_helpers import open_segment_dock, wait_for

pytestmark = pytest.mark.qgis


@pytest.fixture
def dock(qgis_iface: object, qgis_new_project: QgsProject) -> Iterator[object]:
    yield from open_segment_dock(qgis_iface)


class Answers:
    """Stands in for QMessageBox.question: records each question and gives the answer set."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.answer = QMessageBox.StandardButton.No

    def __call__(self, _parent: object, _title: str, text: str, *_args: object) -> QMessageBox.StandardButton:
        self.asked.append(text)
        return self.answer


def test_a_run_asks_before_replacing_the_files_chosen(dock: object, qgis_iface: object, qgis_model: Path,
                                                      small_raster: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    answers = Answers()
    monkeypatch.setattr(QMessageBox, "question", answers)
    layer = QgsRasterLayer(str(small_raster), "ortho")
    QgsProject.instance().addMapLayer(layer)
    dock.form.layer.setLayer(layer)  # type: ignore[attr-defined]
    assert dock.load_model(str(qgis_model))  # type: ignore[attr-defined]
    classes, polygons = tmp_path / "classes.tif", tmp_path / "polygons.gpkg"
    dock.form.class_output.setFilePath(str(classes))  # type: ignore[attr-defined]
    dock.form.polygons_output.setFilePath(str(polygons))  # type: ignore[attr-defined]
    started: list[int] = []
    QgsApplication.taskManager().taskAdded.connect(started.append)

    first = dock.start_run()  # type: ignore[attr-defined]
    assert first is not None and answers.asked == []  # new files: nothing to ask
    wait_for(lambda: dock.task is None)  # type: ignore[attr-defined]
    assert first.outcome is not None, first.error
    before = {p: (p.read_bytes(), p.stat().st_ino) for p in (classes, polygons)}

    # the same files again, and No: nothing starts and both files stay as they were
    assert dock.start_run() is None  # type: ignore[attr-defined]
    [question] = answers.asked
    assert question == f"These files already exist:\n{classes}\n{polygons}\nReplace them?"
    assert len(started) == 1 and dock.task is None  # type: ignore[attr-defined]
    assert {p: (p.read_bytes(), p.stat().st_ino) for p in (classes, polygons)} == before
    assert "not started: classes.tif, polygons.gpkg kept as they are" in dock.form.log.toPlainText()  # type: ignore[attr-defined]
    assert not qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Critical)  # type: ignore[attr-defined]

    # Yes: the run replaces them (each renamed into place: a new file)
    answers.answer = QMessageBox.StandardButton.Yes
    third = dock.start_run()  # type: ignore[attr-defined]
    assert third is not None and len(answers.asked) == 2 and len(started) == 2
    wait_for(lambda: dock.task is None)  # type: ignore[attr-defined]
    assert third.outcome is not None, third.error
    assert all(p.stat().st_ino != before[p][1] for p in (classes, polygons))

    # one file: named alone
    dock.form.vectorize.setChecked(False)  # type: ignore[attr-defined]
    answers.answer = QMessageBox.StandardButton.No
    assert dock.start_run() is None  # type: ignore[attr-defined]
    assert answers.asked[-1] == f"{classes} already exists.\nReplace it?"


def test_the_files_a_run_would_replace_include_sidecars_and_heads(tmp_path: Path) -> None:
    """A Shapefile's sidecars count with it; an ONNX model's per-head files count (its head count is not known)."""
    from qgis_plugin.dock_plan import existing_outputs
    from qgis_plugin.jobs import SegmentJob

    for name in ("c_head1.tif", "c_head0.tif", "c_head10.tif", "c_headx.tif", "c_head1.tif.aux.xml", "p.dbf",
                 "p_head0.shp", "p_head0.dbf", "other.tif"):
        (tmp_path / name).write_bytes(b"earlier")
    job = SegmentJob(raster=tmp_path / "in.tif", model=tmp_path / "m.onnx", class_output=tmp_path / "c.tif",
                     polygons_output=tmp_path / "p.shp")
    assert existing_outputs(job) == [tmp_path / n for n in ("c_head0.tif", "c_head1.tif", "c_head10.tif", "p.dbf",
                                                            "p_head0.shp")]
    one_head = SegmentJob(raster=tmp_path / "in.tif", model=tmp_path / "m.safetensors",
                          class_output=tmp_path / "c.tif", polygons_output=tmp_path / "p.shp")
    assert existing_outputs(one_head) == [tmp_path / "p.dbf"]  # its outputs are c.tif and p.shp alone
    (tmp_path / "c.tif").write_bytes(b"earlier")
    (tmp_path / "p.shp").write_bytes(b"earlier")
    assert existing_outputs(one_head) == [tmp_path / "c.tif", tmp_path / "p.shp"]  # the .dbf goes with its .shp


def test_a_shapefile_export_writes_the_longest_class_name_without_a_gdal_warning(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Dock > Export polygons to .shp: the class_name field has a width the dBASE table accepts (no GDAL warning)."""
    import pyogrio
    from qgis.core import QgsFeature, QgsGeometry, QgsVectorLayer

    from fastunet_core.io.vector_fields import SHAPEFILE_STRING_BYTES
    from qgis_plugin.results import export_polygons

    longest = "w" * SHAPEFILE_STRING_BYTES  # the longest name the core's own Shapefiles hold
    layer = QgsVectorLayer("Polygon?crs=EPSG:32633&field=class_id:integer&field=class_name:string"
                           "&field=area_m2:double&field=perimeter_m:double", "p", "memory")  # text of no fixed width
    for cid, name, x in ((1, longest, 0), (2, "water", 20)):
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromWkt(f"POLYGON(({x} 0,{x + 10} 0,{x + 10} 10,{x} 10,{x} 0))"))
        feature.setAttributes([cid, name, 100.0, 40.0])
        assert layer.dataProvider().addFeature(feature)
    capfd.readouterr()
    exported = export_polygons(layer, tmp_path / "export.shp")
    err = capfd.readouterr().err
    assert "Warning" not in err and "truncated" not in err, err
    fields = pyogrio.raw.read(str(exported), columns=["class_name"], read_geometry=False)[3]
    assert list(fields[0]) == [longest, "water"]
