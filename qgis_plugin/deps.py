"""Which of the engine's Python packages are missing, and how to install them into QGIS's Python.

Checked with ``importlib.util.find_spec``, which finds a package without importing it, so the check is
instant and keeps torch out of QGIS's start-up.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .engine_modules import SEGMENT_MODULES, SMP_MODULES, TRAIN_MODULES

__all__ = ["INSTALL_BUTTON", "README_SECTION", "REPAIR_BUTTON", "SEGMENT_MODULES", "SMP_MODULES", "TRAIN_MODULES",
           "EngineStatus", "check_engine", "engine_import_error", "install_hint", "train_tab_hint"]


@dataclass(frozen=True)
class EngineStatus:
    """The engine packages that QGIS's Python or the installed engine lacks (empty when everything is there)."""

    missing: tuple[str, ...]  # pip names segmentation cannot run without
    lacking: tuple[str, ...] = ()  # pip names the installed engine venv lacks (an earlier plugin's list): Repair

    @property
    def ok(self) -> bool:
        """True when segmentation's packages are there (``lacking`` may still name others: Repair adds them)."""
        return not self.missing

    def message(self, in_dock: bool = False) -> str:
        """Say, in plain words, what is missing and how to install it (empty when nothing is)."""
        if self.lacking:  # the engine's own venv: the button repairs it (it reads REPAIR_BUTTON then)
            where = ("below" if self.missing else "in the Engine group below") if in_dock else \
                "in the fastunet-geo dock"
            effect = "segmentation cannot run" if self.missing else "models that need them cannot run"
            return (f"The installed engine lacks {', '.join(self.lacking)}, which this version of the plugin uses "
                    f"({effect}): press '{REPAIR_BUTTON}' {where} to add them.")
        if self.ok:
            return ""
        return (f"The segmentation engine needs Python packages that QGIS's Python does not have: "
                f"{', '.join(self.missing)}. {install_hint(self.missing, in_dock=in_dock)}")


def check_engine(modules: dict[str, str] | None = None) -> EngineStatus:
    """Return which of ``modules`` (import name -> pip name; default: segmentation's) cannot be found.

    With the installed engine (the venv the dock's button makes), what that venv lacks of the plugin's
    list (``requirements/engine.txt``): an engine installed by an earlier version of the plugin.
    """
    from .engine_process import engine_python
    from .installer import MARKER, engine_lacks

    python = engine_python()
    if python is not None:
        venv = Path(python).parent.parent
        if not (venv / MARKER).is_file():  # FASTUNET_GEO_PYTHON: a Python the user chose and keeps up themselves
            return EngineStatus(())
        lacking = engine_lacks(venv)
        needed = {_pip_name(pip) for pip in (modules or SEGMENT_MODULES).values()}
        return EngineStatus(tuple(n for n in lacking if n in needed), lacking)
    wanted = SEGMENT_MODULES if modules is None else modules
    missing = tuple(pip for name, pip in wanted.items() if not _importable(name))
    return EngineStatus(missing)


INSTALL_BUTTON = "Install the engine"  # the dock's button while segmentation's packages are missing (on top) ...
REPAIR_BUTTON = "Repair / reinstall the engine"  # ... and once they are there (in the Engine group)
README_SECTION = "Installing the engine"  # the README's heading that the manual steps live under, part "By hand"


def install_hint(packages: Sequence[str], platform: str | None = None, in_dock: bool = False,
                 button_at: str = "below", button: str = INSTALL_BUTTON) -> str:
    """Return how to install the engine: the dock's button, or by hand into a venv of its own (as the README says).

    ``in_dock``: the text shows in the dock, where ``button`` is ``button_at`` ("below": right under the text);
    it is short there (the button does the work), with the real folder of this QGIS profile. Elsewhere (Processing,
    messages) the manual steps are named too.
    """
    names = " ".join(packages)
    plat = platform or sys.platform
    venv = _engine_folder()
    press = f"Press '{button}' {button_at}" if in_dock else f"Press '{INSTALL_BUTTON}' in the fastunet-geo dock"
    where = f"a private Python environment in {venv}" if venv else "a private Python environment in the QGIS profile"
    if in_dock:
        return (f"{press}: it makes {where}, about 1 GB with the CPU build of torch. To install by hand instead, "
                f"see the README's section '{README_SECTION}'.")
    default = "profiles/default/python/fastunet_geo_engine"
    if plat.startswith("win"):
        folder = venv or f"%APPDATA%\\QGIS\\QGIS3\\{default.replace('/', chr(92))}"
        first = (f"in the OSGeo4W Shell, python -m venv --system-site-packages {folder}, then its Scripts\\pip "
                 f"install 'numpy<2' {names}")
    elif plat == "darwin":
        folder = venv or f"~/Library/Application Support/QGIS/QGIS3/{default}"
        first = (f"/Applications/QGIS.app/Contents/MacOS/bin/python3 -m venv --system-site-packages {folder}, then "
                 f"its bin/pip install 'numpy<2' {names}")
    else:  # Debian 12 / Ubuntu 23.04+ refuse pip into the system Python (externally-managed-environment)
        folder = venv or f"~/.local/share/QGIS/QGIS3/{default}"
        first = (f"python3 -m venv --system-site-packages {folder}, then its bin/pip install 'numpy<2' {names}; "
                 "never pip into the system python3")
    return (f"{press} ({where}, about 1 GB with the CPU build of torch), "
            f"or install by hand as the README's section '{README_SECTION}' shows under 'By hand' ({first}, and "
            "the marker file it names). Then restart QGIS.")


def _engine_folder() -> str:
    """Return the engine venv's folder in the active QGIS profile ("" outside QGIS)."""
    try:
        from qgis.core import QgsApplication

        from .installer import engine_venv

        folder = QgsApplication.qgisSettingsDirPath()
    except ImportError:
        return ""
    return str(engine_venv(folder)) if folder else ""


def train_tab_hint(packages: Sequence[str]) -> str:
    """Return :func:`install_hint` for the Train tab: the dock's button is on the Segment tab, named as it is there.

    With segmentation's packages present the button reads 'Repair / reinstall the engine' and sits in the
    Engine group; it installs the engine venv, which has training's packages too.
    """
    if check_engine().ok:
        return install_hint(packages, in_dock=True, button=REPAIR_BUTTON,
                            button_at="in the Segment tab's Engine group (it installs training's packages too)")
    return install_hint(packages, in_dock=True, button_at="at the top of the Segment tab")


def engine_import_error(exc: ImportError) -> str:
    """Say which package a segmentation lacked and how to add it: Repair for the installed engine, else install."""
    from .engine_process import engine_python

    name = (exc.name or "").split(".")[0]
    package = {**TRAIN_MODULES, **SMP_MODULES}.get(name, name or "the missing package")
    if engine_python() is not None:
        return (f"the engine lacks the package {package} ({exc}): press '{REPAIR_BUTTON}' in the Engine group "
                "below to add it, then run again")
    return f"the segmentation engine could not be loaded ({exc}). {install_hint([package])}"


def _importable(name: str) -> bool:
    if name in sys.modules:
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a broken package (e.g. __spec__ is None) counts as missing
        return False


def _pip_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
