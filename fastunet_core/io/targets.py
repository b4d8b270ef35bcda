"""Output targets: never write over an input or another output, and one run per target at a time.

:func:`check_distinct` compares every output path with every input and with each other, before anything is
opened for writing, by resolved path (``./x``, ``a/../x``, symbolic links) and by file identity (same device
and inode: hard links). A clash is refused in one line, as GDAL refuses ``gdal_translate a.tif a.tif``.

:func:`target_locks` holds an exclusive lock per target for a whole run, so a second run writing the same
target refuses at once instead of deleting the first one's partial file. The lock is an advisory
``flock`` (``msvcrt.locking`` on Windows) on a hidden ``.NAME.lock`` file beside the target: the operating
system releases it when its process ends in any way (exit, exception, SIGKILL, power loss), so the lock
of a dead process is stale by construction and simply taken over. The lock file is removed on release.
Within one process the locks are re-entrant (the CLI may lock every output of a command up front, and the
core functions it calls lock theirs again).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from fastunet_core.errors import ConfigError, OutputWriteError
from fastunet_core.io.sources import is_virtual
from fastunet_core.io.write_errors import describe_os_error

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


@dataclass(frozen=True)
class Role:
    """A path with what it is to the user (``input raster``, ``--probs`` ...), for the refusal message."""

    label: str
    path: str | os.PathLike[str]


def _identity(path: str | os.PathLike[str]) -> tuple[str, tuple[int, int] | None]:
    """Return a path's resolved form and, when it exists, its (device, inode)."""
    resolved = os.path.realpath(path)
    try:
        st = os.stat(resolved)
    except OSError:
        return resolved, None
    return resolved, (st.st_dev, st.st_ino)


def _same(a: tuple[str, tuple[int, int] | None], b: tuple[str, tuple[int, int] | None]) -> bool:
    return a[0] == b[0] or (a[1] is not None and a[1] == b[1])


def check_distinct(inputs: Iterable[Role], outputs: Iterable[Role]) -> None:
    """Raise a ConfigError if an output is an input, or two outputs are the same file.

    Virtual paths and URLs (GDAL ``/vsi...``, ``https://``) are not local files and are not compared.
    """
    ins = [(r, _identity(r.path)) for r in inputs if not is_virtual(r.path)]
    outs: list[tuple[Role, tuple[str, tuple[int, int] | None]]] = []
    for role in outputs:
        if is_virtual(role.path):
            continue
        ident = _identity(role.path)
        for other, other_ident in ins:
            if _same(ident, other_ident):
                raise ConfigError(f"{role.label} {role.path} is the same file as the {other.label} {other.path}; "
                                  "writing it would destroy the input: choose another output name")
        for other, other_ident in outs:
            if _same(ident, other_ident):
                raise ConfigError(f"{role.label} {role.path} and {other.label} {other.path} are the same file; "
                                  "give each output its own name")
        outs.append((role, ident))


RASTER_SUFFIXES = (".tif", ".tiff")
"""The names a raster output may have: it is always written as a (tiled or cloud optimized) GeoTIFF."""


def check_raster_suffix(path: str | os.PathLike[str], what: str) -> None:
    """Raise a ConfigError unless the raster output ``path`` ends in .tif or .tiff (any case).

    The class and probability rasters are GeoTIFFs (tiles, overviews, the class table and the resume state
    live in TIFF tags), so a name such as ``x.png`` would hold a GeoTIFF that other tools, and QGIS's format
    guess by extension, take for a PNG.
    """
    suffix = Path(path).suffix
    if suffix.lower() not in RASTER_SUFFIXES:
        named = f"ends in {suffix!r}" if suffix else "has no suffix"
        raise ConfigError(f"{what} {os.fspath(path)} {named}, but it is written as a GeoTIFF: name it "
                          f"{Path(path).stem or 'output'}.tif")


def check_folder(folder: str | os.PathLike[str], what: str) -> None:
    """Raise a ConfigError when the output folder ``folder`` is an existing file, or lies under one."""
    path = Path(folder)
    for part in (path, *path.parents):
        if part.exists() and not part.is_dir():
            where = "is a file" if part == path else f"lies under {part}, which is a file"
            raise ConfigError(f"{what} {path} {where}, not a folder: give a folder")


def make_folder(folder: str | os.PathLike[str], what: str) -> None:
    """Create the output folder ``folder`` (and its parents); a file in the way or a failure is a user error."""
    check_folder(folder, what)
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputWriteError(describe_os_error(exc, folder, "cannot create the folder")) from exc


def lock_path(target: Path) -> Path:
    """Return the lock file of ``target`` (in the target's real folder, so every spelling shares it)."""
    folder = Path(os.path.realpath(Path(target).parent))
    return folder / f".{Path(target).name}.lock"


class _Held:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.count = 1


_HELD: dict[str, _Held] = {}  # lock file -> open descriptor holding it (re-entrant within the process)


def _try_lock(fd: int) -> bool:
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    import msvcrt  # pragma: no cover - Windows

    try:  # pragma: no cover
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined,unused-ignore]
    except OSError:  # pragma: no cover
        return False
    return True  # pragma: no cover


def _acquire(target: Path) -> str:
    path = lock_path(target)
    key = str(path)
    held = _HELD.get(key)
    if held is not None:
        held.count += 1
        return key
    for _ in range(100):  # the file may be removed by its last holder between our open and our lock
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputWriteError(describe_os_error(exc, Path(target).parent, "cannot write in the folder")) from exc
        if not _try_lock(fd):
            os.close(fd)
            raise OutputWriteError(f"{target} is being written by another run (locked by {path.name}); wait for it "
                                   "to finish or choose another output name")
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            _HELD[key] = _Held(fd)
            return key
        os.close(fd)  # we locked a file its holder had just removed: try the new one
    raise OutputWriteError(f"could not lock {path}")  # pragma: no cover


def _release(key: str) -> None:
    held = _HELD[key]
    held.count -= 1
    if held.count:
        return
    del _HELD[key]
    with contextlib.suppress(OSError):
        os.unlink(key)  # while still locked: a waiter that opened it sees it vanish and retries
    os.close(held.fd)


@contextlib.contextmanager
def target_locks(targets: Sequence[Path | None]) -> Iterator[None]:
    """Hold the lock of every target (``None`` and virtual paths are skipped) for the ``with`` block."""
    keys: list[str] = []
    try:
        for t in targets:
            if t is not None and not is_virtual(t):
                keys.append(_acquire(Path(t)))
        yield
    finally:
        for key in reversed(keys):
            _release(key)
