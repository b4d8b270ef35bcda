"""Keep the files a run replaces until the whole run has finished, and put them back if it fails.

A run's stages each rename their temporary file over the target as they finish: the class raster is in place
before the polygons are made. Without this, a run that replaces existing outputs and is cancelled (or fails)
in a later stage would remove its own finished class raster, and the user would be left with neither the old
files nor the new ones. Here every file the run may replace gets a second name beside it first, a hard link
(no data copied; a copy for small sidecars and where the file system has no hard links); the run's renames
leave the old data under that name, which is dropped when the run succeeds and renamed back when it does not.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["backup_path", "kept_until_done"]

# Files smaller than this are copied, not linked: GDAL rewrites a .aux.xml in place (the same inode), which
# would change a hard-linked copy too; the large outputs are only ever replaced by a rename.
SMALL_FILE = 1 << 20


def backup_path(path: Path) -> Path:
    """Return the hidden name beside ``path`` that holds its old data while a run replaces it."""
    return path.with_name(f".{path.name}.replaced")


@contextlib.contextmanager
def kept_until_done(paths: Iterable[Path]) -> Iterator[None]:
    """Hold the existing ``paths`` aside during the block: put them back if it raises, else drop the copies."""
    kept: list[tuple[Path, Path]] = []
    try:
        for path in dict.fromkeys(paths):  # each once, in order
            if not path.is_file():
                continue
            backup = backup_path(path)
            with contextlib.suppress(FileNotFoundError):
                backup.unlink()  # left by a run that was killed: the file at ``path`` is the newer one
            if path.stat().st_size < SMALL_FILE:  # sidecars (.aux.xml, .qml, .prj) may be rewritten in place
                shutil.copy2(path, backup)
                kept.append((path, backup))
                continue
            try:
                os.link(path, backup)
            except OSError:  # no hard links here (FAT, some network shares): copy
                shutil.copy2(path, backup)
            kept.append((path, backup))
    except BaseException:
        _drop(kept)
        raise
    try:
        yield
    except BaseException:
        for path, backup in kept:  # the run has removed what it wrote: the old files come back
            with contextlib.suppress(OSError):
                if path.exists() and path.samefile(backup):  # never replaced (a rename onto the same file
                    backup.unlink()  # would do nothing and leave the second name)
                else:
                    os.replace(backup, path)
        raise
    _drop(kept)


def _drop(kept: list[tuple[Path, Path]]) -> None:
    for _path, backup in kept:
        with contextlib.suppress(OSError):
            backup.unlink()
