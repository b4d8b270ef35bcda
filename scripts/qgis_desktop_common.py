"""What the desktop QGIS scripts (``scripts/qgis_desktop_*.py``) share: the report, the event-loop steps, quitting.

Each script is run by the ``qgis`` executable (``--code``, from the repository folder) and drives QGIS's event
loop with timed steps: :meth:`DesktopRun.later` runs one after a delay and ends QGIS (exit status 3, the
traceback in the report) when it raises. The report is a JSON file in the output folder, rewritten at every
:meth:`DesktopRun.note`, so a crash leaves what happened until then. QGIS would save raster statistics as
``.aux.xml`` files beside the images it draws (in ``data/samples``): :func:`DesktopRun.start` turns that off.
"""

from __future__ import annotations

import json
import os
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qgis.core import QgsApplication, QgsProject
from qgis.PyQt.QtCore import QTimer
from qgis.utils import iface, loadPlugin, plugins, startPlugin

REPO = Path.cwd()  # the scripts run from the repository (QGIS runs them with exec: no __file__)
SAMPLES = REPO / "data" / "samples"
PLUGIN = "fastunet_geo"


class DesktopRun:
    """One scripted desktop session: its output folder, its JSON report and its steps."""

    def __init__(self, out: Path, report_name: str, **report: Any) -> None:
        self.out = out
        self.report_file = out / report_name
        self.report: dict[str, Any] = {"steps": [], **report}
        self.state: dict[str, Any] = {}

    def save(self) -> None:
        """Write the report."""
        self.report_file.write_text(json.dumps(self.report, indent=1))

    def note(self, text: str) -> None:
        """Record a step and write the report."""
        self.report["steps"].append(text)
        self.save()

    def later(self, ms: int, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the event loop after ``ms`` milliseconds; an error is reported and ends QGIS."""
        def guarded() -> None:
            try:
                fn()
            except Exception:
                self.report["error"] = traceback.format_exc()
                self.note("error")
                QgsApplication.exit(3)

        QTimer.singleShot(ms, guarded)

    def start(self, first: Callable[[], None], ms: int = 1000) -> None:
        """Make the output folder, keep QGIS from writing ``.aux.xml`` files, and run ``first`` after ``ms`` ms."""
        os.environ["GDAL_PAM_ENABLED"] = "NO"  # GDAL reads it when a dataset is opened or closed
        self.out.mkdir(parents=True, exist_ok=True)
        self.later(ms, first)

    def quit(self) -> None:
        """Quit QGIS as a user does (File > Exit), without the questions about layers and the project."""
        QgsProject.instance().removeAllMapLayers()  # else QGIS asks about the temporary layers (checkMemoryLayers)
        QgsProject.instance().setDirty(False)  # no "save the project?" question
        iface.actionExit().trigger()  # QApplication.quit would skip QGIS's own shutdown order


def open_plugin_dock(width: int = 1600, height: int = 1000) -> Any:
    """Size the main window, load and start the plugin, and return its dock (shown)."""
    iface.mainWindow().resize(width, height)
    assert loadPlugin(PLUGIN) and startPlugin(PLUGIN), "the plugin did not load"
    return plugins[PLUGIN].show_dock(True)


def plugin_module(name: str) -> Any:
    """Return a module of the installed plugin (loaded by QGIS from the plugin folder, not the repository)."""
    import sys

    return sys.modules[f"{PLUGIN}.{name}"]
