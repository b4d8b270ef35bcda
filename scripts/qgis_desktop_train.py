"""A real desktop QGIS run of the dock's Train tab (under Xvfb here), with a screenshot.

Run by the ``qgis`` executable itself (``--code``), so the engine trains in its separate process as for a user:

    xvfb-run -s "-screen 0 1600x1000x24" env -u PROJ_DATA -u PROJ_LIB QGIS_PLUGINPATH=dist/desktop \\
        FASTUNET_GEO_PYTHON=$PWD/.venv/bin/python qgis --nologo --profiles-path /tmp/qgis-desktop-train \\
        --code scripts/qgis_desktop_train.py --py-args OUT_DIR [EPOCHS] --

(``scripts/package_plugin.py`` then unzip into dist/desktop makes the plugin folder.) Steps, on QGIS's event
loop: load the plugin; add ``data/samples/spacenet_atlanta_pan.tif`` and its 43 building footprints as the
label layer; open the dock at its default width on the Train tab; choose UNet Skinny, EPOCHS epochs (default
5), 128 px tiles in batches of 2, the CPU, a model file in OUT_DIR; press Train; when it ends save
``OUT_DIR/desktop_train.png`` (the window) and ``OUT_DIR/desktop_train_dock.png`` (the dock), write
``OUT_DIR/desktop_train.json`` (what happened: curve points, history, messages, the Segment tab's model) and quit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from qgis.core import (
    QgsContrastEnhancement,
    QgsFillSymbol,
    QgsProject,
    QgsRasterLayer,
    QgsRasterMinMaxOrigin,
    QgsVectorLayer,
)
from qgis.utils import iface

sys.path.insert(0, str(Path.cwd() / "scripts"))  # QGIS runs this file with exec, from the repository
from qgis_desktop_common import SAMPLES, DesktopRun, open_plugin_dock

OUT = Path(sys.argv[1])
EPOCHS = int(sys.argv[2]) if len(sys.argv) > 2 else 5
desk = DesktopRun(OUT, "desktop_train.json")
state = desk.state


def start() -> None:
    """Load the plugin, the image and the labels; open the dock on its Train tab and fill it in."""
    dock = open_plugin_dock()
    raster = QgsRasterLayer(str(SAMPLES / "spacenet_atlanta_pan.tif"), "atlanta_pan")
    labels = QgsVectorLayer(str(SAMPLES / "spacenet_atlanta_buildings.geojson"), "buildings", "ogr")
    assert raster.isValid() and labels.isValid()
    raster.setContrastEnhancement(QgsContrastEnhancement.ContrastEnhancementAlgorithm.StretchToMinimumMaximum,
                                  QgsRasterMinMaxOrigin.Limits.CumulativeCut)  # the 13-bit pan is dark at min/max
    labels.setRenderer(labels.renderer().clone())
    labels.renderer().setSymbol(QgsFillSymbol.createSimple(
        {"color": "255,80,0,60", "outline_color": "255,80,0,255", "outline_width": "0.5"}))
    QgsProject.instance().addMapLayer(raster)
    QgsProject.instance().addMapLayer(labels)  # above the image
    iface.mapCanvas().setExtent(raster.extent())
    tab = dock.train_tab
    dock.tabs.setCurrentWidget(tab)
    f = tab.form
    f.raster.setLayer(raster)
    f.labels.setLayer(labels)
    f.architecture.setCurrentIndex(f.architecture.findData("unet_skinny"))
    f.epochs.setValue(EPOCHS)
    f.model_file.setFilePath(str(OUT / "atlanta_buildings.safetensors"))
    f.tile.setValue(128)
    f.batch.setValue(2)  # more optimiser steps in a few epochs of this small chip
    f.device.setCurrentIndex(f.device.findData("cpu"))
    f.start_over.setChecked(True)
    state.update(dock=dock, tab=tab)
    desk.note(f"dock opened on the Train tab, width {dock.width()} px; classes: {f.classes_info.text()}")
    desk.later(2000, train)


def train() -> None:
    """Press Train."""
    task = state["tab"].start_training()
    assert task is not None, "the training did not start"
    state["task"] = task
    state["updates"] = []
    def saved(records: list[dict[str, float]]) -> None:
        state["updates"].append(len(records))
        desk.note(f"epoch {len(records)} saved")

    task.epochs.connect(saved)
    desk.note("Train pressed")
    desk.later(1000, wait)


def wait() -> None:
    """Wait for the run to end."""
    if state["tab"].task is not None:
        desk.later(1000, wait)
        return
    tab, dock, task = state["tab"], state["dock"], state["task"]
    run = task.plan.run_folder
    desk.report["train"] = {
        "error": task.error, "cancelled": task.was_cancelled, "result": tab.form.result.text(),
        "curve_points": tab.form.curves.points, "updates": state["updates"],
        "history": json.loads((run / "history.json").read_text()) if (run / "history.json").exists() else None,
        "model_exists": task.plan.model.exists(), "segment_tab_model": dock.form.model_file.filePath(),
        "segment_tab_model_info": dock.form.model_info.text(), "dock_width": dock.width(),
        "horizontal_scrollbar": tab.horizontalScrollBar().isVisible(),
        "messages": [w.text() for w in iface.messageBar().items()] if hasattr(iface.messageBar(), "items") else [],
    }
    desk.note("training ended")
    iface.mapCanvas().refreshAllLayers()
    desk.later(3000, shoot)


def shoot() -> None:
    """Save the window and the dock, then quit."""
    iface.mainWindow().grab().save(str(OUT / "desktop_train.png"))
    state["dock"].grab().save(str(OUT / "desktop_train_dock.png"))
    desk.note("screenshots saved")
    desk.later(500, finish)


def finish() -> None:
    """Quit QGIS."""
    desk.note("quitting")
    desk.quit()


desk.start(start)
