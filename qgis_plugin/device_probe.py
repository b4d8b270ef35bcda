"""The GPU check off the GUI thread: the ``device`` engine call on a Python thread, the answer as a Qt signal.

The check imports torch (seconds, up to tens of seconds under load); the dock shows "Looking for a GPU…"
and fills in the device line when :attr:`DeviceProbe.answered` arrives (queued to the GUI thread). In the
QGIS executables the call runs in the engine process, so QGIS's own process never imports torch.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any

from qgis.PyQt.QtCore import QObject, pyqtSignal

if TYPE_CHECKING:
    from .engine_session import EngineSession


class DeviceProbe(QObject):
    """Carries the answer of a background GPU check to the GUI thread."""

    answered = pyqtSignal(dict)  # {"why_not": str | None, "gpu": str | None} or {"error": str}


def start_device_probe(probe: DeviceProbe, session: EngineSession | None = None) -> threading.Thread:
    """Run the GPU check on a daemon thread; ``probe.answered`` is emitted with the result.

    ``session``: the dock's engine process, which the check then starts (and imports torch in) for the first Run.
    """

    def work() -> None:
        from .engine_process import run_engine
        from .progress_bridge import QuietSink

        try:
            answer: dict[str, Any] = run_engine("device", {}, QuietSink(), session)
        except Exception as exc:  # the thread's boundary: the dock shows it
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        with contextlib.suppress(RuntimeError):  # the dock (and the probe with it) was deleted meanwhile
            probe.answered.emit(answer)

    thread = threading.Thread(target=work, name="fastunet-device-probe", daemon=True)
    thread.start()
    return thread
