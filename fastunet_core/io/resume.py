"""Resumable outputs: an interrupted prediction keeps its finished rows and the next run continues there.

Output rows are written top to bottom as they complete (see :mod:`fastunet_core.tiling.stitching`). While a run
is going, the output is a hidden partial file beside the target. When the run completes, the partial
file is renamed to the target. When it is interrupted (Ctrl-C, SIGTERM, cancel, an error), the partial
file is closed cleanly and a small JSON state file records how many rows are final and what produced
them (every file the source dataset reads: a VRT's sources, masks, overviews; model weights, tiling
options). A later run with the same inputs opens the partial file for update and starts from the first
tile row that reaches below the finished rows; anything else (another model, a changed source file,
other options) starts over.

The state file is removed before a resumed run writes anything and written again only after the raster
was closed, so a state file always describes a readable partial raster; a run killed outright
(SIGKILL, power loss) leaves no state file, and the next run starts over.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rasterio
import rasterio.errors

from fastunet_core.errors import OutputWriteError
from fastunet_core.io.atomic import check_writable
from fastunet_core.io.write_errors import describe_os_error

STATE_VERSION = 2  # 2: the source is fingerprinted by every file GDAL reads for it (1: the named file only)


def partial_path(target: Path) -> Path:
    """Return the hidden file a resumable output is written to until it is complete."""
    return target.parent / f".{target.stem}.partial{target.suffix}"


def previous_path(target: Path) -> Path:
    """Return where a resumed run keeps the earlier partial file while it copies its finished rows."""
    return target.parent / f".{target.stem}.previous{target.suffix}"


def state_path(target: Path) -> Path:
    """Return the JSON file that says how far the partial file of ``target`` got."""
    return target.parent / f".{target.name}.partial.json"


def dataset_files(ds: Any) -> list[str]:
    """Return every file GDAL reads for the open dataset ``ds``, nested VRTs' sources included.

    GDAL's file list names the dataset's own file and its sidecars (.msk, .ovr, .aux.xml, world file) and,
    for a VRT, its source files; a source that is itself a VRT is opened for its own list.
    """
    files: list[str] = []
    todo, seen = list(ds.files), set()
    while todo:
        name = todo.pop(0)
        key = os.path.abspath(name) if not name.startswith("/vsi") else name
        if key in seen:
            continue
        seen.add(key)
        files.append(name)
        if name.lower().endswith(".vrt") and files[0] != name:
            try:
                with rasterio.open(name) as nested:
                    todo.extend(nested.files)
            except (rasterio.errors.RasterioError, OSError):
                pass  # a missing source makes the fingerprint None below (not resumable)
    return files


def source_fingerprint(files: list[str]) -> list[dict[str, Any]] | None:
    """Identify the version of every file a source dataset reads (resolved path, size, modification time).

    A VRT mosaic is read from its source files: a changed tile must start a resumed run over as a changed
    .vrt does (the .vrt file itself stays the same). None when a file is not a local file (a URL, /vsizip/
    ...): such a source cannot be checked cheaply, so its outputs are never continued.
    """
    prints = []
    for name in files:
        path = Path(name)
        if not path.is_file():
            return None
        st = path.stat()
        prints.append({"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return prints or None


def weights_digest(state_dict: dict[str, Any]) -> str:
    """Return a digest of a model's weights (so a partial output is only continued with the same model)."""
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in state_dict.items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass
class PartialOutput:
    """One output being written: ``path`` to write to, ``resume_rows`` finished rows found at the start."""

    target: Path
    path: Path
    fingerprint: dict[str, Any]
    resume_rows: int = 0
    rows_done: int = 0  # updated by the writer as rows are written
    kept: bool = field(default=False, init=False)
    # resuming: the earlier run's partial file, whose finished rows the caller copies into ``path`` (a new
    # file, written as in one uninterrupted run, so the finished output is byte for byte the same)
    previous: Path | None = field(default=None, init=False)
    # run on the finished, closed partial file just before it is renamed to the target (e.g. overviews)
    before_commit: Callable[[Path], None] | None = field(default=None, init=False)


def _read_state(target: Path, fingerprint: dict[str, Any]) -> int:
    """Return the finished rows of a matching partial output of ``target``, or 0."""
    state, data = state_path(target), partial_path(target)
    if not state.exists() or not data.exists():
        return 0
    try:
        saved = json.loads(state.read_text())
    except (OSError, ValueError):
        return 0
    if saved.get("version") != STATE_VERSION or saved.get("fingerprint") != fingerprint:
        return 0
    rows = saved.get("rows_done")
    return rows if isinstance(rows, int) and rows > 0 else 0


def find_resume_rows(target: Path, fingerprint: dict[str, Any]) -> int:
    """Return how many rows of ``target`` an earlier interrupted run finished with the same inputs (or 0)."""
    return _read_state(target, fingerprint)


def _drop_previous(out: PartialOutput) -> None:
    if out.previous is not None:
        with contextlib.suppress(FileNotFoundError):
            out.previous.unlink()


def discard_partial(target: Path) -> None:
    """Remove the partial file and state of ``target``, if any."""
    for p in (state_path(target), partial_path(target), previous_path(target)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


@contextlib.contextmanager
def resumable_output(target: Path, fingerprint: dict[str, Any], resume_rows: int, overwrite: bool,
                     keep_on_failure: bool = True) -> Iterator[PartialOutput]:
    """Yield a :class:`PartialOutput` whose ``path`` is written in place of ``target``.

    ``resume_rows`` > 0 continues the partial file left by an earlier run (the caller checked it with
    :func:`find_resume_rows`); 0 starts a new one. On success the partial file becomes ``target``. On
    failure it is kept with a state file when ``keep_on_failure`` and some rows were finished, else deleted.
    The caller must close the raster inside this context, so the kept file is complete up to its rows.
    """
    target = Path(target)
    check_writable(target, overwrite)
    out = PartialOutput(target, partial_path(target), fingerprint, resume_rows, resume_rows)
    with contextlib.suppress(FileNotFoundError):
        state_path(target).unlink()  # from here on, the partial file is being changed
    if resume_rows == 0:
        with contextlib.suppress(FileNotFoundError):
            out.path.unlink()
    else:
        out.previous = previous_path(target)
        os.replace(out.path, out.previous)
        out.rows_done = 0  # rows in the new file; the copy brings it back to resume_rows
    try:
        yield out
        if out.before_commit is not None:
            out.before_commit(out.path)
        os.replace(out.path, target)
        _drop_previous(out)
    except BaseException as exc:
        if out.previous is not None and out.previous.exists() and out.rows_done < resume_rows:
            # stopped while copying the earlier rows: the earlier partial file still holds more
            with contextlib.suppress(FileNotFoundError):
                out.path.unlink()
            os.replace(out.previous, out.path)
            out.rows_done = resume_rows
        _drop_previous(out)
        # a failed write (full disk ...) may have left the partial file incomplete below its rows: never keep it
        if keep_on_failure and out.rows_done > 0 and out.path.exists() and not isinstance(exc, OutputWriteError):
            try:
                state_path(target).write_text(json.dumps({"version": STATE_VERSION, "rows_done": out.rows_done,
                                                          "fingerprint": fingerprint}, indent=1))
                out.kept = True
            except OSError as exc:
                discard_partial(target)
                raise OutputWriteError(describe_os_error(exc, target, "could not record the progress of")) from exc
        else:
            discard_partial(target)
        raise
