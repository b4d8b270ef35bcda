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

import sys
from pathlib import Path

from qgis.core import QgsProject, QgsRasterLayer
from qgis.utils import iface

sys.path.insert(0, str(Path.cwd() / "scripts"))  # QGIS runs this file with exec, from the repository
from qgis_desktop_common import SAMPLES, DesktopRun, open_plugin_dock

MODEL, OUT = Path(sys.argv[1]), Path(sys.argv[2])
desk = DesktopRun(OUT, "desktop_run.json")
state = desk.state


def start() -> None:
    """Load the plugin and the image, open the dock."""
    dock = open_plugin_dock()
    layer = QgsRasterLayer(str(SAMPLES / "cogeo.tif"), "cogeo")
    QgsProject.instance().addMapLayer(layer)
    iface.mapCanvas().setExtent(layer.extent())
    state["dock"] = dock
    dock.form.layer.setLayer(layer)
    dock.form.model_file.setFilePath(str(MODEL))
    desk.note(f"dock opened, width {dock.width()} px; model loaded: {dock.meta is not None}")
    desk.later(3000, run_dock)


def run_dock() -> None:
    """Start the dock's run."""
    dock = state["dock"]
    task = dock.start_run()
    assert task is not None, "the dock did not start"
    state["task"] = task
    desk.later(500, wait_dock)


def wait_dock() -> None:
    """Wait for the run and the GPU check."""
    dock = state["dock"]
    if dock.task is not None or dock.gpu is None:
        desk.later(500, wait_dock)
        return
    out = state["task"].outcome
    desk.report["dock"] = {"error": state["task"].error, "tiles": out.tiles if out else None,
                      "features": out.features if out else None, "device_line": dock.form.device_info.text(),
                      "dock_width": dock.width(),
                      "horizontal_scrollbar": dock.tabs.widget(0).horizontalScrollBar().isVisible(),  # the Segment tab
                      "layers": [n.layer().name() for n in QgsProject.instance().layerTreeRoot().findLayers()]}
    iface.mapCanvas().refreshAllLayers()
    desk.later(2500, shoot_dock)


def shoot_dock() -> None:
    """Save the window, then open the Processing dialog."""
    iface.mainWindow().grab().save(str(OUT / "desktop_dock.png"))
    state["dock"].grab().save(str(OUT / "desktop_dock_only.png"))
    desk.note("dock screenshot saved")
    import processing

    out = OUT / "processing"
    out.mkdir(exist_ok=True)
    params = {"INPUT": QgsProject.instance().mapLayersByName("cogeo")[0].id(), "MODEL": str(MODEL), "DEVICE": 2,
              "OUTPUT": str(out / "classes.tif"), "OUTPUT_POLYGONS": str(out / "polygons.gpkg")}
    dialog = processing.createAlgorithmDialog("fastunetgeo:segment", params)
    dialog.show()
    state["dialog"] = dialog
    desk.later(1500, run_dialog)


def run_dialog() -> None:
    """Press Run."""
    state["dialog"].runAlgorithm()  # what the dialog's Run button does: a task, then the results loaded
    desk.note("Processing dialog: Run")
    desk.later(1000, wait_dialog)


def wait_dialog() -> None:
    """Wait until the results are loaded."""
    names = [n.layer().name() for n in QgsProject.instance().layerTreeRoot().findLayers()]
    if not any("polygons" in n.lower() and "cogeo" not in n.lower() for n in names) and state.get("waits", 0) < 240:
        state["waits"] = state.get("waits", 0) + 1
        desk.later(500, wait_dialog)
        return
    desk.report["processing"] = {"layers": names, "outputs": sorted(p.name for p in (OUT / "processing").iterdir())}
    desk.later(2000, shoot_dialog)


def shoot_dialog() -> None:
    """Save the dialog, close it."""
    state["dialog"].grab().save(str(OUT / "desktop_processing.png"))
    iface.mainWindow().grab().save(str(OUT / "desktop_after_processing.png"))
    state["dialog"].close()
    state.pop("dialog")  # the dialog and its context go: the moment the old build crashed
    desk.note("Processing dialog closed")
    desk.later(3000, finish)


def finish() -> None:
    """Quit QGIS."""
    desk.report["alive_after_dialog_closed"] = True
    desk.note("quitting")
    desk.quit()


desk.start(start)
