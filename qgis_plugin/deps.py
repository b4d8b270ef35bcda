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

    def message(self) -> str:
        """Say, in plain words, what is missing and how to install it (empty when nothing is)."""
        if self.ok:
            return ""
        return (f"The segmentation engine needs Python packages that QGIS's Python does not have: "
                f"{', '.join(self.missing)}. {install_hint(self.missing)}")


def check_engine(modules: dict[str, str] | None = None) -> EngineStatus:
    """Return which of ``modules`` (import name -> pip name; default: segmentation's) cannot be found."""
    from .engine_process import engine_python

    if engine_python() is not None and (modules is None or set(modules) <= set(SEGMENT_MODULES)):
        return EngineStatus(())  # the installed engine venv has them (checked when it was installed)
    # training builds its configuration in QGIS's process: it still needs its packages there
    wanted = SEGMENT_MODULES if modules is None else modules
    missing = tuple(pip for name, pip in wanted.items() if not _importable(name))
    return EngineStatus(missing)


def install_hint(packages: Sequence[str], platform: str | None = None) -> str:
    """Return how to pip-install ``packages`` into the Python that QGIS runs, for this platform."""
    names = " ".join(packages)
    plat = platform or sys.platform
    if plat.startswith("win"):
        where = f"open the OSGeo4W Shell (Start menu, QGIS folder) and run: python -m pip install {names}"
    elif plat == "darwin":
        where = f"run in a terminal: /Applications/QGIS.app/Contents/MacOS/bin/python3 -m pip install {names}"
    else:  # Debian 12 / Ubuntu 23.04+ refuse pip into the system Python (externally-managed-environment)
        where = ("make a venv that sees QGIS's packages and install there, as the README's 'Installing the engine "
                 "by hand' shows (python3 -m venv --system-site-packages ...; pip install 'numpy<2' "
                 f"{names}); never pip into the system python3")
    return ("Press 'Install the engine' in the fastunet-geo dock (a private Python environment in the QGIS "
            f"profile, about 1 GB with the CPU build of torch), or by hand: {where}. For a GPU, install "
            "the CUDA build of torch (see pytorch.org). Then restart QGIS.")


def _importable(name: str) -> bool:
    if name in sys.modules:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a broken package (e.g. __spec__ is None) counts as missing
        return False
