"""Which of the engine's Python packages are missing, and how to install them into QGIS's Python.

Checked with ``importlib.util.find_spec``, which finds a package without importing it, so the check is
instant and keeps torch out of QGIS's start-up.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass

# import name -> pip name, for segmentation (predict + vectorize)
SEGMENT_MODULES: dict[str, str] = {
    "numpy": "numpy",
    "torch": "torch",
    "safetensors": "safetensors",
    "rasterio": "rasterio",
    "shapely": "shapely",
    "pyogrio": "pyogrio",
    "pyproj": "pyproj",
}
# ... and for training
TRAIN_MODULES: dict[str, str] = {
    **SEGMENT_MODULES,
    "yaml": "PyYAML",
    "pydantic": "pydantic",  # the training configuration's checks
    "geopandas": "geopandas",
    "albumentations": "albumentations",
    "matplotlib": "matplotlib",  # the training curves
}


@dataclass(frozen=True)
class EngineStatus:
    """The engine packages that QGIS's Python lacks (empty when everything is there)."""

    missing: tuple[str, ...]  # pip names

    @property
    def ok(self) -> bool:
        """True when nothing is missing."""
        return not self.missing

    def message(self, in_dock: bool = False) -> str:
        """Say, in plain words, what is missing and how to install it (empty when nothing is)."""
        if self.ok:
            return ""
        return (f"The segmentation engine needs Python packages that QGIS's Python does not have: "
                f"{', '.join(self.missing)}. {install_hint(self.missing, in_dock=in_dock)}")


def check_engine(modules: dict[str, str] | None = None) -> EngineStatus:
    """Return which of ``modules`` (import name -> pip name; default: segmentation's) cannot be found."""
    from .engine_process import engine_python

    if engine_python() is not None and (modules is None or set(modules) <= set(SEGMENT_MODULES)):
        return EngineStatus(())  # the installed engine venv has them (checked when it was installed)
    # training builds its configuration in QGIS's process: it still needs its packages there
    wanted = SEGMENT_MODULES if modules is None else modules
    missing = tuple(pip for name, pip in wanted.items() if not _importable(name))
    return EngineStatus(missing)


README_SECTION = "Installing the engine"  # the README's heading that the manual steps live under, part "By hand"


def install_hint(packages: Sequence[str], platform: str | None = None, in_dock: bool = False) -> str:
    """Return how to install the engine: the dock's button, or by hand into a venv of its own (as the README says).

    ``in_dock``: the text shows in the dock, right above the button.
    """
    names = " ".join(packages)
    plat = platform or sys.platform
    venv = "profiles/default/python/fastunet_geo_engine"
    if plat.startswith("win"):
        first = ("in the OSGeo4W Shell, python -m venv --system-site-packages %APPDATA%\\QGIS\\QGIS3\\"
                 f"{venv.replace('/', chr(92))}, then its Scripts\\pip install 'numpy<2' {names}")
    elif plat == "darwin":
        first = ("/Applications/QGIS.app/Contents/MacOS/bin/python3 -m venv --system-site-packages "
                 f"~/Library/Application Support/QGIS/QGIS3/{venv}, then its bin/pip install 'numpy<2' {names}")
    else:  # Debian 12 / Ubuntu 23.04+ refuse pip into the system Python (externally-managed-environment)
        first = (f"python3 -m venv --system-site-packages ~/.local/share/QGIS/QGIS3/{venv}, then its bin/pip install "
                 f"'numpy<2' {names}; never pip into the system python3")
    press = "Press 'Install the engine' below" if in_dock else "Press 'Install the engine' in the fastunet-geo dock"
    return (f"{press} (a private Python environment in the QGIS profile, about 1 GB with the CPU build of torch), "
            f"or install by hand as the README's section '{README_SECTION}' shows under 'By hand' ({first}, and "
            "the marker file it names). "
            "For a GPU, install the CUDA build of torch (see pytorch.org). Then restart QGIS.")


def _importable(name: str) -> bool:
    if name in sys.modules:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a broken package (e.g. __spec__ is None) counts as missing
        return False
