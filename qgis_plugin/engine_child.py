"""The engine process: ``python -m <plugin package>.engine_child`` (see :mod:`.engine_process`).

Reads one JSON request line from stdin, runs the engine call, and writes progress, log lines and the
result (or the error) as JSON lines on stdout; a ``cancel`` line on stdin (or stdin closing, when QGIS
goes away) makes the core stop before its next batch.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import traceback
from typing import Any

from .engine_calls import CALLS
from .engine_process import PREFIX


class PipeSink:
    """The child's progress sink: JSON lines out, a cancel flag set by a thread reading stdin."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self._last = -1.0

    def watch_stdin(self) -> None:
        """Set the cancel flag on a ``cancel`` line or when stdin closes."""
        for line in sys.stdin:
            if line.strip() == "cancel":
                break
        self.cancelled.set()

    def set_percent(self, percent: float) -> None:
        """Send progress (at most every 0.1 %)."""
        if abs(percent - self._last) >= 0.1 or percent >= 100:
            self._last = percent
            send({"percent": percent})

    def is_cancelled(self) -> bool:
        """Return True once the parent asked to stop."""
        return self.cancelled.is_set()

    def log(self, text: str) -> None:
        """Send a log line."""
        send({"log": text})


def send(message: dict[str, Any]) -> None:
    """Write one protocol line."""
    sys.stdout.write(PREFIX + json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> int:
    """Serve one request; return the exit code."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    request = json.loads(sys.stdin.readline())
    sink = PipeSink()
    threading.Thread(target=sink.watch_stdin, daemon=True).start()
    try:
        result = CALLS[request["kind"]](request["payload"], sink)
    except BaseException as exc:  # report every failure to the parent, which raises it again
        traceback.print_exc(file=sys.stderr)
        send({"error": {"type": type(exc).__name__, "message": str(exc), "name": getattr(exc, "name", None)}})
        return 1
    send({"result": result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
