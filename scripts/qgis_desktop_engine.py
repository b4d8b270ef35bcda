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

import json
import sys
import traceback
from pathlib import Path
from typing import Any

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QTimer
from qgis.utils import iface, loadPlugin, plugins, startPlugin

REPO = Path.cwd()  # run from the repository (QGIS runs this file with exec: no __file__)
MODEL, OUT = Path(sys.argv[1]), Path(sys.argv[2])
report: dict[str, Any] = {"runs": []}
state: dict[str, Any] = {}


def save() -> None:
    """Write the report."""
    (OUT / "engine_desktop.json").write_text(json.dumps(report, indent=1))


def later(ms: int, fn: Any) -> None:
    """Run fn on the event loop after ms milliseconds; an error ends QGIS."""
    def guarded() -> None:
        try:
            fn()
        except Exception:
            report["error"] = traceback.format_exc()
            save()
            QgsApplication.exit(3)

    QTimer.singleShot(ms, guarded)


def start() -> None:
    """Load the plugin and the image, open the dock with the model."""
    assert loadPlugin("fastunet_geo") and startPlugin("fastunet_geo"), "the plugin did not load"
    layer = QgsRasterLayer(str(REPO / "data" / "samples" / "cogeo.tif"), "cogeo")
    QgsProject.instance().addMapLayer(layer)
    dock = plugins["fastunet_geo"].show_dock(True)
    state["dock"] = dock
    dock.form.layer.setLayer(layer)
    dock.form.model_file.setFilePath(str(MODEL))
    dock.form.batch.setValue(1)
    later(2000, run)


def run() -> None:
    """Press Run."""
    task = state["dock"].start_run()
    assert task is not None, "the dock did not start"
    state["task"] = task
    later(500, wait)


def wait() -> None:
    """Wait for the run; record the engine process; run again or quit."""
    dock = state["dock"]
    if dock.task is not None:
        later(300, wait)
        return
    quiet = sys.modules["fastunet_geo.progress_bridge"].QuietSink()  # the installed plugin's (loaded by now)
    task = state["task"]
    report["runs"].append({"error": task.error, "ok": task.outcome is not None, "pid": dock.engine_process.pid,
                           "stats": dock.engine_process.call("stats", {}, quiet)})
    report["log"] = dock.form.log.toPlainText().splitlines()
    report["child_pid"] = dock.engine_process.pid
    save()
    if len(report["runs"]) < 2:
        later(500, run)
        return
    QgsProject.instance().removeAllMapLayers()  # else QGIS asks about the temporary layers (checkMemoryLayers)
    QgsProject.instance().setDirty(False)  # no "save the project?" question
    iface.actionExit().trigger()


OUT.mkdir(parents=True, exist_ok=True)
later(1000, start)
