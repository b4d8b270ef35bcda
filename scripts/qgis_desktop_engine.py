"""The dock's kept engine process in the real desktop QGIS (under Xvfb here): two runs, one process, then Quit.

Run by the ``qgis`` executable itself (``--code``), so the engine runs in its separate process as for a user:

    xvfb-run -s "-screen 0 1600x1000x24" env -u PROJ_DATA -u PROJ_LIB QGIS_PLUGINPATH=dist/desktop \\
        FASTUNET_GEO_PYTHON=$PWD/.venv/bin/python qgis --nologo --profiles-path /tmp/qgis-engine \\
        --code scripts/qgis_desktop_engine.py --py-args MODEL OUT_DIR --

Loads the plugin, adds data/samples/cogeo.tif, runs the dock twice (batch 1) and records after each run the
engine process's pid and its model loads (its ``stats`` call), then removes the layers and quits the way a
user does (File > Exit). ``OUT_DIR/engine_desktop.json`` holds ``runs`` and ``child_pid``: after QGIS has
exited, ``/proc/<child_pid>`` must be gone.
"""

from __future__ import annotations

import sys
from pathlib import Path

from qgis.core import QgsProject, QgsRasterLayer

sys.path.insert(0, str(Path.cwd() / "scripts"))  # QGIS runs this file with exec, from the repository
from qgis_desktop_common import SAMPLES, DesktopRun, open_plugin_dock, plugin_module

MODEL, OUT = Path(sys.argv[1]), Path(sys.argv[2])
desk = DesktopRun(OUT, "engine_desktop.json", runs=[])
state = desk.state


def start() -> None:
    """Load the plugin and the image, open the dock with the model."""
    dock = open_plugin_dock()
    layer = QgsRasterLayer(str(SAMPLES / "cogeo.tif"), "cogeo")
    QgsProject.instance().addMapLayer(layer)
    state["dock"] = dock
    dock.form.layer.setLayer(layer)
    dock.form.model_file.setFilePath(str(MODEL))
    dock.form.batch.setValue(1)
    desk.later(2000, run)


def run() -> None:
    """Press Run."""
    task = state["dock"].start_run()
    assert task is not None, "the dock did not start"
    state["task"] = task
    desk.later(500, wait)


def wait() -> None:
    """Wait for the run; record the engine process; run again or quit."""
    dock = state["dock"]
    if dock.task is not None:
        desk.later(300, wait)
        return
    quiet = plugin_module("progress_bridge").QuietSink()
    task = state["task"]
    desk.report["runs"].append({"error": task.error, "ok": task.outcome is not None, "pid": dock.engine_process.pid,
                                "stats": dock.engine_process.call("stats", {}, quiet)})
    desk.report["log"] = dock.form.log.toPlainText().splitlines()
    desk.report["child_pid"] = dock.engine_process.pid
    desk.save()
    if len(desk.report["runs"]) < 2:
        desk.later(500, run)
        return
    desk.quit()


desk.start(start)
