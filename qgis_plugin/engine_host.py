"""Where engine calls run: whether a child process is needed, its Python and environment; the protocol prefix, errors.

:mod:`.engine_process` decides whether a call runs here or in a child process (see there why);
:mod:`.engine_session` starts and drives the child with what this module says.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

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
