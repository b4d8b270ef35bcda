"""The dock's state says what is usable: a bad model clears the old one's info and Run; the engine button's place."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from qgis.core import QgsApplication, QgsProject

pytestmark = pytest.mark.qgis


@pytest.fixture
def dock(qgis_iface: object, qgis_new_project: QgsProject) -> Iterator[object]:
    from qgis_plugin.dock import SegmentDock

    widget = SegmentDock(qgis_iface)
    yield widget
    QgsProject.instance().removeAllMapLayers()
    widget.deleteLater()
    QgsApplication.processEvents()


def test_a_corrupt_model_clears_the_previous_one_and_disables_run(dock: object, qgis_model: Path,
                                                                  tmp_path: Path) -> None:
    """The tester's case: a good model, then a copy of it cut short (the first part only) chosen as the model."""
    form = dock.form  # type: ignore[attr-defined]
    form.model_file.setFilePath(str(qgis_model))
    assert "test_pixel_colour" in form.model_info.text() and form.run.isEnabled()
    corrupt = tmp_path / "corrupt.safetensors"
    data = qgis_model.read_bytes()
    corrupt.write_bytes(data[:-4])  # the header intact, the last weight missing
    form.model_file.setFilePath(str(corrupt))
    info = form.model_info.text()
    assert "test_pixel_colour" not in info and "building" not in info  # nothing of the old model left
    assert "damaged or was not copied whole" in info and "copy the model file again" in info
    assert dock.meta is None and not form.run.isEnabled()  # type: ignore[attr-defined]
    not_a_model = tmp_path / "half.safetensors"
    not_a_model.write_bytes(data[: len(data) // 2])  # the header cut too
    form.model_file.setFilePath(str(not_a_model))
    assert "choose a model written by fastunet-geo" in form.model_info.text() and not form.run.isEnabled()
    form.model_file.setFilePath(str(qgis_model))
    assert form.run.isEnabled()


def test_the_engine_button_leaves_the_top_of_a_working_dock(dock: object) -> None:
    from qgis_plugin.deps import EngineStatus

    form = dock.form  # type: ignore[attr-defined]
    layout = form.root.layout()
    assert dock.engine.ok  # type: ignore[attr-defined]  # this environment has the engine
    assert form.install.parent() is form.engine_box and form.engine_box.isCollapsed()
    assert layout.indexOf(form.engine_box) > layout.indexOf(form.log)  # below everything that does the work
    assert form.install.text() == "Repair / reinstall the engine"
    dock.engine = EngineStatus(("torch",))  # type: ignore[attr-defined]  # as on a fresh profile
    dock._show_engine_status()  # type: ignore[attr-defined]
    assert layout.indexOf(form.install) == layout.indexOf(form.engine_note) + 1 == 1  # at the top, under the note
    assert form.install.text() == "Install the engine" and form.engine_box.isHidden()
    dock.engine = EngineStatus(())  # type: ignore[attr-defined]
    dock._show_engine_status()  # type: ignore[attr-defined]
    assert form.install.parent() is form.engine_box and not form.engine_box.isHidden()
