"""The one-click engine installer as a QgsTask, its package-source settings, and switching to an installed engine.

The plan and the commands are :mod:`.installer`'s (no Qt there); this module adds what QGIS needs: the
profile folder, the settings (``fastunet_geo/pip_index_url``, ``pip_find_links``, ``pip_offline``,
``torch_index_url``, ``torch_requirement`` in QGIS's settings), and a task with progress, Cancel and a log.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path

from qgis.core import Qgis, QgsApplication, QgsMessageLog, QgsSettings, QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from .engine_process import set_engine_python
from .installer import (
    TORCH_CPU_INDEX,
    InstallPlan,
    PackageSource,
    engine_venv,
    installed_engine_python,
    plan_install,
    run_plan,
)

LOG_TAG = "fastunet-geo"
SETTINGS = "fastunet_geo"


def profile_folder() -> Path:
    """Return the active QGIS profile's folder."""
    return Path(QgsApplication.qgisSettingsDirPath())


def activate_installed_engine() -> Path | None:
    """Run the engine under the profile's engine venv if one was installed; return its Python."""
    python = installed_engine_python(profile_folder())
    if python is not None:
        set_engine_python(python)
    return python


def package_source() -> PackageSource:
    """Read where pip takes packages from (QGIS settings; defaults: PyPI, torch's CPU build from PyTorch)."""
    s = QgsSettings()
    links = str(s.value(f"{SETTINGS}/pip_find_links", "") or "")
    return PackageSource(
        index_url=str(s.value(f"{SETTINGS}/pip_index_url", "") or ""),
        find_links=tuple(p.strip() for p in links.split(";") if p.strip()),
        offline=str(s.value(f"{SETTINGS}/pip_offline", "false")).lower() in ("true", "1"),
        torch_index_url=str(s.value(f"{SETTINGS}/torch_index_url", TORCH_CPU_INDEX)),
        torch_requirement=str(s.value(f"{SETTINGS}/torch_requirement", "") or ""))  # "": requirements/engine.txt


class InstallTask(QgsTask):
    """Make the engine venv and install the engine's packages (worker thread); report on the main thread."""

    line = pyqtSignal(str)  # pip's output, line by line (queued to the dock's log)

    def __init__(self, plan: InstallPlan, on_done: Callable[[InstallTask], None] | None = None) -> None:
        super().__init__("fastunet-geo: installing the engine",
                         QgsTask.Flag.CanCancel | QgsTask.Flag.Silent)  # the dock says how it ended
        self.plan = plan
        self.on_done = on_done
        self.python: Path | None = None
        self.error: str | None = None
        self.was_cancelled = False

    def _line(self, text: str) -> None:
        QgsMessageLog.logMessage(text, LOG_TAG, Qgis.MessageLevel.Info)
        self.line.emit(text)

    def run(self) -> bool:
        """Run the plan (worker thread)."""
        from fastunet_core.errors import CancelledError, FastUNetError

        try:
            self.python = run_plan(self.plan, self._line, self.isCanceled, self.setProgress)
            return True
        except CancelledError:
            self.was_cancelled = True
        except FastUNetError as exc:
            self.error = str(exc)
        except Exception as exc:  # the task boundary: the user must see it
            self.error = f"unexpected error: {type(exc).__name__}: {exc}"
            QgsMessageLog.logMessage(traceback.format_exc(), LOG_TAG, Qgis.MessageLevel.Critical)
        return False

    def finished(self, result: bool) -> None:
        """Switch to the new engine, describe the outcome, call back (main thread)."""
        if not result and self.isCanceled():
            self.was_cancelled = True
        if result and self.python is not None:
            set_engine_python(self.python)
            self.setDescription(f"fastunet-geo: engine installed in {self.plan.venv}")
        elif self.was_cancelled:
            self.setDescription("fastunet-geo: engine installation cancelled; nothing was kept")
        else:
            self.setDescription(f"fastunet-geo: engine installation failed: {self.error}")
        if self.on_done is not None:
            self.on_done(self)


def install_plan(source: PackageSource | None = None) -> InstallPlan:
    """Return the plan for this profile, from the settings unless a source is given."""
    smp = str(QgsSettings().value(f"{SETTINGS}/smp_models", "true")).lower() in ("true", "1")
    return plan_install(engine_venv(profile_folder()), source or package_source(), smp_models=smp)
