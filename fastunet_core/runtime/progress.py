"""A small progress-and-cancel interface shared by the CLI (tqdm), QGIS tasks and Processing feedback."""

from __future__ import annotations

from typing import Protocol

STATUS_PREFIX = "status: "  # a message starting with this is shown beside the progress bar (file, loss...)


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
        """Show one line of information (device used, warnings...)."""


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
