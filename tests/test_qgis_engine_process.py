"""The dock's long-lived engine process in a real QGIS: kept between runs with its model, restarted, shut down.

The engine is forced into a separate process (``FASTUNET_GEO_ENGINE=subprocess``), as in the QGIS executables
and with the installed engine venv. Whether a run loaded its model is read from the engine process itself
(the ``stats`` call's counters and the log line it sends), never from timings.
"""

from __future__ import annotations

import gc
import os
import signal
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from qgis.core import Qgis, QgsApplication, QgsProject, QgsRasterLayer
from qgis_helpers import open_segment_dock, wait_for

pytestmark = pytest.mark.qgis


@pytest.fixture
def dock(qgis_iface: object, qgis_new_project: QgsProject, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    monkeypatch.setenv("FASTUNET_GEO_ENGINE", "subprocess")
    yield from open_segment_dock(qgis_iface)


def use(dock: object, raster: Path, model: Path) -> None:
    layer = QgsRasterLayer(str(raster), raster.stem)
    assert layer.isValid()
    QgsProject.instance().addMapLayer(layer)
    dock.form.layer.setLayer(layer)  # type: ignore[attr-defined]
    assert dock.load_model(str(model))  # type: ignore[attr-defined]
    dock.form.vectorize.setChecked(False)  # type: ignore[attr-defined]


def run_to_end(dock: object, cancel_above: float | None = None,
               on_progress: object = None) -> object:
    task = dock.start_run()  # type: ignore[attr-defined]
    assert task is not None, dock.iface.messageBar().get_messages(Qgis.MessageLevel.Warning)  # type: ignore[attr-defined]
    if cancel_above is not None:
        task.progressChanged.connect(lambda p: dock.cancel_run() if p > cancel_above else None)  # type: ignore[attr-defined]
    if on_progress is not None:
        task.progressChanged.connect(on_progress)
    wait_for(lambda: dock.task is None, timeout=180)  # type: ignore[attr-defined]
    return task


def stats(dock: object) -> dict[str, int]:
    """Ask the dock's engine process for its pid and model counters."""
    from qgis_plugin.progress_bridge import QuietSink

    return dock.engine_process.call("stats", {}, QuietSink())  # type: ignore[attr-defined,no-any-return]


def log_lines(dock: object) -> list[str]:
    return dock.form.log.toPlainText().splitlines()  # type: ignore[attr-defined,no-any-return]


def running(pid: int) -> bool:
    """Return True while a process with this id exists (a zombie, not yet reaped, counts: /proc keeps it)."""
    return Path(f"/proc/{pid}").exists()


def classes_of(task: object) -> np.ndarray:
    with rasterio.open(task.outcome.class_raster) as src:  # type: ignore[attr-defined]
        return src.read(1)


def test_two_runs_share_one_process_and_one_model_load(dock: object, qgis_model: Path, small_raster: Path,
                                                       make_checkpoint: object) -> None:
    use(dock, small_raster, qgis_model)
    first = run_to_end(dock)
    assert first.outcome is not None, first.error  # type: ignore[attr-defined]
    pid = dock.engine_process.pid  # type: ignore[attr-defined]
    assert pid is not None and running(pid)
    assert stats(dock) == {"pid": pid, "loads": 1, "reuses": 0}

    second = run_to_end(dock)
    assert second.outcome is not None, second.error  # type: ignore[attr-defined]
    assert dock.engine_process.pid == pid and dock.engine_process.starts == 1  # type: ignore[attr-defined]
    assert stats(dock) == {"pid": pid, "loads": 1, "reuses": 1}  # the second run did not load the model again
    assert any("small.safetensors is already loaded in the engine process" in line for line in log_lines(dock))
    a, b = classes_of(first), classes_of(second)
    assert len(np.unique(a)) >= 2 and np.array_equal(a, b)  # the kept model gives the same (varied) map

    os.utime(qgis_model)  # the file written again (a newer modification time): loaded again
    assert run_to_end(dock).outcome is not None  # type: ignore[attr-defined]
    other = make_checkpoint(classes="a,b,c,d")  # type: ignore[operator]
    dock.load_model(str(other))  # type: ignore[attr-defined]
    fourth = run_to_end(dock)
    assert fourth.outcome is not None and len(fourth.outcome.classes) == 4  # type: ignore[attr-defined]
    assert stats(dock) == {"pid": pid, "loads": 3, "reuses": 1}


def test_cancel_during_a_run_then_the_next_run_succeeds(dock: object, qgis_model: Path, rio_data: Path,
                                                        small_raster: Path, tmp_path: Path) -> None:
    use(dock, rio_data / "cogeo.tif", qgis_model)
    dock.form.batch.setValue(1)  # type: ignore[attr-defined]
    out = tmp_path / "out"
    out.mkdir()
    dock.form.class_output.setFilePath(str(out / "classes.tif"))  # type: ignore[attr-defined]
    progress: list[float] = []
    cancelled = run_to_end(dock, cancel_above=5, on_progress=progress.append)
    assert cancelled.was_cancelled and cancelled.outcome is None, cancelled.error  # type: ignore[attr-defined]
    assert max(progress) < 60 and list(out.iterdir()) == []  # stopped mid-run, nothing left
    pid = dock.engine_process.pid  # type: ignore[attr-defined]
    assert pid is not None  # a cancel does not cost the process

    use(dock, small_raster, qgis_model)
    dock.form.class_output.setFilePath(str(out / "classes.tif"))  # type: ignore[attr-defined]
    second = run_to_end(dock)
    assert second.outcome is not None and not second.was_cancelled, second.error  # type: ignore[attr-defined]
    assert dock.engine_process.pid == pid and len(np.unique(classes_of(second))) >= 2  # type: ignore[attr-defined]


def test_a_killed_engine_process_is_restarted_by_the_next_run(dock: object, qgis_iface: object, qgis_model: Path,
                                                              small_raster: Path, rio_data: Path) -> None:
    use(dock, small_raster, qgis_model)
    assert run_to_end(dock).outcome is not None  # type: ignore[attr-defined]
    first_pid = dock.engine_process.pid  # type: ignore[attr-defined]
    os.kill(first_pid, signal.SIGKILL)  # between runs

    second = run_to_end(dock)
    assert second.outcome is not None, second.error  # type: ignore[attr-defined]
    second_pid = dock.engine_process.pid  # type: ignore[attr-defined]
    assert second_pid not in (None, first_pid) and not running(first_pid)  # a new process; the old one reaped
    assert any("engine process had stopped (killed by SIGKILL); starting a new one" in line
               for line in log_lines(dock))

    use(dock, rio_data / "cogeo.tif", qgis_model)  # killed during a run: that run fails in words, no hang
    dock.form.batch.setValue(1)  # type: ignore[attr-defined]
    killed: list[bool] = []

    def kill_once(percent: float) -> None:
        if percent > 5 and not killed:
            killed.append(True)
            os.kill(second_pid, signal.SIGKILL)

    crashed = run_to_end(dock, on_progress=kill_once)
    assert crashed.outcome is None and not crashed.was_cancelled  # type: ignore[attr-defined]
    [error] = qgis_iface.messageBar().get_messages(Qgis.MessageLevel.Critical)  # type: ignore[attr-defined]
    assert "The engine process stopped unexpectedly (killed by SIGKILL)" in error and "Traceback" not in error
    assert not running(second_pid)

    use(dock, small_raster, qgis_model)
    third = run_to_end(dock)
    assert third.outcome is not None, third.error  # type: ignore[attr-defined]
    assert dock.engine_process.pid not in (None, first_pid, second_pid)  # type: ignore[attr-defined]


def test_closing_the_dock_and_unloading_the_plugin_leave_no_engine_process(
        qgis_iface: object, qgis_new_project: QgsProject, monkeypatch: pytest.MonkeyPatch, qgis_model: Path,
        small_raster: Path) -> None:
    from qgis_plugin.plugin import FastUNetPlugin

    monkeypatch.setenv("FASTUNET_GEO_ENGINE", "subprocess")
    plugin = FastUNetPlugin(qgis_iface)
    plugin.initGui()
    try:
        dock = plugin.show_dock(True)
        use(dock, small_raster, qgis_model)
        assert run_to_end(dock).outcome is not None  # type: ignore[attr-defined]
        pid = dock.engine_process.pid
        assert pid is not None and running(pid)

        dock.close()  # the dock's close button: its engine process goes
        assert not running(pid) and dock.engine_process.pid is None
        plugin.show_dock(True)  # opened again: the next run starts a new process
        assert run_to_end(dock).outcome is not None  # type: ignore[attr-defined]
        pid = dock.engine_process.pid
        assert pid is not None and running(pid)

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            plugin.unload()  # also what QGIS calls when it quits
            assert not running(pid)  # told to exit and reaped before unload() returned
            gc.collect()
        assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
    finally:
        if plugin.dock is not None or plugin.provider is not None:
            plugin.unload()
        QgsProject.instance().removeAllMapLayers()
        QgsApplication.processEvents()
