"""The Train tab's training as a QgsTask: the engine trains (out of process inside QGIS), the tab shows curves.

``run()`` (worker thread) hands the plan to the engine's ``train`` call (:func:`~.engine_process.run_engine`,
the same call the Processing algorithm makes) and relays its progress. The core writes the run's history
file as each epoch ends; the task looks at it whenever the engine reports and emits :attr:`TrainTask.epochs`
with every finished epoch, so the tab draws the curves as the run goes. Cancel stops the engine before its
next optimiser step: the finished epochs stay in the run folder (Train again resumes) and no model file is
written. Errors are kept as plain sentences in :attr:`TrainTask.error`.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qgis.core import Qgis, QgsMessageLog, QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from .deps import REPAIR_BUTTON, TRAIN_MODULES, train_tab_hint
from .engine_session import EngineSession
from .train_plan import TrainPlan

LOG_TAG = "fastunet-geo"
CURVE_KEYS = ("epoch", "train_loss", "val_loss", "val_miou")  # what the curves show of each history record


@dataclass(frozen=True)
class TrainOutcome:
    """What a finished training wrote."""

    model: Path
    run_folder: Path
    epochs: int  # epochs in the run's history (a resumed run counts the earlier ones)
    best_epoch: int
    val_miou: float | None  # of the best epoch
    device: str
    stopped_early: bool
    seconds: float

    @classmethod
    def from_result(cls, result: dict[str, Any], seconds: float) -> TrainOutcome:
        """Build from the engine's ``train`` answer."""
        miou = result.get("val_miou")
        return cls(Path(result["model"]), Path(result["output_dir"]), int(result["epochs"]),
                   int(result["best_epoch"]), float(miou) if miou is not None else None, str(result["device"]),
                   bool(result["stopped_early"]), seconds)


def read_history(path: Path) -> list[dict[str, float]]:
    """Return the curves' figures of each epoch in a run's history file (empty if it is missing or unreadable)."""
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
        return [{key: float(r[key]) for key in CURVE_KEYS} for r in records]
    except (OSError, ValueError, KeyError, TypeError):
        return []


class TrainTask(QgsTask):
    """Train a model in the background."""

    logged = pyqtSignal(str)  # a line for the tab's log (emitted on the worker thread, delivered queued)
    epochs = pyqtSignal(list)  # every finished epoch's figures (see read_history), each time one more is saved

    def __init__(self, plan: TrainPlan, on_done: Callable[[TrainTask], None] | None = None) -> None:
        super().__init__(f"fastunet-geo: training on {plan.name}",
                         QgsTask.Flag.CanCancel | QgsTask.Flag.Silent)  # the dock says how it ended
        self.plan = plan
        self.on_done = on_done
        # the engine process of this run (in the QGIS executables): the tab shuts it down when QGIS quits or the
        # plugin unloads, and waits for it to end its step (the finished epochs stay saved)
        self.session = EngineSession(kept=False)
        self.outcome: TrainOutcome | None = None
        self.error: str | None = None
        self.was_cancelled = False
        self.epochs_seen = 0  # epochs in the last history sent to the tab
        self.epochs_kept = 0  # after a cancel: the finished epochs saved in the run folder
        self._stale = _stamp(plan.history) if plan.fresh else None  # an old run's history, until overwritten
        self._sent: tuple[int, int] | None = None
        self._started = False  # training steps have begun: the run folder's history belongs to this run

    def result_sentence(self) -> str:
        """Say in one sentence how the run ended."""
        out = self.outcome
        if out is not None:
            miou = f", validation mIoU {out.val_miou:.3f}" if out.val_miou is not None else ""
            return (f"trained {self.plan.config['model']['architecture']} on {self.plan.name}: {out.epochs} "
                    f"epoch{'s' if out.epochs != 1 else ''}, best epoch {out.best_epoch}{miou}; model saved as "
                    f"{out.model.name}")
        if self.was_cancelled:
            if self.epochs_kept:
                kept = "epoch 1 is" if self.epochs_kept == 1 else f"epochs 1-{self.epochs_kept} are"
                return (f"training cancelled; {kept} kept in {self.plan.run_folder} and Train resumes from there; "
                        "no model file was written")
            return "training cancelled before the first epoch ended; no model file was written"
        return f"training on {self.plan.name} failed: {self.error or 'unknown error'}"

    # -- the ProgressSink the engine reports to (worker thread) --
    def set_percent(self, percent: float) -> None:
        """Report overall progress; look for a newly finished epoch."""
        self.setProgress(percent)
        if percent > 0:
            self._started = True
        self._check_history()

    def is_cancelled(self) -> bool:
        """Return True once the user cancelled."""
        return self.isCanceled()

    def log(self, text: str) -> None:
        """Send a line to the tab (and QGIS's log); look for a newly finished epoch."""
        QgsMessageLog.logMessage(text, LOG_TAG, Qgis.MessageLevel.Info)
        self.logged.emit(text)
        self._check_history()

    def _check_history(self) -> None:
        """Emit the history when the core has saved another epoch (the file is replaced whole, never half-written)."""
        stamp = _stamp(self.plan.history)
        if stamp is None or stamp == self._sent:
            return
        if stamp == self._stale or (not self.plan.fresh and not self._started):
            return  # a former run's file (start over), or a resumed run whose settings are not yet checked
        records = read_history(self.plan.history)
        if records:
            self._sent = stamp
            self.epochs_seen = len(records)
            self.epochs.emit(records)

    def run(self) -> bool:
        """Train (worker thread); return True on success."""
        from fastunet_core.errors import CancelledError, FastUNetError

        from .engine_process import run_engine

        t0 = time.perf_counter()
        try:
            result = run_engine("train", self.plan.payload(), self, self.session)
            self._check_history()  # the last epoch, saved after the engine's last progress report
            self.outcome = TrainOutcome.from_result(result, time.perf_counter() - t0)
            return True
        except CancelledError:
            self.was_cancelled = True
            self._check_history()
            if _stamp(self.plan.history) not in (None, self._stale):  # a resumed run's earlier epochs count too
                self.epochs_kept = len(read_history(self.plan.history))
        except FastUNetError as exc:
            self.error = str(exc)
        except ImportError as exc:
            self.error = missing_package_sentence(exc)
        except Exception as exc:  # the task boundary: an error must reach the user, not vanish in a thread
            self.error = f"unexpected error: {type(exc).__name__}: {exc} (details in the log panel, {LOG_TAG})"
            QgsMessageLog.logMessage(traceback.format_exc(), LOG_TAG, Qgis.MessageLevel.Critical)
        return False

    def finished(self, result: bool) -> None:
        """Put the plugin's sentence in the task's description, then hand over to the callback (main thread)."""
        if not result and self.isCanceled():
            self.was_cancelled = True
        self.setDescription(f"fastunet-geo: {self.result_sentence()}")
        if self.on_done is not None:
            self.on_done(self)


def missing_package_sentence(exc: ImportError) -> str:
    """Say which package training lacks and where to install it (the engine venv, or QGIS's Python)."""
    from .engine_process import engine_python

    package = TRAIN_MODULES.get(exc.name or "", exc.name or "the missing package")
    python = engine_python()
    if python is not None:  # an engine of its own: installed before its installer took training's packages
        return (f"training needs the package {package}, which the engine's Python ({python}) lacks: press "
                f"'{REPAIR_BUTTON}' in the Segment tab's Engine group (it installs training's packages too), or "
                f"install it there by hand ({python} -m pip install {package}), and train again")
    return f"the training engine could not be loaded ({exc}). {train_tab_hint([package])}"


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size
