"""``vectorize_raster``: turn a class raster into polygons with class attributes, in bounded memory.

class raster -> windows (pixel grid) -> polygons per window (GDAL's polygoniser, in pixel coordinates)
-> seam merge (pieces of one region in several windows become one polygon,
   see :mod:`~fastunet_core.polygons.polygonize`)
-> map coordinates, area and perimeter in metres (:mod:`~fastunet_core.polygons.measure`), small polygons and holes
dropped -> GeoPackage / Shapefile / GeoJSON and a QGIS style (:mod:`~fastunet_core.io.vector_output`).

Memory holds one window, the pieces waiting on a seam, and one batch of finished polygons; only
``dissolve`` (one multipolygon per class) keeps everything until the end. With ``workers`` > 1 the
windows are polygonised in worker processes (:mod:`~fastunet_core.polygons.vector_windows`); this process merges
the seams and writes. Simplification is a coverage
simplification of each window (all classes, nodata included, the window's frame held fixed), so neighbouring
polygons keep sharing their edges exactly: no gaps, no overlaps, also across seams.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import rasterio

from fastunet_core.errors import CancelledError, ConfigError, EmptyPolygonsWarning, FastUNetWarning, InputRasterError
from fastunet_core.hints import counted, setting, shell_path
from fastunet_core.io.raster_input import check_placed, open_raster
from fastunet_core.io.targets import Role, check_distinct, target_locks
from fastunet_core.io.vector_output import (
    FeatureBatch,
    check_outputs,
    open_sink,
    output_roles,
    vector_format,
)
from fastunet_core.polygons.legend import Legend, read_legend, select_classes
from fastunet_core.polygons.measure import Measurer
from fastunet_core.polygons.options import ClassSummary, VectorizeOptions, VectorizeResult
from fastunet_core.polygons.polygonize import SeamMerger, window_rows
from fastunet_core.polygons.vector_windows import Features, WindowJob, finish, gc_paused, iter_results
from fastunet_core.runtime.progress import NullProgress, Progress

BATCH_FEATURES = 25_000


def vectorize_raster(mask_path: str | os.PathLike[str], output_path: str | Path,
                     options: VectorizeOptions | None = None, progress: Progress | None = None) -> VectorizeResult:
    """Vectorise the class raster ``mask_path`` into ``output_path`` (.gpkg, .shp or .geojson).

    The raster is read in windows (in this or ``options.workers`` processes); each window is polygonised
    in pixel coordinates (GDAL's polygonize), and polygons cut by window edges are joined exactly by a
    union-find over the pieces that face each other across a seam (:mod:`fastunet_core.polygons.polygonize`).
    Areas and perimeters are in metres: planar in a projected CRS whose scale error is small, else on the
    ellipsoid (:mod:`fastunet_core.polygons.measure`).

    Args:
        mask_path: a class raster (one band of integer class ids; nodata is never vectorised), e.g. the output
            of :func:`~fastunet_core.inference.predict.predict_raster`; its ``CLASSES`` tag names the classes.
        output_path: the polygons to write; the suffix picks the format (``.gpkg``, ``.shp``, ``.geojson``);
            fields ``class_id``, ``class_name``, ``area_m2``, ``perimeter_m``; a QGIS ``.qml`` style beside it.
        options: classes to keep (default: all but ``background``), ``simplify_m`` (tolerance in metres),
            ``min_area_m2`` (smaller polygons dropped), dissolve, workers, overwrite.
        progress: receives window counts and the cancel question.

    Returns:
        :class:`VectorizeResult`: the files written, the number of features, per-class counts and areas.

    Raises:
        FastUNetError: a subclass for anything the user can fix (InputRasterError, ConfigError for unknown
            classes or negative settings, OutputExistsError, OutputLimitError, WorkerError ...); in that case,
            and on CancelledError, no output file is left behind and existing ones are untouched.

    """
    opts = options or VectorizeOptions()
    prog = progress or NullProgress()
    t0 = time.perf_counter()
    out = Path(output_path)
    _check_options(opts)
    vector_format(out)
    check_distinct([Role("class raster", mask_path)], output_roles(out))
    with target_locks([out]):
        check_outputs(out, opts.overwrite)
        return _vectorize(mask_path, out, opts, prog, t0)


def _vectorize(mask_path: str | os.PathLike[str], out: Path, opts: VectorizeOptions, prog: Progress,
               t0: float) -> VectorizeResult:
    with open_raster(mask_path) as src, warnings.catch_warnings(record=True) as caught, gc_paused():
        warnings.simplefilter("always", FastUNetWarning)
        crs_wkt = _check_class_raster(src)
        legend = read_legend(src)
        selection = select_classes(legend, opts.classes, src.nodata, Path(src.name).name)
        meter = Measurer.for_raster(crs_wkt, src.transform, src.width, src.height)
        grid = window_rows(src.width, src.height, opts.window_px)
        job = WindowJob(str(mask_path), selection, opts.simplify_m / meter.pixel_size_m, opts.min_area_m2,
                        crs_wkt, src.transform, src.width, src.height)
        n_windows = sum(len(r) for r in grid)
        prog.start(n_windows, "windows")
        with open_sink(out, crs_wkt, "MultiPolygon" if opts.dissolve else "Polygon", opts.overwrite) as sink:
            features = _FeatureWriter(legend, opts.dissolve, sink.folder)
            sink.write_all(features.batches(_run_windows(job, grid, opts.workers, meter, prog)))
            named = [c.id for c in legend.classes.values() if selection.wants(c.id)]
            sink.write_style([legend.get(i) for i in sorted(set(named) | features.seen)])
            files = sink.commit()
        summary = features.summary()
        if not summary:
            warnings.warn(f"{Path(src.name).name} holds no polygon of the selected classes: {out.name} is empty",
                          EmptyPolygonsWarning, stacklevel=2)
    messages = [str(w.message) for w in caught if issubclass(w.category, FastUNetWarning)]
    for w in caught:  # hand every warning on to the caller (the CLI prints ours from the result)
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return VectorizeResult(out, files, sink.features, summary, n_windows, time.perf_counter() - t0,
                           meter.describe(), messages)


def _check_options(opts: VectorizeOptions) -> None:
    if opts.simplify_m < 0 or opts.min_area_m2 < 0:
        raise ConfigError(f"{setting('simplify')} and {setting('min_area')} must be zero or positive")
    if opts.window_px < 16:
        raise ConfigError(f"window size must be at least 16 pixels, got {opts.window_px}")
    if opts.workers < 1:
        raise ConfigError(f"workers must be at least 1, got {opts.workers}")


def _check_class_raster(src: rasterio.io.DatasetReader) -> str:
    """Check that ``src`` is a one-band integer raster placed on a map (a CRS and a geotransform); return the CRS."""
    name = Path(src.name).name
    if src.count != 1:
        raise InputRasterError(f"{name} has {src.count} bands; a class raster has one band of class ids "
                               f"(e.g. the output of {setting('segment_tool')})")
    if not np.issubdtype(np.dtype(src.dtypes[0]), np.integer):
        raise InputRasterError(f"{name} holds {src.dtypes[0]} values; a class raster holds integer class ids")
    check_placed(src)  # predict's rule: no geotransform would put the polygons at the CRS's origin, 1 m pixels
    if src.crs is None:
        raise InputRasterError(f"{name} has no CRS, so areas in m2 cannot be computed; assign one first "
                               f"(e.g. gdal_edit.py -a_srs EPSG:<code> {shell_path(src.name)})")
    return src.crs.to_wkt()


def _run_windows(job: WindowJob, grid: list[list[rasterio.windows.Window]], workers: int, meter: Measurer,
                 prog: Progress) -> Iterator[Features]:
    """Vectorise every window in row-major order, merge the pieces across seams; yield the final polygons."""
    merger = SeamMerger(job.width, job.height, drop_collinear=job.simplify_px == 0)
    last_col = len(grid[0]) - 1
    results = iter_results(job, grid, workers)
    try:
        for res in results:
            if prog.is_cancelled():
                raise CancelledError("cancelled; no output was written")
            yield res.features
            merger.add(res.col, res.window, res.pieces, res.piece_ids)
            if res.col == last_col:
                yield finish(*merger.finish_row(), meter, job.min_area_m2)
            prog.advance(1)
    finally:
        results.close()  # stops the workers at once if we leave early


class _FeatureWriter:
    """Group finished features into batches to write, or keep them to dissolve by class at the end."""

    def __init__(self, legend: Legend, dissolve: bool, folder: Path) -> None:
        self.legend = legend
        self.dissolve = dissolve
        self.folder = folder  # where dissolved classes are spilled
        self.seen: set[int] = set()
        self._stats: dict[int, list[float]] = {}

    def batches(self, found: Iterable[Features]) -> Iterator[FeatureBatch]:
        """Yield batches of about ``BATCH_FEATURES`` features; when dissolving, one multipolygon per class."""
        pending: list[Features] = []
        count = 0
        parts: dict[int, _DissolvedClass] = {}
        for features in found:
            if len(features) == 0:
                continue
            self._count(features)
            if self.dissolve:
                for cid in np.unique(features.class_id).tolist():
                    part = parts.get(cid)
                    if part is None:
                        part = parts[cid] = _DissolvedClass(self.folder / f"dissolve_{cid}.wkb")
                    part.add(features, features.class_id == cid)
                continue
            pending.append(features)
            count += len(features)
            if count >= BATCH_FEATURES:
                yield self._batch(Features.concat(pending))
                pending, count = [], 0
        if pending:
            yield self._batch(Features.concat(pending))
        for cid in sorted(parts):  # one class at a time: memory holds one class's multipolygon
            part = parts.pop(cid)
            cids = np.array([cid])
            yield FeatureBatch(np.array([part.multipolygon_wkb()], dtype=object), cids, self._names(cids),
                               np.array([part.area_m2]), np.array([part.perimeter_m]))

    def _batch(self, features: Features) -> FeatureBatch:
        return FeatureBatch(features.wkb, features.class_id, self._names(features.class_id), features.area_m2,
                            features.perimeter_m)

    def _count(self, features: Features) -> None:
        uniq, inverse = np.unique(features.class_id, return_inverse=True)
        counts = np.bincount(inverse)
        sums = np.bincount(inverse, weights=features.area_m2)
        for cid, n, a in zip(uniq.tolist(), counts.tolist(), sums.tolist(), strict=True):
            stat = self._stats.setdefault(cid, [0, 0.0])
            stat[0] += n
            stat[1] += a
        self.seen.update(uniq.tolist())

    def _names(self, ids: np.ndarray) -> np.ndarray:
        uniq, inverse = np.unique(ids, return_inverse=True)
        names = np.array([self.legend.get(c).name for c in uniq.tolist()], dtype=object)
        return names[inverse]

    def summary(self) -> tuple[ClassSummary, ...]:
        """Return, per class written, the number of polygons and their total area."""
        return tuple(ClassSummary(cid, self.legend.get(cid).name, int(n), float(a))
                     for cid, (n, a) in sorted(self._stats.items()))


class _DissolvedClass:
    """The polygons of one class, spilled to a file as they come, joined into one multipolygon at the end.

    A MultiPolygon's WKB is a 9-byte header (byte order, type 6, part count) followed by its polygons' own
    WKB, so the parts are appended to the file as they are and the header is put in front at the end: no
    geometry object is built, and until the end memory holds no polygon at all (``--dissolve`` on a map
    with millions of regions used to keep every polygon, as WKB and as shapely objects, all at once).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self.area_m2 = 0.0
        self.perimeter_m = 0.0

    def add(self, features: Features, mask: np.ndarray) -> None:
        """Append the selected features' polygons."""
        chunks = []
        for wkb in features.wkb[mask].tolist():
            kind = int.from_bytes(wkb[1:5], "little" if wkb[0] == 1 else "big")
            if kind == 6:  # already a multipolygon: take its parts
                chunks.append(wkb[9:])
                self.count += int.from_bytes(wkb[5:9], "little" if wkb[0] == 1 else "big")
            else:
                chunks.append(wkb)
                self.count += 1
        self.area_m2 += float(features.area_m2[mask].sum())
        self.perimeter_m += float(features.perimeter_m[mask].sum())
        with open(self.path, "ab") as f:
            f.write(b"".join(chunks))

    def multipolygon_wkb(self) -> bytes:
        """Return the class's polygons as one MultiPolygon (WKB), and delete the spill file."""
        body = self.path.read_bytes()
        self.path.unlink()
        return b"\x01" + (6).to_bytes(4, "little") + self.count.to_bytes(4, "little") + body


def class_summary_text(classes: Sequence[ClassSummary]) -> str:
    """Describe per-class results in one line, e.g. ``building: 43 polygons, 8,460 m2``."""
    return "; ".join(f"{c.name}: {counted(c.polygons, 'polygon', True)}, {c.area_m2:,.0f} m2" for c in classes)
