"""One engine process that serves calls one after another: the dock keeps it (and its loaded model) between runs.

Starting an engine process costs seconds (Python, rasterio, torch or ONNX Runtime, the model); the dock's
:class:`EngineSession` starts one on its first call and sends every later call to the same process, which
keeps the last model loaded (:mod:`.engine_cache`). A Processing algorithm, which runs in QGIS's task threads,
uses a session for one call (:func:`~.engine_process.run_engine`).

- Protocol: see :mod:`.engine_child` (JSON lines, each with the call's id, on the child's stdin and stdout).
- Cancel: the sink's cancel is passed on (``{"cancel": id}``); the core stops before its next batch and
  removes what it wrote, and the process stays for the next call. A process that has not answered
  :data:`CANCEL_GRACE_S` seconds after a cancel is killed; the next call starts a new one.
- A process that died (crash, killed) is noticed: during a call, the call fails with a plain sentence (never
  a hang); between calls, the next call says so in its log and starts a new process.
- :meth:`EngineSession.shutdown` closes the process's stdin (it cancels what runs and exits), waits
  :data:`EXIT_WAIT_S` seconds, kills it if need be and reaps it. A session that is garbage-collected or still
  open when Python exits is shut down the same way (``weakref.finalize``).
"""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import IO, Any

from fastunet_core.errors import CancelledError, FastUNetError

from .engine_calls import Payload
from .engine_host import PREFIX, child_env, child_python, core_error
from .progress_bridge import ProgressSink

CANCEL_GRACE_S = 60.0  # a cancelled call that has not ended by then: the process is killed
EXIT_WAIT_S = 5.0  # shutdown: how long the process may take to end its call and exit before it is killed


@dataclass
class _Child:
    """A running engine process and its pipes."""

    proc: subprocess.Popen[str]
    stderr: IO[str]  # a temporary file: the end of it explains a crash
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)  # stdout's lines; None at its end
    write_lock: threading.Lock = field(default_factory=threading.Lock)
    stop_lock: threading.Lock = field(default_factory=threading.Lock)
    pump: threading.Thread | None = None
    exit_code: int | None = None
    eof: bool = False  # stdout has ended: the process has gone, or is going
    tail: str = ""  # stderr's last line, once stopped

    @classmethod
    def start(cls, module: str) -> _Child:
        """Start ``python -m module`` with pipes, and a thread that reads its stdout."""
        stderr = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 (closed by stop())
        try:
            proc = subprocess.Popen([child_python(), "-m", module], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=stderr, text=True, encoding="utf-8", env=child_env())
        except BaseException:
            stderr.close()
            raise
        child = cls(proc, stderr)
        child.pump = threading.Thread(target=child._read, name="fastunet-engine-stdout", daemon=True)
        child.pump.start()
        return child

    @property
    def pid(self) -> int:
        """The process id."""
        return self.proc.pid

    def alive(self) -> bool:
        """Return True while the process runs."""
        return self.exit_code is None and not self.eof and self.proc.poll() is None

    def _read(self) -> None:
        stdout = self.proc.stdout
        if stdout is not None:
            with contextlib.suppress(OSError, ValueError):
                for line in stdout:
                    self.lines.put(line)
        self.eof = True
        self.lines.put(None)

    def send(self, message: dict[str, Any]) -> bool:
        """Write one request line; return False when the process no longer reads (it has ended)."""
        stdin = self.proc.stdin
        with self.write_lock:
            if stdin is None or stdin.closed:
                return False
            try:
                stdin.write(json.dumps(message) + "\n")
                stdin.flush()
            except (OSError, ValueError):
                return False
        return True

    def stop(self, wait_s: float) -> int:
        """Close stdin (the process then exits), wait ``wait_s`` seconds, kill if need be; reap; close the pipes."""
        with self.stop_lock:
            if self.exit_code is not None:
                return self.exit_code
            with self.write_lock, contextlib.suppress(OSError, ValueError):
                if self.proc.stdin is not None:
                    self.proc.stdin.close()
            try:
                code = self.proc.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(OSError):
                    self.proc.kill()
                code = self.proc.wait()
            if self.pump is not None:
                self.pump.join(timeout=2.0)  # it reads stdout to its end, which comes once the process is gone
            if self.proc.stdout is not None:
                with contextlib.suppress(OSError, ValueError):
                    self.proc.stdout.close()
            with contextlib.suppress(OSError, ValueError):
                self.stderr.seek(0)
                lines = self.stderr.read()[-1500:].strip().splitlines()
                self.tail = lines[-1] if lines else ""
            self.stderr.close()
            self.exit_code = code
            return code

    def kill(self) -> int:
        """Kill the process at once and reap it."""
        with contextlib.suppress(OSError):
            self.proc.kill()
        return self.stop(0.0)


class EngineSession:
    """A long-lived engine process, started on the first call, restarted when it has died.

    Calls are served one at a time (a second caller waits for the first); :meth:`call` runs on a worker
    thread (a QgsTask's), never on the GUI thread. :meth:`shutdown` may come from the GUI thread meanwhile.
    """

    def __init__(self, kept: bool = True, module: str | None = None) -> None:
        self.kept = kept  # False: a session for one call (its start is not worth a log line)
        self.module = module or f"{__name__.rsplit('.', 1)[0]}.engine_child"
        self.starts = 0  # processes started by this session
        self._child: _Child | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._call_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._next_id = 0
        self._shut = False  # set by shutdown(): a call that loses its process then counts as cancelled

    def __enter__(self) -> EngineSession:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.shutdown()

    @property
    def pid(self) -> int | None:
        """The running engine process's id, or None."""
        child = self._child
        return child.pid if child is not None and child.alive() else None

    def call(self, kind: str, payload: Payload, sink: ProgressSink) -> Payload:
        """Run engine call ``kind`` in the process; raise the core's errors as the child raised them."""
        with self._call_lock:
            self._shut = False
            self._next_id += 1
            request = {"id": self._next_id, "kind": kind, "payload": payload}
            final = None
            for _attempt in range(2):  # a process that ends before it took the call (killed meanwhile): once more
                child = self._ready(sink)
                final = self._follow(child, request, sink) if child.send(request) else None
                if final is not None:
                    break
            if final is None:  # twice: it cannot start (a broken engine installation, say)
                self._forget(child)
                code = child.stop(1.0)
                tail = f": {child.tail}" if child.tail else ""
                raise FastUNetError(f"the engine process ended as soon as it started ({_exit_reason(code)}){tail}")
        if "result" in final:
            return dict(final["result"])
        err = final["error"]
        raise core_error(err["type"], err["message"], err.get("name"))

    def shutdown(self, wait_s: float = EXIT_WAIT_S) -> int | None:
        """Tell the process to exit (a running call is cancelled), kill it after ``wait_s`` s; return its exit code."""
        with self._state_lock:
            child, finalizer = self._child, self._finalizer
            self._child, self._finalizer, self._shut = None, None, True
        if finalizer is not None:
            finalizer.detach()
        return child.stop(wait_s) if child is not None else None

    # -- internals (under the call lock) --
    def _ready(self, sink: ProgressSink) -> _Child:
        """Return the running process; start one (saying why) when there is none or it has died."""
        child = self._child
        if child is not None and child.alive():
            sink.log(f"engine: the running engine process (pid {child.pid})")
            return child
        if child is not None:
            self._forget(child)
            code = child.stop(1.0)
            sink.log(f"engine: the engine process had stopped ({_exit_reason(code)}); starting a new one")
        new = _Child.start(self.module)
        with self._state_lock:
            self._child = new
            self._finalizer = weakref.finalize(self, new.stop, 1.0)
        self.starts += 1
        if self.kept:
            sink.log(f"engine: a separate Python process ({child_python()}, pid {new.pid}), kept for the next runs")
        return new

    def _follow(self, child: _Child, request: dict[str, Any], sink: ProgressSink) -> dict[str, Any] | None:
        """Relay progress until the call's result or error; pass a cancel on; notice the process's end.

        Return None when the process ended before it took the call (the caller then starts another).
        """
        request_id = request["id"]
        cancelled_at: float | None = None
        taken = False
        while True:
            if cancelled_at is None and sink.is_cancelled():
                child.send({"cancel": request_id})
                cancelled_at = time.monotonic()
            elif cancelled_at is not None and time.monotonic() - cancelled_at > CANCEL_GRACE_S:
                sink.log(f"engine: no answer {CANCEL_GRACE_S:.0f} s after the cancel; the engine process is stopped")
                self._forget(child)
                child.kill()
                raise CancelledError("cancelled; the engine process was stopped (the next run starts a new one)")
            try:
                line = child.lines.get(timeout=0.1)
            except queue.Empty:
                if not child.eof or not child.lines.empty():
                    continue
                line = None  # its end was read by an earlier call: never wait for a process that has gone
            if line is None:
                if not taken and cancelled_at is None and not self._shut:
                    return None
                return self._ended(child, cancelled_at is not None)
            if not line.startswith(PREFIX):
                continue
            try:
                message = json.loads(line[len(PREFIX):])
            except ValueError:
                continue
            if not isinstance(message, dict) or message.get("id") != request_id:
                continue  # a late line of an earlier call
            taken = True
            if "percent" in message:
                sink.set_percent(float(message["percent"]))
            elif "log" in message:
                sink.log(str(message["log"]))
            elif "result" in message or "error" in message:
                return message

    def _ended(self, child: _Child, cancelled: bool) -> dict[str, Any]:
        """Reap a process that ended during a call; raise what that means."""
        shut = self._shut
        self._forget(child)
        code = child.stop(EXIT_WAIT_S)
        if shut or cancelled:
            raise CancelledError("cancelled; the engine process was stopped")
        tail = f": {child.tail}" if child.tail else ""
        raise FastUNetError(f"the engine process stopped unexpectedly ({_exit_reason(code)}){tail}; "
                            "the next run starts a new one")

    def _forget(self, child: _Child) -> None:
        with self._state_lock:
            if self._child is child:
                self._child = None
                if self._finalizer is not None:
                    self._finalizer.detach()
                self._finalizer = None


def _exit_reason(code: int) -> str:
    """Say how a process ended, from its exit code (negative: killed by that signal)."""
    if code < 0:
        import signal

        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"
