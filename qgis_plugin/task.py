"""The dock's segmentation as a QgsTask: the run on a worker thread, the results on the main thread.

``run()`` (worker thread) never touches the GUI or the project: it exports a web layer if needed and runs
the job (:func:`~.engine_process.run_segment`: here, or in an engine process inside the QGIS executables),
reporting progress per tile through ``setProgress`` and checking
``isCanceled()`` before every batch. ``finished()`` (main thread) hands the task to a callback that adds
the layers and reports to the user. Errors are kept as plain sentences in :attr:`SegmentTask.error`.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

from qgis.core import Qgis, QgsFeedback, QgsMessageLog, QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from fastunet_core.hints import counted

from .deps import engine_import_error
from .engine_process import run_segment
from .engine_session import EngineSession
from .jobs import SegmentJob, SegmentOutcome
from .qgis_inputs import ExportPlan, exported_input

LOG_TAG = "fastunet-geo"


class SegmentTask(QgsTask):
    """Segment (and vectorise) one raster in the background."""

    logged = pyqtSignal(str)  # a line for the dock's log; emitted on the worker thread, delivered queued

    def __init__(self, job: SegmentJob, export: ExportPlan | None, name: str,
                 on_done: Callable[[SegmentTask], None] | None = None, session: EngineSession | None = None) -> None:
        super().__init__(f"fastunet-geo: segmenting {name}",
                         QgsTask.Flag.CanCancel | QgsTask.Flag.Silent)  # the dock says how it ended
        self.name = name  # of the source layer; the result layers are named after it
        self.job = job
        self.export = export
        self.on_done = on_done
        self.session = session  # the dock's engine process (kept between runs); None: one for this run
        self.outcome: SegmentOutcome | None = None
        self.error: str | None = None
        self.was_cancelled = False
        self.project_closed = False  # set by the dock when the project the run started in is closed
        self.chosen: tuple[Any, Any] = (None, None)  # the dock's Raster and Area polygons layers at the start
        self._feedback = QgsFeedback()  # lets a cancel stop a web layer's export too

    def result_sentence(self) -> str:
        """Say in one sentence how the run ended."""
        out = self.outcome
        if out is not None:
            polygons = f", {counted(out.features, 'polygon')}" if out.polygons is not None else ""
            return f"segmented {self.name} ({counted(out.tiles, 'tile')}{polygons}, {out.seconds:.0f} s)"
        if self.was_cancelled:
            return f"segmentation of {self.name} cancelled; nothing was written"
        return f"segmentation of {self.name} failed: {self.error or 'unknown error'}"

    # -- the ProgressSink the core's progress is bridged to (worker thread) --
    def set_percent(self, percent: float) -> None:
        """Report overall progress."""
        self.setProgress(percent)

    def is_cancelled(self) -> bool:
        """Return True once the user cancelled."""
        return self.isCanceled()

    def log(self, text: str) -> None:
        """Send a line to the dock (and QGIS's log)."""
        QgsMessageLog.logMessage(text, LOG_TAG, Qgis.MessageLevel.Info)
        self.logged.emit(text)

    def cancel(self) -> None:
        """Cancel: the core stops before its next batch; an export stops at its next block."""
        self._feedback.cancel()
        super().cancel()

    def run(self) -> bool:
        """Run the job (worker thread); return True on success."""
        from fastunet_core.errors import CancelledError, FastUNetError

        try:
            if self.export is not None:
                self.log(f"the layer is not a file: writing {self.export.describe()} to a temporary GeoTIFF")
            with exported_input(self.job, self.export, self._feedback) as job:
                self.outcome = run_segment(job, self, self.session)
            return True
        except CancelledError:
            self.was_cancelled = True
        except FastUNetError as exc:
            self.error = str(exc)
        except ImportError as exc:
            self.error = engine_import_error(exc)
        except Exception as exc:  # the task boundary: an error must reach the user, not vanish in a thread
            self.error = f"unexpected error: {type(exc).__name__}: {exc} (details in the log panel, {LOG_TAG})"
            QgsMessageLog.logMessage(traceback.format_exc(), LOG_TAG, Qgis.MessageLevel.Critical)
        return False

    def finished(self, result: bool) -> None:
        """Say how it ended in the task's description, then hand over to the callback (main thread).

        The task is Silent: QGIS's own "Task complete" / "Task failed" announcement (a desktop notification,
        or a second line in the message bar where the desktop has none) would repeat the dock's message.
        """
        if not result and self.isCanceled():
            self.was_cancelled = True
        self.setDescription(f"fastunet-geo: {self.result_sentence()}")
        if self.on_done is not None:
            self.on_done(self)
