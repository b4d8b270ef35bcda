"""The engine process: ``python -m <plugin package>.engine_child`` (see :mod:`.engine_session`).

Serves engine calls one after another until stdin closes or says ``exit``. Each request is one JSON line on
stdin, ``{"id": n, "kind": ..., "payload": {...}}``; progress, log lines and the result (or the error) go back
as JSON lines on stdout, each with the request's id. ``{"cancel": n}`` makes the core stop call ``n`` before
its next batch (it then removes what it wrote). When stdin closes (QGIS went away, or the dock was closed)
the running call is cancelled the same way and the process ends after it: it never outlives QGIS.

Models stay loaded between calls (:mod:`.engine_cache`). The protocol has a private copy of the original
stdout; file descriptor 1 is pointed at stderr, so whatever a library prints cannot break a protocol line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import sys
import threading
import traceback
from typing import IO, Any

from . import engine_cache
from .engine_calls import CALLS
from .engine_host import PREFIX

Request = dict[str, Any]


class Channel:
    """The protocol's output: whole JSON lines, written by one thread at a time."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        """Write one protocol line."""
        line = PREFIX + json.dumps(message) + "\n"
        with self._lock, contextlib.suppress(OSError, ValueError):  # the parent has gone: nothing to tell
            self.stream.write(line)
            self.stream.flush()


class PipeSink:
    """One call's progress sink: JSON lines with the call's id out, a cancel flag set by the stdin reader."""

    def __init__(self, channel: Channel, request_id: int) -> None:
        self.channel = channel
        self.id = request_id
        self.cancelled = threading.Event()
        self._last = -1.0

    def set_percent(self, percent: float) -> None:
        """Send progress (at most every 0.1 %)."""
        if abs(percent - self._last) >= 0.1 or percent >= 100:
            self._last = percent
            self.channel.send({"id": self.id, "percent": percent})

    def is_cancelled(self) -> bool:
        """Return True once the parent asked to stop."""
        return self.cancelled.is_set()

    def log(self, text: str) -> None:
        """Send a log line."""
        self.channel.send({"id": self.id, "log": text})


class Server:
    """Reads requests and cancels from stdin (a thread), runs the calls in order (the main thread)."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.requests: queue.Queue[Request | None] = queue.Queue()
        self._lock = threading.Lock()
        self._running: PipeSink | None = None
        self._stopping = False

    def read(self, stream: IO[str]) -> None:
        """Queue requests, pass cancels on; on ``exit`` or end of input, cancel everything and stop."""
        for line in stream:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if not isinstance(message, dict) or message.get("exit"):
                break
            if "cancel" in message:
                with self._lock:
                    if self._running is not None and self._running.id == message["cancel"]:
                        self._running.cancelled.set()
            elif "kind" in message:
                self.requests.put(message)
        with self._lock:
            self._stopping = True
            if self._running is not None:
                self._running.cancelled.set()
        self.requests.put(None)

    def serve(self) -> None:
        """Run the queued calls one after another until the reader says stop."""
        while (request := self.requests.get()) is not None:
            sink = PipeSink(self.channel, int(request.get("id", 0)))
            with self._lock:
                if self._stopping:
                    sink.cancelled.set()
                self._running = sink
            self.channel.send({"id": sink.id, "taken": True})  # the parent now knows this process took the call
            try:
                self.channel.send({"id": sink.id, "result": self.run(request, sink)})
            except BaseException as exc:  # every failure goes to the parent, which raises it again
                traceback.print_exc(file=sys.stderr)
                self.channel.send({"id": sink.id, "error": {"type": type(exc).__name__, "message": str(exc),
                                                            "name": getattr(exc, "name", None)}})
            finally:
                with self._lock:
                    self._running = None

    @staticmethod
    def run(request: Request, sink: PipeSink) -> dict[str, Any]:
        """Run one call (a call cancelled before it started raises CancelledError)."""
        if sink.is_cancelled():
            from fastunet_core.errors import CancelledError

            raise CancelledError("cancelled before the engine started")
        return CALLS[request["kind"]](request["payload"], sink)


def protocol_stream() -> IO[str]:
    """Return a private copy of stdout for the protocol, and send fd 1 (and ``sys.stdout``) to stderr."""
    stream = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    return stream


def main() -> int:
    """Serve calls until stdin ends; return the exit code."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    engine_cache.enable()
    server = Server(Channel(protocol_stream()))
    threading.Thread(target=server.read, args=(sys.stdin,), name="fastunet-engine-stdin", daemon=True).start()
    server.serve()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
