"""fastunet-geo QGIS plugin: a toolbar button and dock for segmentation, and a Processing provider.

QGIS calls :func:`classFactory` at start-up. Nothing heavy is imported here or in ``initGui``: the engine
(torch, rasterio ...) is imported only when a model is read or a run starts, so QGIS starts as fast with the
plugin as without it, and a QGIS without the engine's packages still loads the plugin and says what to install.

The packaged plugin (``scripts/package_plugin.py``) carries a copy of ``fastunet_core`` in ``_vendor/``;
:func:`use_vendored_core` puts it first on ``sys.path`` so that the plugin runs with the core it was built with.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .plugin import FastUNetPlugin

VENDOR_DIR = Path(__file__).resolve().parent / "_vendor"


def use_vendored_core() -> None:
    """Put the bundled copy of ``fastunet_core`` (if this is the packaged plugin) first on ``sys.path``."""
    if VENDOR_DIR.is_dir() and str(VENDOR_DIR) not in sys.path:
        sys.path.insert(0, str(VENDOR_DIR))


def classFactory(iface: Any) -> FastUNetPlugin:
    """Return the plugin instance; ``iface`` is None under ``qgis_process``."""
    use_vendored_core()
    from .plugin import FastUNetPlugin

    return FastUNetPlugin(iface)
