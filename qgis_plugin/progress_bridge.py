"""Bridge the core's progress protocol (start/advance/is_cancelled/message) to QGIS's percent-based ones.

A :class:`ProgressSink` is what QGIS offers: a QgsTask (``setProgress``/``isCanceled``) or a Processing
feedback (``setProgress``/``isCanceled``/``pushInfo``). A run has several stages (crop, predict, vectorise;
or the epochs of training), each mapped onto its own part of 0..100 %.
"""

from __future__ import annotations

from typing import Protocol


class ProgressSink(Protocol):
    """Where progress goes: a percentage, a cancel flag and a log."""

    def set_percent(self, percent: float) -> None:
        """Show overall progress, 0..100."""

    def is_cancelled(self) -> bool:
        """Return True when the user asked to stop."""
        return False

    def log(self, text: str) -> None:
        """Show one line of information."""


class QuietSink:
    """A sink for short engine calls with nothing to show (a metadata read, the GPU check): never cancelled."""

    def set_percent(self, percent: float) -> None:
        """Ignore progress."""

    def is_cancelled(self) -> bool:
        """Never cancelled."""
        return False

    def log(self, text: str) -> None:
        """Ignore log lines."""


class StageProgress:
    """A core ``Progress`` whose work fills ``lo``..``hi`` % of the sink's bar."""

    def __init__(self, sink: ProgressSink, lo: float, hi: float) -> None:
        self.sink, self.lo, self.hi = sink, lo, hi
        self.total = 0.0
        self.done = 0.0

    def start(self, total: float, label: str) -> None:
        """Begin this stage (``total`` units of ``label``)."""
        self.total, self.done = float(total), 0.0
        self.sink.set_percent(self.lo)

    def advance(self, n: float = 1) -> None:
        """Report ``n`` more units done."""
        self.done += n
        share = min(self.done / self.total, 1.0) if self.total > 0 else 1.0
        self.sink.set_percent(self.lo + (self.hi - self.lo) * share)

    def is_cancelled(self) -> bool:
        """Ask the sink."""
        return self.sink.is_cancelled()

    def message(self, text: str) -> None:
        """Log a line."""
        self.sink.log(text)

    def status(self, text: str) -> None:
        """Drop it: the percentage shows the progress (the log would fill with one line per file or epoch)."""

    def device(self, text: str) -> None:
        """Log where the work runs."""
        self.sink.log(f"device: {text}")


class EpochProgress(StageProgress):
    """Progress of training: the core starts a new 0..n count every epoch; spread them over 0..100 %."""

    def __init__(self, sink: ProgressSink, epochs: int) -> None:
        super().__init__(sink, 0.0, 100.0)
        self.epochs = max(epochs, 1)
        self.epoch = 0

    def start(self, total: float, label: str) -> None:
        """Begin the next epoch."""
        self.epoch = min(self.epoch + 1, self.epochs)
        self.lo = 100.0 * (self.epoch - 1) / self.epochs
        self.hi = 100.0 * self.epoch / self.epochs
        super().start(total, label)
