"""The dock's state says what is usable: a bad model clears the old one's info and Run; the engine button's place."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from qgis.core import QgsApplication, QgsProject
from qgis_helpers import wait_for

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


def _engine_venv(folder: Path, leave_out: set[str]) -> Path:
    """An engine venv as the installer leaves it (its marker, the packages' metadata), without ``leave_out``."""
    import importlib.metadata as md
    import shutil
    import sys
    import venv

    from qgis_plugin.installer import MARKER, engine_requirements, requirement_name, venv_python

    venv.create(folder, system_site_packages=True, with_pip=False, symlinks=True)
    site = folder / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    for name in {requirement_name(r) for r in engine_requirements()} - leave_out:
        info = Path(str(md.distribution(name)._path))  # type: ignore[attr-defined]  # this venv's installed copy
        shutil.copytree(info, site / info.name)
    (folder / MARKER).write_text(json.dumps({"python": str(venv_python(folder))}))
    return venv_python(folder)


def test_an_engine_installed_before_smp_was_added_asks_for_repair(dock: object, qgis_model: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine venv made by an earlier plugin (no smp, no timm): one line in the dock says Repair, Run still works."""
    from qgis_plugin import engine_host
    from qgis_plugin.deps import check_engine

    form = dock.form  # type: ignore[attr-defined]
    form.model_file.setFilePath(str(qgis_model))
    python = _engine_venv(tmp_path / "engine", {"segmentation-models-pytorch", "timm"})
    monkeypatch.setattr(engine_host, "_engine_python", str(python))
    dock.engine = check_engine()  # type: ignore[attr-defined]  # as when the dock opens or Run is pressed
    dock._show_engine_status()  # type: ignore[attr-defined]
    note = form.engine_note.text()
    assert dock.engine.ok and dock.engine.lacking == ("segmentation-models-pytorch", "timm")  # type: ignore[attr-defined]
    assert form.engine_note.isVisibleTo(dock) and "\n" not in note
    assert "segmentation-models-pytorch, timm" in note and "'Repair / reinstall the engine'" in note, note
    assert form.install.text() == "Repair / reinstall the engine" and form.install.parent() is form.engine_box
    assert form.run.isEnabled()  # a UNet still runs
    from qgis_plugin.deps import engine_import_error

    said = engine_import_error(ModuleNotFoundError("No module named 'segmentation_models_pytorch'",
                                                   name="segmentation_models_pytorch"))  # a UNet++ model's run
    assert "lacks the package segmentation-models-pytorch" in said and "'Repair / reinstall the engine'" in said
    repaired = _engine_venv(tmp_path / "repaired", set())
    monkeypatch.setattr(engine_host, "_engine_python", str(repaired))
    dock.engine = check_engine()  # type: ignore[attr-defined]
    dock._show_engine_status()  # type: ignore[attr-defined]
    assert dock.engine.lacking == () and not form.engine_note.isVisibleTo(dock)  # type: ignore[attr-defined]
    marker = python.parent.parent / "fastunet_geo_engine.json"  # installed with smp's packages left out on purpose
    marker.write_text(json.dumps({"left_out": ["torchvision", "segmentation-models-pytorch", "timm"]}))
    monkeypatch.setattr(engine_host, "_engine_python", str(python))
    assert check_engine().lacking == ()


def test_installing_brings_progress_cancel_and_log_into_view(dock: object, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """On a fresh profile the Install button is at the top; what shows the install's progress is at the bottom."""
    import sys

    from qgis_plugin import install_task
    from qgis_plugin.deps import EngineStatus
    from qgis_plugin.installer import InstallPlan, Step

    lines = "import time\nfor i in range(3000):\n    print(i, flush=True)\n    time.sleep(0.02)"
    plan = InstallPlan(tmp_path / "venv", sys.executable, False, (Step("counting", (sys.executable, "-c", lines), 1),))
    monkeypatch.setattr(install_task, "install_plan", lambda _source=None: plan)  # a harmless step, cancelled below
    dock.engine = EngineStatus(("torch",))  # type: ignore[attr-defined]  # as on a fresh profile
    dock._show_engine_status()  # type: ignore[attr-defined]
    dock.resize(300, 500)  # type: ignore[attr-defined]
    dock.show()  # type: ignore[attr-defined]
    QgsApplication.processEvents()
    form, viewport = dock.form, dock.scroll.viewport()  # type: ignore[attr-defined]

    def in_view(widget: object) -> bool:
        top = widget.mapTo(viewport, widget.rect().topLeft()).y()  # type: ignore[attr-defined]
        return top >= 0 and top + widget.height() <= viewport.height()  # type: ignore[attr-defined]

    assert in_view(form.install) and not in_view(form.log)
    task = dock.start_install()  # type: ignore[attr-defined]
    assert task is not None
    QgsApplication.processEvents()
    assert in_view(form.progress) and in_view(form.cancel) and in_view(form.log)
    dock.cancel_run()  # type: ignore[attr-defined]
    wait_for(lambda: dock.install_task is None)  # type: ignore[attr-defined]
    assert task.was_cancelled and not (tmp_path / "venv").exists()
    dock.hide()  # type: ignore[attr-defined]


def test_an_smp_folder_is_chosen_through_its_files(dock: object, tmp_path: Path) -> None:
    """The Model '...' picks files: an smp folder's model.safetensors or config.json stands for the folder."""
    smp = pytest.importorskip("segmentation_models_pytorch")
    import torch

    torch.manual_seed(0)
    folder = tmp_path / "smp dir"
    smp.Unet(encoder_name="resnet18", encoder_depth=3, decoder_channels=(16, 8, 4), encoder_weights=None,
             classes=2).save_pretrained(str(folder))
    form = dock.form  # type: ignore[attr-defined]
    for picked in ("model.safetensors", "config.json"):
        form.model_file.setFilePath("")
        form.model_file.setFilePath(str(folder / picked))  # what the file dialog hands over
        wait_for(lambda: dock.meta is not None)  # type: ignore[attr-defined]  # the engine reads the folder
        assert form.model_file.filePath() == str(folder)
        assert dock.meta.architecture == "smp.Unet" and len(dock.meta.classes) == 2  # type: ignore[attr-defined]
        assert form.run.isEnabled() or not form.layer.currentLayer()
    loose = tmp_path / "weights.safetensors"  # the weights alone, away from their folder
    loose.write_bytes((folder / "model.safetensors").read_bytes())
    form.model_file.setFilePath(str(loose))
    text = form.model_info.text()
    assert "without fastunet-geo metadata" in text and "smp save_pretrained folder" in text
    assert "fastunet-geo init" not in text and "ARCH" not in text and "--" not in text  # no command line in QGIS
    assert dock.meta is None  # type: ignore[attr-defined]
