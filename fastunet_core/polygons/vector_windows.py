"""Per-window work of ``vectorize_raster``: read, polygonise, set seam pieces aside, finish the rest.

A window's polygons that touch no seam are final: they are put in map coordinates, measured, filtered by
area and encoded as WKB right here. Those touching a seam are handed back as pieces (pixel coordinates)
for the seam merge. The work runs in the calling process, or in ``workers`` worker processes that each
open the raster once; results always come back in row-major window order, with at most two windows per
worker queued, so memory stays bounded whichever way.
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import signal
import subprocess
import sys
import warnings
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.enums import MaskFlags
from rasterio.windows import Window

from fastunet_core.errors import InProcessWorkersWarning, InputRasterError, WorkerError
from fastunet_core.io.raster_input import bounded_gdal_cache
from fastunet_core.polygons.legend import Selection
from fastunet_core.polygons.measure import Measurer
from fastunet_core.polygons.polygonize import PixelPolygons, densify_unit, polygonize, touches_seam

_NODATA = np.iinfo(np.int32).min  # stands for nodata pixels while simplifying (never a class id we keep)
_SHAPES_DTYPES = ("uint8", "uint16", "int16", "int32")  # what GDAL's polygoniser reads without a cast


@dataclass(frozen=True)
class WindowJob:
    """What any process needs to vectorise windows of one class raster (picklable)."""

    path: str
    selection: Selection
    simplify_px: float
    min_area_m2: float
    crs_wkt: str
    transform: Affine
    width: int
    height: int

    def measurer(self) -> Measurer:
        """Return the raster's measurer (built where it is used: pyproj objects stay in their process)."""
        return Measurer.for_raster(self.crs_wkt, self.transform, self.width, self.height)


@dataclass
class Features:
    """Finished polygons, by column: WKB in the raster's CRS, class ids, areas (m2) and perimeters (m)."""

    wkb: np.ndarray
    class_id: np.ndarray
    area_m2: np.ndarray
    perimeter_m: np.ndarray

    def __len__(self) -> int:
        return len(self.wkb)

    @classmethod
    def concat(cls, parts: list[Features]) -> Features:
        """Join several batches into one."""
        if not parts:
            return cls(np.empty(0, dtype=object), np.empty(0, np.int64), np.empty(0), np.empty(0))
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("wkb", "class_id", "area_m2",
                                                                                   "perimeter_m")))


@dataclass
class WindowResult:
    """One window's output: its final polygons, and the pieces waiting for the seam merge."""

    row: int
    col: int
    window: Window
    features: Features
    pieces: np.ndarray  # shapely polygons, global pixel coordinates
    piece_ids: np.ndarray  # class ids of the pieces


def finish(geoms_px: np.ndarray, ids: np.ndarray, meter: Measurer, min_area_m2: float) -> Features:
    """Put pixel-space polygons on the map, fill holes and drop polygons below ``min_area_m2``, measure them."""
    return finish_map(meter.to_map(geoms_px), ids, meter, min_area_m2)


def finish_map(geoms: np.ndarray, ids: np.ndarray, meter: Measurer, min_area_m2: float) -> Features:
    """Fill holes and drop polygons below ``min_area_m2`` (polygons in map coordinates), measure them."""
    area = meter.area_m2(geoms)
    if min_area_m2 > 0:
        geoms, area = _fill_small_holes(geoms, area, meter, min_area_m2)
        keep = area >= min_area_m2
        geoms, ids, area = geoms[keep], ids[keep], area[keep]
    return Features(shapely.to_wkb(geoms), ids, area, meter.perimeter_m(geoms))


def _fill_small_holes(geoms: np.ndarray, area: np.ndarray, meter: Measurer,
                      min_area_m2: float) -> tuple[np.ndarray, np.ndarray]:
    """Remove holes smaller than ``min_area_m2`` from polygons (map coordinates); return them and their areas."""
    has_holes = np.flatnonzero(shapely.get_num_interior_rings(geoms) > 0)
    if len(has_holes) == 0:
        return geoms, area
    rings, owner = shapely.get_rings(geoms[has_holes], return_index=True)
    shell = np.r_[True, owner[1:] != owner[:-1]]  # get_rings lists each polygon's shell first
    keep = shell.copy()
    keep[~shell] = meter.area_m2(shapely.polygons(rings[~shell])) >= min_area_m2
    if keep.all():
        return geoms, area
    geoms, area = geoms.copy(), area.copy()
    geoms[has_holes] = shapely.polygons(rings[keep], indices=owner[keep])
    area[has_holes] = meter.area_m2(geoms[has_holes])
    return geoms, area


class WindowProcessor:
    """Vectorise windows of one raster: the per-window half of the work (see the module docstring)."""

    def __init__(self, job: WindowJob) -> None:
        self.job = job
        self.meter = job.measurer()
        self.src = rasterio.open(job.path)
        flags = self.src.mask_flag_enums[0]
        self._all_valid = MaskFlags.all_valid in flags
        self._nodata = self.src.nodata if MaskFlags.nodata in flags else None

    def close(self) -> None:
        """Close the raster."""
        self.src.close()

    def __call__(self, row: int, col: int, window: Window) -> WindowResult:
        """Return window (``row``, ``col``)'s final polygons and its seam pieces."""
        found = self.polygons(window)
        if isinstance(found, PixelPolygons):  # built once: seam pieces in pixels, the rest straight on the map
            touch, _ = touches_seam(found.bounds(), window, self.job.width, self.job.height)
            final, pieces = found.select(~touch), found.select(touch)
            done = finish_map(final.geoms(self.meter.apply(final.xy)), final.ids, self.meter, self.job.min_area_m2)
            return WindowResult(row, col, window, done, pieces.geoms(), pieces.ids)
        geoms, ids = found
        touch, _ = touches_seam(shapely.bounds(geoms), window, self.job.width, self.job.height)
        done = finish(geoms[~touch], ids[~touch], self.meter, self.job.min_area_m2)
        return WindowResult(row, col, window, done, geoms[touch], ids[touch])

    def polygons(self, window: Window) -> PixelPolygons | tuple[np.ndarray, np.ndarray]:
        """Return the window's polygons of the selected classes (global pixel coordinates) and their ids.

        Exact outlines come as flat arrays (:class:`PixelPolygons`); simplified ones as shapely polygons
        and their ids.
        """
        data = self.src.read(1, window=window)
        valid = self._valid(data, window)
        col, row = int(window.col_off), int(window.row_off)
        if self.job.simplify_px > 0:
            return self._simplified(data, valid, col, row)
        wanted = valid if self.job.selection.everything else self.job.selection.mask(data)
        if valid is not None and wanted is not valid:
            wanted &= valid
        if wanted is not None and wanted.all():
            wanted = None  # no mask band: the polygons are the same, and GDAL reads no mask
        if wanted is not None and not wanted.any():
            return PixelPolygons.empty()
        return polygonize(_for_shapes(data, window), wanted, col, row)

    def _valid(self, data: np.ndarray, window: Window) -> np.ndarray | None:
        if self._all_valid:
            return None
        if self._nodata is not None:
            return data != np.asarray(self._nodata).astype(data.dtype)
        return self.src.read_masks(1, window=window) > 0

    def _simplified(self, data: np.ndarray, valid: np.ndarray | None, col: int, row: int) -> tuple[np.ndarray,
                                                                                                     np.ndarray]:
        """Polygonise every value (nodata too), coverage-simplify with the window's frame fixed, keep the wanted.

        With every pixel in the coverage, each edge between two polygons is simplified once for both, and
        the frame stays put, so pieces still meet exactly on the seams and merge without gaps.
        """
        values = _for_shapes(data, Window(col, row, data.shape[1], data.shape[0])).astype(np.int32)
        if valid is not None:
            values[~valid] = _NODATA
        found = polygonize(values, None, col, row)
        geoms, ids = found.geoms(), found.ids
        keep = (ids != _NODATA) & self.job.selection.mask(ids)
        if not keep.any():
            return geoms[keep], ids[keep]
        geoms = shapely.coverage_simplify(densify_unit(geoms), self.job.simplify_px, simplify_boundary=False)
        return geoms[keep], ids[keep]


def _for_shapes(data: np.ndarray, window: Window) -> np.ndarray:
    """Return ``data`` in a type GDAL's polygoniser reads, or raise if its ids do not fit in int32."""
    if data.dtype.name in _SHAPES_DTYPES:
        return data
    info = np.iinfo(np.int32)
    if data.size and (int(data.min()) < info.min or int(data.max()) > info.max):
        raise InputRasterError(f"class ids beyond the int32 range near column {int(window.col_off)}, row "
                               f"{int(window.row_off)}; renumber the classes")
    return data.astype(np.int32)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for a block (restoring its state after).

    Polygonising creates millions of short-lived objects that hold no reference cycles; each of them
    counts towards the collector's thresholds, and its full passes over every live object cost about a
    quarter of the run time. Reference counting still frees everything as usual.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def iter_results(job: WindowJob, grid: list[list[Window]], workers: int = 1) -> Generator[WindowResult, None, None]:
    """Yield every window's result in row-major order, computed here or by ``workers`` processes."""
    cells = [(r, c, w) for r, row in enumerate(grid) for c, w in enumerate(row)]
    if workers > 1 and len(cells) > 2:
        if _python() is not None:
            yield from _pooled(job, cells, min(workers, len(cells)))
            return
        warnings.warn(f"worker processes need a Python interpreter, and this process runs {sys.executable}; "
                      "vectorising in this process instead", InProcessWorkersWarning, stacklevel=3)
    with bounded_gdal_cache():
        processor = WindowProcessor(job)
        try:
            for cell in cells:
                yield processor(*cell)
        finally:
            processor.close()


def _python() -> str | None:
    """Return this Python's interpreter for worker processes (None inside e.g. QGIS, whose executable is not)."""
    exe = sys.executable
    return exe if exe and Path(exe).name.lower().startswith("python") else None


def _pooled(job: WindowJob, cells: list[tuple[int, int, Window]], workers: int) -> Iterator[WindowResult]:
    """Run the windows on worker processes, window k on worker k mod n, two per worker queued at most.

    Plain subprocesses (``python -m fastunet_core.polygons.vector_windows``) talking pickle over their stdin and
    stdout, rather than multiprocessing: no re-import of the caller's main script, so any script can
    call this without an ``if __name__ == "__main__"`` guard.
    """
    package_root = str(Path(__file__).resolve().parents[2])  # so the worker imports this very package
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH"))
                                                       if p)}
    procs = [subprocess.Popen([str(_python()), "-m", "fastunet_core.polygons.vector_windows"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, env=env) for _ in range(workers)]
    finished = False
    try:
        for proc in procs:
            _send(proc, job)
        ahead = 2 * workers
        for k, cell in enumerate(cells[:ahead]):
            _send(procs[k % workers], cell)
        for k in range(len(cells)):
            proc = procs[k % workers]
            result = _receive(proc)
            if k + ahead < len(cells):
                _send(proc, cells[k + ahead])
            yield result
        finished = True
    finally:
        _stop(procs, finished)


def _send(proc: subprocess.Popen[bytes], message: object) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    try:
        proc.stdin.write(len(data).to_bytes(8, "little") + data)  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
    except BrokenPipeError:
        raise _worker_died(proc) from None


def _receive(proc: subprocess.Popen[bytes]) -> WindowResult:
    status, payload = _read_frame(proc.stdout) or ("died", None)  # type: ignore[arg-type]
    if status == "ok" and isinstance(payload, WindowResult):
        return payload
    if status == "error" and isinstance(payload, BaseException):
        raise payload
    raise _worker_died(proc)


def _worker_died(proc: subprocess.Popen[bytes]) -> WorkerError:
    return WorkerError(f"a vectorize worker process stopped unexpectedly (exit code {proc.wait()}); if the "
                       "machine ran out of memory, use fewer workers")


def _read_frame(stream: BinaryIO) -> Any:
    """Return the next pickled message of a length-prefixed stream, or None at its end."""
    head = stream.read(8)
    if len(head) < 8:
        return None
    size = int.from_bytes(head, "little")
    data = stream.read(size)
    if len(data) < size:
        return None
    return pickle.loads(data)


def _stop(procs: list[subprocess.Popen[bytes]], finished: bool) -> None:
    """End the workers: when all went well, close their input (they exit at its end); else kill them."""
    for proc in procs:
        if not finished:  # cancelled or failed: results still queued would never be read
            proc.kill()
        with contextlib.suppress(OSError):
            proc.stdin.close()  # type: ignore[union-attr]
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with contextlib.suppress(OSError):
            proc.stdout.close()  # type: ignore[union-attr]


def _serve() -> None:
    """Worker process: read a job, then windows, from stdin; write each result (or error) to stdout."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed by libraries goes to stderr, never into the result stream
    # Ctrl-C and SIGTERM (sent to the whole process group by a terminal or a job scheduler) are the parent's to
    # handle: it stops and discards its output, then ends us. Killed outright, it closes our input and we end.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    stdin = sys.stdin.buffer
    job = _read_frame(stdin)
    if job is None:
        return
    with bounded_gdal_cache(), gc_paused():
        processor = WindowProcessor(job)
        while (cell := _read_frame(stdin)) is not None:
            try:
                reply: tuple[str, object] = ("ok", processor(*cell))
            except Exception as exc:  # sent back and raised in the parent
                reply = ("error", exc)
            try:
                data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception:  # an exception that cannot be pickled: send its text
                data = pickle.dumps(("error", RuntimeError(f"{type(reply[1]).__name__}: {reply[1]}")))
            try:
                out.write(len(data).to_bytes(8, "little") + data)
                out.flush()
            except BrokenPipeError:  # the parent stopped listening
                break
        processor.close()


if __name__ == "__main__":  # run as ``python -m``: serve with the module's real name, so results unpickle
    from fastunet_core.polygons.vector_windows import _serve as serve

    serve()
