"""The plugin object QGIS talks to: a toolbar button that opens the dock, and the Processing provider.

Only Qt/QGIS and the plugin's light modules are imported here; the dock (and with it the engine) is
created the first time the button is pressed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction

from . import VENDOR_DIR
from .algorithms.provider import FastUNetProvider

ICON = Path(__file__).resolve().parent / "icons" / "icon.svg"
MENU = "&fastunet-geo"


class FastUNetPlugin:
    """Toolbar button + dock in the QGIS window; the Processing provider everywhere (also qgis_process)."""

    def __init__(self, iface: Any) -> None:
        self.iface = iface
        self.provider: FastUNetProvider | None = None
        self.action: QAction | None = None
        self.dock: Any = None

    def initProcessing(self) -> None:
        """Register the Processing provider (QGIS calls this alone under qgis_process)."""
        if self.provider is None:
            from .install_task import activate_installed_engine

            activate_installed_engine()  # Processing runs under the engine venv too, once installed
            self.provider = FastUNetProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:
        """Add the toolbar button and menu entry; register the provider."""
        self.initProcessing()
        self.action = QAction(QIcon(str(ICON)), "fastunet-geo segmentation", self.iface.mainWindow())
        self.action.setObjectName("fastunetGeoSegment")
        self.action.setToolTip("Segment a raster with a fastunet-geo model")
        self.action.setCheckable(True)
        self.action.toggled.connect(self.show_dock)
        self.iface.addToolBarIcon(self.action)
        self.iface.addPluginToRasterMenu(MENU, self.action)

    def show_dock(self, visible: bool = True) -> Any:
        """Show (creating it on first use) or hide the dock; return it."""
        if self.dock is None:
            if not visible:
                return None
            from .dock import SegmentDock

            self.dock = SegmentDock(self.iface, self.iface.mainWindow())
            self.iface.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.dock)
            if self.action is not None:
                self.dock.visibilityChanged.connect(self.action.setChecked)
        self.dock.setUserVisible(visible)
        return self.dock

    def unload(self) -> None:
        """Remove everything the plugin added to QGIS."""
        if self.dock is not None:
            self.dock.shutdown()
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
        if self.action is not None:
            self.iface.removeToolBarIcon(self.action)
            self.iface.removePluginRasterMenu(MENU, self.action)
            self.action.deleteLater()
            self.action = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
        if str(VENDOR_DIR) in sys.path:
            sys.path.remove(str(VENDOR_DIR))
