"""A real desktop QGIS run of the plugin (under Xvfb here): the dock and the Processing dialog, with screenshots.

Run by the ``qgis`` executable itself (``--code``), so the engine runs in its separate process as for a user:

    xvfb-run -s "-screen 0 1600x1000x24" env -u PROJ_DATA -u PROJ_LIB QGIS_PLUGINPATH=dist/desktop \\
        FASTUNET_GEO_PYTHON=$PWD/.venv/bin/python qgis --nologo --profiles-path /tmp/qgis-desktop \\
        --code scripts/qgis_desktop_run.py --py-args MODEL OUT_DIR --

(``scripts/package_plugin.py`` then unzip into dist/desktop makes the plugin folder.) Steps, on QGIS's event
loop: load the plugin; add data/samples/cogeo.tif; open the dock at its default width, choose MODEL and run;
save ``OUT_DIR/desktop_dock.png`` (the window: dock and result over the imagery); then the Processing dialog of
Segment raster with every output set, run as the user's Run button does; save ``OUT_DIR/desktop_processing.png``;
write ``OUT_DIR/desktop_run.json`` (what happened) and quit. A crash shows as no JSON and the exit status.
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
report: dict[str, Any] = {"steps": []}
state: dict[str, Any] = {}


def note(text: str) -> None:
    """Record a step."""
    report["steps"].append(text)
    (OUT / "desktop_run.json").write_text(json.dumps(report, indent=1))


def later(ms: int, fn: Any) -> None:
    """Run fn on the event loop after ms milliseconds; an error ends QGIS."""
    def guarded() -> None:
        try:
            fn()
        except Exception:
            report["error"] = traceback.format_exc()
            note("error")
            QgsApplication.exit(3)

    QTimer.singleShot(ms, guarded)


def start() -> None:
    """Load the plugin and the image, open the dock."""
    iface.mainWindow().resize(1600, 1000)
    assert loadPlugin("fastunet_geo") and startPlugin("fastunet_geo"), "the plugin did not load"
    plugin = plugins["fastunet_geo"]
    layer = QgsRasterLayer(str(REPO / "data" / "samples" / "cogeo.tif"), "cogeo")
    QgsProject.instance().addMapLayer(layer)
    iface.mapCanvas().setExtent(layer.extent())
    dock = plugin.show_dock(True)
    state["dock"] = dock
    dock.form.layer.setLayer(layer)
    dock.form.model_file.setFilePath(str(MODEL))
    note(f"dock opened, width {dock.width()} px; model loaded: {dock.meta is not None}")
    later(3000, run_dock)


def run_dock() -> None:
    """Start the dock's run."""
    dock = state["dock"]
    task = dock.start_run()
    assert task is not None, "the dock did not start"
    state["task"] = task
    later(500, wait_dock)


def wait_dock() -> None:
    """Wait for the run and the GPU check."""
    dock = state["dock"]
    if dock.task is not None or dock.gpu is None:
        later(500, wait_dock)
        return
    out = state["task"].outcome
    report["dock"] = {"error": state["task"].error, "tiles": out.tiles if out else None,
                      "features": out.features if out else None, "device_line": dock.form.device_info.text(),
                      "dock_width": dock.width(),
                      "horizontal_scrollbar": dock.widget().horizontalScrollBar().isVisible(),
                      "layers": [n.layer().name() for n in QgsProject.instance().layerTreeRoot().findLayers()]}
    iface.mapCanvas().refreshAllLayers()
    later(2500, shoot_dock)


def shoot_dock() -> None:
    """Save the window, then open the Processing dialog."""
    iface.mainWindow().grab().save(str(OUT / "desktop_dock.png"))
    state["dock"].grab().save(str(OUT / "desktop_dock_only.png"))
    note("dock screenshot saved")
    import processing

    out = OUT / "processing"
    out.mkdir(exist_ok=True)
    params = {"INPUT": QgsProject.instance().mapLayersByName("cogeo")[0].id(), "MODEL": str(MODEL), "DEVICE": 2,
              "OUTPUT": str(out / "classes.tif"), "OUTPUT_POLYGONS": str(out / "polygons.gpkg")}
    dialog = processing.createAlgorithmDialog("fastunetgeo:segment", params)
    dialog.show()
    state["dialog"] = dialog
    later(1500, run_dialog)


def run_dialog() -> None:
    """Press Run."""
    state["dialog"].runAlgorithm()  # what the dialog's Run button does: a task, then the results loaded
    note("Processing dialog: Run")
    later(1000, wait_dialog)


def wait_dialog() -> None:
    """Wait until the results are loaded."""
    names = [n.layer().name() for n in QgsProject.instance().layerTreeRoot().findLayers()]
    if not any("polygons" in n.lower() and "cogeo" not in n.lower() for n in names) and state.get("waits", 0) < 240:
        state["waits"] = state.get("waits", 0) + 1
        later(500, wait_dialog)
        return
    report["processing"] = {"layers": names, "outputs": sorted(p.name for p in (OUT / "processing").iterdir())}
    later(2000, shoot_dialog)


def shoot_dialog() -> None:
    """Save the dialog, close it."""
    state["dialog"].grab().save(str(OUT / "desktop_processing.png"))
    iface.mainWindow().grab().save(str(OUT / "desktop_after_processing.png"))
    state["dialog"].close()
    state.pop("dialog")  # the dialog and its context go: the moment the old build crashed
    note("Processing dialog closed")
    later(3000, finish)


def finish() -> None:
    """Quit QGIS."""
    report["alive_after_dialog_closed"] = True
    note("quitting")
    QgsProject.instance().setDirty(False)  # no "save the project?" question
    iface.actionExit().trigger()  # the way a user quits (QApplication.quit skips QGIS's own shutdown order)


OUT.mkdir(parents=True, exist_ok=True)
later(1000, start)
