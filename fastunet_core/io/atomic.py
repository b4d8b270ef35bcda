"""Atomic outputs: write to a temporary file beside the target, rename when complete.

An interrupted or failed run never leaves a half-written file under the target's name, and never
destroys an existing output unless overwriting was allowed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from fastunet_core.errors import OutputExistsError, OutputWriteError
from fastunet_core.io.write_errors import converted, describe_os_error


def check_writable(target: Path, overwrite: bool) -> None:
    """Raise if ``target`` exists and may not be replaced, or its folder does not exist."""
    if target.exists() and not overwrite:
        raise OutputExistsError(f"{target} exists")  # each caller says how to allow overwriting
    if not target.parent.exists():
        raise OutputWriteError(f"output folder does not exist: {target.parent}")
    if target.exists() and target.is_dir():
        raise OutputWriteError(f"output path is a folder: {target}")


@contextlib.contextmanager
def atomic_output(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it to ``target``, else delete it."""
    target = Path(target)
    check_writable(target, overwrite)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    except OSError as exc:
        raise OutputWriteError(describe_os_error(exc, target.parent, "cannot write in the folder")) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    try:
        with converted(target):  # a full disk, a file size limit: one line naming the target and the cause
            yield tmp
            # mkstemp makes 0600, and writers that replace the file (safetensors) keep that: give the output the
            # usual permissions once it is written
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
