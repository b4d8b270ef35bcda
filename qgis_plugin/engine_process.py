"""Run an engine call in this process, or in a separate Python process when QGIS's libraries would clash.

Why a separate process: the ``qgis`` and ``qgis_process`` executables on Linux link GDAL, GEOS and PROJ
themselves, so those libraries' symbols are global in the process. The wheels of rasterio, pyogrio and
shapely bring their own, newer GDAL and GEOS; loaded into such a process, their calls bind to QGIS's older
libraries instead (ELF symbol interposition). Shapely then fails (``WKB output dimension must be 2 or 3``)
and the process may abort. A fresh interpreter has no such globals, so there the engine runs as tested.
Plain Python (the tests, the Python console of a QGIS started from Python) has no clash: calls run here.

In this process the call runs on its own Python thread (see :func:`_run_on_python_thread`).
The child is ``python -m <this package>.engine_child``, driven by an :class:`~.engine_session.EngineSession`
(JSON lines on its stdin and stdout; a cancel stops it before its next batch, and it then removes what it
wrote, as in-process): the dock keeps one session, and so one process with its model loaded, while it is
open; other callers (Processing) use a process per call. ``FASTUNET_GEO_ENGINE=inprocess|subprocess``
forces a mode; ``FASTUNET_GEO_PYTHON`` names the interpreter for the child.
"""

from __future__ import annotations

import threading
from typing import Any

from .engine_calls import CALLS, Payload
from .engine_host import (
    PREFIX,
    child_env,
    child_python,
    core_error,
    engine_python,
    host_links_geo_libraries,
    set_engine_python,
    use_subprocess,
)
from .engine_session import EngineSession
from .jobs import SegmentJob, SegmentOutcome
from .progress_bridge import ProgressSink

__all__ = ["PREFIX", "child_env", "child_python", "core_error", "engine_python", "host_links_geo_libraries",
           "run_engine", "run_segment", "set_engine_python", "use_subprocess"]

def run_engine(kind: str, payload: Payload, sink: ProgressSink, session: EngineSession | None = None) -> Payload:
    """Run engine call ``kind`` here or in a child process; raise the core's errors as they were raised.

    ``session``: the long-lived engine process to use (the dock's); None, or one made with ``kept=False``: a
    process for this call alone (given, the caller can shut it down meanwhile: see the Train tab).
    """
    if not use_subprocess():
        return _run_on_python_thread(kind, payload, sink)
    if session is not None and session.kept:
        return session.call(kind, payload, sink)
    sink.log(f"engine: a separate Python process ({child_python()}), since QGIS's own GDAL/GEOS are loaded here")
    with session or EngineSession(kept=False) as one_call:  # shut down when the call ends
        return one_call.call(kind, payload, sink)


def _run_on_python_thread(kind: str, payload: Payload, sink: ProgressSink) -> Payload:
    """Run the call on a thread Python created, and wait for it.

    QgsTask and Processing run in QThreadPool threads, whose Python thread state is made and dropped around
    each call from C++; pyproj keeps a PROJ context per thread, and its second use from such a thread
    crashed (segfault in proj_as_wkt, seen with QGIS 3.40 and pyproj 3.7). A Python thread has one thread
    state for its whole life.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = CALLS[kind](payload, sink)
        except BaseException as exc:  # handed to the caller's thread below
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"fastunet-{kind}", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return dict(box["result"])


def run_segment(job: SegmentJob, sink: ProgressSink, session: EngineSession | None = None) -> SegmentOutcome:
    """Run a segmentation job (crop, predict, vectorise) here or in a child process (``session``'s, if given)."""
    return SegmentOutcome.from_dict(run_engine("segment", job.to_dict(), sink, session))
