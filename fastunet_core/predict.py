"""``predict_raster``: segment a GeoTIFF into a georeferenced class map, streaming, in bounded memory.

raster -> tile windows (grid) -> tiles read and normalised (raster_input) -> model (engine) ->
probabilities blended per cell (stitching) -> finished block rows -> tiled GeoTIFF (raster_output),
written to a temporary file beside the target and renamed when complete.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio

from fastunet_core.atomic import atomic_output, check_writable
from fastunet_core.checkpoint import LoadedModel, load_checkpoint
from fastunet_core.device import DeviceChoice, resolve_device
from fastunet_core.engine import TorchEngine
from fastunet_core.errors import CancelledError, ConfigError, EmptyInputWarning, FastUNetWarning
from fastunet_core.grid import BLEND_MODES, TileGrid, edges
from fastunet_core.metadata import OUTPUT_NODATA
from fastunet_core.models.registry import size_divisor
from fastunet_core.progress import NullProgress, Progress
from fastunet_core.raster_input import Tile, TileReader, choose_bands, inspect_raster, open_raster
from fastunet_core.raster_output import (
    RasterRowWriter,
    block_rows,
    class_profile,
    describe_class_raster,
    describe_probs_raster,
    probs_profile,
)
from fastunet_core.stitching import RowAssembler, StreamingStitcher, classes_from_sums, percent_from_sums


@dataclass(frozen=True)
class PredictOptions:
    """How to run a prediction; ``None`` means "take it from the checkpoint"."""

    tile_size_px: int | None = None
    overlap_px: int | None = None
    batch_size: int = 4
    device: str = "auto"
    blend: str = "cosine"
    bands: tuple[int, ...] | None = None
    probs_path: Path | None = None
    overwrite: bool = False


@dataclass
class PredictResult:
    """What a prediction did."""

    output: Path
    probs_output: Path | None
    device: DeviceChoice
    tiles_total: int
    tiles_skipped: int
    seconds: float
    megapixels: float
    warnings: list[str] = field(default_factory=list)


def predict_raster(raster: str | Path, model: str | Path | LoadedModel, output: str | Path,
                   options: PredictOptions | None = None, progress: Progress | None = None) -> PredictResult:
    """Segment ``raster`` with ``model`` (a checkpoint path or a loaded model) into ``output``.

    Raises a :class:`~fastunet_core.errors.FastUNetError` subclass for anything the user can fix; in that
    case, and on cancellation, no output file is left behind.
    """
    opts = options or PredictOptions()
    prog = progress or NullProgress()
    t0 = time.perf_counter()
    out = Path(output)
    check_writable(out, opts.overwrite)
    if opts.probs_path is not None:
        check_writable(Path(opts.probs_path), opts.overwrite)
    if opts.blend not in BLEND_MODES:
        raise ConfigError(f"unknown blend mode {opts.blend!r}; choose one of {', '.join(BLEND_MODES)}")
    if opts.batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {opts.batch_size}")

    loaded = model if isinstance(model, LoadedModel) else load_checkpoint(model)
    meta = loaded.meta
    tile = opts.tile_size_px or meta.tile_size_px
    overlap = meta.overlap_px if opts.overlap_px is None else opts.overlap_px
    divisor = size_divisor(meta.architecture, meta.arch_args)
    if tile % divisor:
        raise ConfigError(
            f"tile size {tile} px is not a multiple of {divisor}, which {meta.architecture} needs "
            f"(one halving per level); use e.g. --tile {max(divisor, tile // divisor * divisor)}"
        )

    with open_raster(raster) as src, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FastUNetWarning)
        info = inspect_raster(src)
        bands = choose_bands(info, meta.input, opts.bands)
        if info.dtype != meta.input.dtype:
            warnings.warn(
                f"{info.path.name} is {info.dtype} but the model was trained on {meta.input.dtype} input "
                f"(scaled from {meta.input.value_range}); results may be poor",
                FastUNetWarning, stacklevel=2,
            )
        device = resolve_device(opts.device)
        prog.message(f"device: {device.describe()}")
        engine = TorchEngine(loaded.model, device)
        grid = TileGrid.for_raster(src.width, src.height, tile, overlap)
        reader = TileReader(src, bands, meta.input, tile)

        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(atomic_output(out, opts.overwrite))
            cprof = class_profile(src)
            dst = stack.enter_context(rasterio.open(tmp, "w", **cprof))
            describe_class_raster(dst, meta, info.path)
            class_rows = RowAssembler(edges(grid.rows), len(edges(grid.cols)) - 1, src.width, 1, np.dtype(np.uint8),
                                      block_rows(cprof), RasterRowWriter(dst))
            prob_rows = None
            if opts.probs_path is not None:
                ptmp = stack.enter_context(atomic_output(Path(opts.probs_path), opts.overwrite))
                pprof = probs_profile(src, meta.n_classes)
                pdst = stack.enter_context(rasterio.open(ptmp, "w", **pprof))
                describe_probs_raster(pdst, meta)
                prob_rows = RowAssembler(edges(grid.rows), len(edges(grid.cols)) - 1, src.width, meta.n_classes,
                                         np.dtype(np.uint8), block_rows(pprof), RasterRowWriter(pdst))
            class_ids = meta.class_ids

            def finish_cell(ly: int, x0: int, sums: np.ndarray, wsum: np.ndarray) -> None:
                class_rows.put(ly, x0, classes_from_sums(sums, wsum, class_ids, OUTPUT_NODATA)[None])
                if prob_rows is not None:
                    prob_rows.put(ly, x0, percent_from_sums(sums, wsum, OUTPUT_NODATA))

            stitcher = StreamingStitcher(grid, meta.n_classes, opts.blend, finish_cell)
            skipped = _run_tiles(grid, reader, engine, stitcher, opts.batch_size, prog)
            stitcher.check_complete()
            if skipped == grid.n_tiles:
                warnings.warn(f"{info.path.name} holds no valid pixel: the output is all nodata",
                              EmptyInputWarning, stacklevel=2)
    messages = [str(w.message) for w in caught if issubclass(w.category, FastUNetWarning)]
    for w in caught:  # hand every warning on to the caller (the CLI prints ours from the result)
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return PredictResult(out, Path(opts.probs_path) if opts.probs_path else None, device, grid.n_tiles, skipped,
                         time.perf_counter() - t0, info.width * info.height / 1e6, messages)


def _run_tiles(grid: TileGrid, reader: TileReader, engine: TorchEngine, stitcher: StreamingStitcher,
               batch_size: int, prog: Progress) -> int:
    """Read, run and stitch every tile in row-major order; return how many were skipped (no data)."""
    prog.start(grid.n_tiles, "tiles")
    batch: list[Tile] = []
    skipped = 0

    def flush() -> None:
        if prog.is_cancelled():
            raise CancelledError("cancelled; no output was written")
        probs = engine(np.stack([t.data for t in batch]))
        for t, p in zip(batch, probs, strict=True):
            h, w = t.valid.shape
            stitcher.add(t.row, t.col, p[:, :h, :w], t.valid)
        prog.advance(len(batch))
        batch.clear()

    for row, col, window in grid.windows():
        valid = reader.read_valid(window)
        if not valid.any():
            stitcher.add(row, col, None, None)
            skipped += 1
            prog.advance(1)
            continue
        batch.append(reader.read(row, col, window, valid))
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    return skipped
