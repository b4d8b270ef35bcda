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

import ctypes
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .engine_calls import CALLS, Payload
from .jobs import SegmentJob, SegmentOutcome
from .progress_bridge import ProgressSink

if TYPE_CHECKING:
    from .engine_session import EngineSession

PREFIX = "FASTUNET "  # marks protocol lines on the child's stdout (anything else there is ignored)
_engine_python: str | None = None  # the engine venv's Python (see set_engine_python)


def engine_python() -> str | None:
    """Return the Python the engine runs under when it is not QGIS's: the installed venv's, or FASTUNET_GEO_PYTHON."""
    return _engine_python or os.environ.get("FASTUNET_GEO_PYTHON") or None


def set_engine_python(python: str | Path | None) -> None:
    """Run every engine call in a child process under ``python`` (the installed engine venv); None: undo."""
    global _engine_python
    _engine_python = str(python) if python else None
_CLASHING_SYMBOLS = ("GEOSversion", "GDALVersionInfo", "proj_context_create")


def host_links_geo_libraries() -> bool:
    """Return True when GDAL, GEOS or PROJ symbols are global in this process (the qgis executables)."""
    if not sys.platform.startswith("linux"):
        return False  # Windows DLLs and macOS two-level namespaces bind each library's own symbols
    try:
        scope = ctypes.CDLL(None)
    except OSError:
        return False
    return any(hasattr(scope, name) for name in _CLASHING_SYMBOLS)


def use_subprocess() -> bool:
    """Return True when engine calls must run in a separate process."""
    forced = os.environ.get("FASTUNET_GEO_ENGINE", "").strip().lower()
    if forced in ("inprocess", "subprocess"):
        return forced == "subprocess"
    return engine_python() is not None or host_links_geo_libraries()


def child_python() -> str:
    """Return the interpreter of this Python installation (``sys.executable`` may be QGIS itself)."""
    named = os.environ.get("FASTUNET_GEO_PYTHON") or _engine_python
    if named:
        return named
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    if sys.platform.startswith("win"):
        candidates = [Path(sys.prefix) / "python.exe", Path(sys.prefix) / "python3.exe"]
    else:
        candidates = [Path(sys.prefix) / "bin" / f"python{version}", Path(sys.prefix) / "bin" / "python3"]
    for path in candidates:
        if path.is_file():
            return str(path)
    return sys.executable


def run_engine(kind: str, payload: Payload, sink: ProgressSink, session: EngineSession | None = None) -> Payload:
    """Run engine call ``kind`` here or in a child process; raise the core's errors as they were raised.

    ``session``: the long-lived engine process to use (the dock's); None: a process for this call alone.
    """
    if not use_subprocess():
        return _run_on_python_thread(kind, payload, sink)
    from .engine_session import EngineSession

    if session is not None:
        return session.call(kind, payload, sink)
    sink.log(f"engine: a separate Python process ({child_python()}), since QGIS's own GDAL/GEOS are loaded here")
    with EngineSession(kept=False) as one_call:
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


def child_env() -> dict[str, str]:
    """Return the engine process's environment: this Python's path (or only the plugin's), no PROJ overrides."""
    env = dict(os.environ)
    paths = [p for p in sys.path if p and Path(p).is_dir()]
    if engine_python() is not None:
        # another Python with its own packages (the engine venv, FASTUNET_GEO_PYTHON): pass on only the plugin
        # and its core; QGIS's path (Debian's dist-packages: attrs 22, numpy...) would shadow the engine's
        plugin_parent = Path(__file__).resolve().parent.parent
        vendor = Path(__file__).resolve().parent / "_vendor"
        paths = [str(plugin_parent)] + ([str(vendor)] if vendor.is_dir() else [])
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))  # the child sees what this Python sees
    for var in ("PROJ_DATA", "PROJ_LIB"):  # the wheels bring their own PROJ database
        env.pop(var, None)
    env.pop("PYTHONHOME", None)
    return env


def core_error(type_name: str, message: str, module_name: str | None = None) -> BaseException:
    """Rebuild the child's error: the core's class of that name, ImportError, or FastUNetError."""
    from fastunet_core import errors

    if type_name in ("ImportError", "ModuleNotFoundError"):
        return ImportError(message, name=module_name)
    cls = getattr(errors, type_name, None)
    if isinstance(cls, type) and issubclass(cls, errors.FastUNetError):
        return cls(message)
    return errors.FastUNetError(f"unexpected error in the engine: {type_name}: {message}")
