"""Helpers for tests that stop runs: a counting, cancelling progress, and child processes' signals."""

from __future__ import annotations

import signal
from pathlib import Path

from fastunet_core.runtime.progress import NullProgress


class CountingCancel(NullProgress):
    """Progress that counts the tiles run, keeps the messages, and cancels after ``limit`` tiles (None: never)."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit, self.done = limit, 0
        self.messages: list[str] = []

    def start(self, total: float, label: str) -> None:
        self.total = total

    def advance(self, n: float = 1) -> None:
        self.done += int(n)

    def is_cancelled(self) -> bool:
        return self.limit is not None and self.done >= self.limit

    def message(self, text: str) -> None:
        self.messages.append(text)


def default_signals() -> None:
    """Give a child a terminal's signal dispositions (a background job inherits SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def children(pid: int) -> list[int]:
    """Return the process ids of ``pid``'s children (none once it is gone)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
