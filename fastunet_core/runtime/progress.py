"""A small progress-and-cancel interface shared by the CLI (tqdm), QGIS tasks and Processing feedback."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """What a long-running core function reports to, and asks whether it should stop."""

    def start(self, total: float, label: str) -> None:
        """Announce ``total`` units of work."""

    def advance(self, n: float = 1) -> None:
        """Report ``n`` more units done."""

    def is_cancelled(self) -> bool:
        """Return True when the user asked to stop."""
        return False

    def message(self, text: str) -> None:
        """Show one line of information for the log (what was left out, warnings ...)."""

    def status(self, text: str) -> None:
        """Show what is being worked on right now (the current file, the epoch's loss): transient, beside a bar."""

    def device(self, text: str) -> None:
        """Say once where the work runs and why (e.g. ``cpu (no CUDA: ...); engine: onnxruntime``)."""


class NullProgress:
    """Progress that shows nothing and never cancels."""

    def start(self, total: float, label: str) -> None:
        """Ignore."""

    def advance(self, n: float = 1) -> None:
        """Ignore."""

    def is_cancelled(self) -> bool:
        """Never cancel."""
        return False

    def message(self, text: str) -> None:
        """Ignore."""

    def status(self, text: str) -> None:
        """Ignore."""

    def device(self, text: str) -> None:
        """Ignore."""
