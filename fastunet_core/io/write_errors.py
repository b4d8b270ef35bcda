"""Failed writes as user errors: one line naming the file and the cause (no space left, permission denied).

A full disk or a read-only folder is not a bug, yet the libraries report it in many ways: an ``OSError``
with an errno, a ``SafetensorError`` whose text ends in ``(os error 28)``, an SQLite error from the
GeoPackage driver that no longer says why (``no such table: gpkg_contents``), or nothing at all: rasterio
only logs GDAL's errors when a dataset is closed, and libtiff prints its own to the process's stderr, so
a GeoTIFF whose last blocks never reached the disk would be renamed into place as a success.

:class:`GdalWatch` runs GDAL calls on an output with GDAL's error log and the C-level stderr captured, so
errors are noticed, and their text tells the cause. :func:`write_failure` turns an exception (or captured
messages) into an :class:`~fastunet_core.errors.OutputWriteError` when the cause is one a user can fix,
looking at the errno, at the text, and last at the folder itself (free space, read-only mount, the
process's file size limit).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from fastunet_core.errors import FastUNetError, OutputWriteError

T = TypeVar("T")

CAUSES = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large (the file system's or this process's file size limit, ulimit -f)",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
}
# how libraries spell these causes in their messages (libc's strerror, SQLite, Rust's io::Error)
_TEXTS = [(os.strerror(e).lower(), e) for e in CAUSES] + [
    ("database or disk is full", errno.ENOSPC), ("disk full", errno.ENOSPC), ("os error 28", errno.ENOSPC),
    ("os error 27", errno.EFBIG), ("os error 30", errno.EROFS), ("os error 13", errno.EACCES),
    ("attempt to write a readonly database", errno.EROFS),
]
LOW_SPACE_BYTES = 1 << 20  # after a failed write, less free space than this means the disk filled up


def describe(path: str | os.PathLike[str], cause: str, what: str = "could not write") -> str:
    """Return ``what PATH: cause``, the one line a user sees."""
    return f"{what} {os.fspath(path)}: {cause}"


def describe_os_error(exc: OSError, path: str | os.PathLike[str], what: str = "could not write") -> str:
    """Return one line naming ``path`` and the cause of ``exc`` in words."""
    cause = CAUSES.get(exc.errno or 0) or (exc.strerror or str(exc)).strip()
    return describe(path, cause, what)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def cause_in_text(text: str) -> int | None:
    """Return the errno a library message names (e.g. 'No space left on device'), if any."""
    low = text.lower()
    return next((e for t, e in _TEXTS if t in low), None)


def probe_folder(folder: Path) -> int | None:
    """Guess why writing in ``folder`` failed when the error does not say: a full disk, a read-only mount."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    if st.f_flag & os.ST_RDONLY:
        return errno.EROFS
    if st.f_bavail * st.f_frsize < LOW_SPACE_BYTES:
        return errno.ENOSPC
    if not os.access(folder, os.W_OK):
        return errno.EACCES
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    except (ImportError, OSError, ValueError):  # pragma: no cover - not POSIX
        return None
    return errno.EFBIG if soft != resource.RLIM_INFINITY else None


def write_failure(exc: BaseException | None, target: str | os.PathLike[str], messages: tuple[str, ...] = (),
                  probe: bool = True) -> OutputWriteError | None:
    """Return a one-line OutputWriteError for a failed write of ``target`` a user can fix, or None (a bug).

    The cause comes from an OSError's errno in ``exc``'s chain, else from the text of the exceptions and
    ``messages`` (GDAL's), else (``probe``) from the state of the target's folder.
    """
    if exc is not None and isinstance(exc, FastUNetError):
        return None
    code: int | None = None
    for e in _chain(exc) if exc is not None else ():
        if isinstance(e, OSError) and e.errno in CAUSES:
            code = e.errno
            break
    if code is None:
        texts = [str(e) for e in _chain(exc)] if exc is not None else []
        code = next((c for c in map(cause_in_text, [*texts, *messages]) if c is not None), None)
    if code is None and probe:
        code = probe_folder(Path(os.path.realpath(Path(target).parent)))
    if code is None:
        return None
    return OutputWriteError(describe(target, CAUSES[code]))


@contextlib.contextmanager
def converted(target: str | os.PathLike[str]) -> Iterator[None]:
    """Turn a failed write inside the block into a one-line OutputWriteError when a user can fix its cause."""
    try:
        yield
    except Exception as exc:
        err = write_failure(exc, target)
        if err is None:
            raise
        raise err from exc


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if "signalled an error" in msg:
            self.messages.append(msg)


@contextlib.contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Redirect file descriptor 2 (where libtiff prints) to a temporary file for the block; yield its lines."""
    lines: list[str] = []
    try:
        sys.stderr.flush()
        buf = tempfile.TemporaryFile()  # noqa: SIM115 (closed below, on every path)
    except (OSError, ValueError):  # no room for the capture: GDAL's log still tells
        yield lines
        return
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 (e.g. inside some GUIs): nothing to capture
        buf.close()
        yield lines
        return
    with buf:
        os.dup2(buf.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            buf.seek(0)
            lines.extend(ln for ln in buf.read().decode(errors="replace").splitlines() if ln.strip())


class GdalWatch:
    """Run GDAL calls on one output with its errors collected (rasterio logs some and carries on)."""

    def __init__(self, target: str | os.PathLike[str]) -> None:
        self.target = target
        self.messages: list[str] = []

    def call(self, fn: Callable[[], T]) -> T:
        """Return ``fn()``; raise OutputWriteError if it failed or GDAL signalled an error while it ran."""
        log = logging.getLogger("rasterio._err")
        handler = _Collect()
        level, propagate = log.level, log.propagate
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False  # these records are ours to judge; do not print them
        failure: Exception | None = None
        try:
            with _captured_stderr() as printed:
                try:
                    result = fn()
                except Exception as exc:
                    failure = exc
        finally:
            log.removeHandler(handler)
            log.setLevel(level)
            log.propagate = propagate
        noise = [ln for ln in printed if "warning" in ln.lower() or cause_in_text(ln) is None]
        for line in noise:  # anything else that was printed meanwhile (warnings), handed on
            print(line, file=sys.stderr)
        self.messages += handler.messages + [ln for ln in printed if ln not in noise]
        if failure is None and not handler.messages and len(noise) == len(printed):
            return result
        err = write_failure(failure, self.target, tuple(self.messages))
        if err is None:
            detail = failure if failure is not None else "; ".join(self.messages[:3])
            err = OutputWriteError(describe(self.target, f"GDAL reported: {detail}"))
        raise err from failure
