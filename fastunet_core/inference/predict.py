"""``predict_raster``: segment a GeoTIFF into a georeferenced class map, streaming, in bounded memory.

raster -> tile windows (grid) -> tiles read and normalised (raster_input) -> model (engine) ->
probabilities blended per cell (stitching) -> finished block rows -> tiled GeoTIFF (raster_output),
written to a temporary file beside the target and renamed when complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.errors
from rasterio.windows import Window

from fastunet_core.errors import (
    CancelledError,
    ConfigError,
    DtypeMismatchWarning,
    EmptyInputWarning,
    FastUNetError,
    FastUNetWarning,
    GPUMemoryError,
    GPUMemoryWarning,
    HostMemoryError,
    InputRangeWarning,
    InputRasterError,
    NonFiniteError,
    ResolutionMismatchWarning,
)
from fastunet_core.hints import hint, setting
from fastunet_core.inference.engine import CACHED, EXPORTED, make_engine
from fastunet_core.inference.heads import OutputHead
from fastunet_core.inference.onnx_cache import cached_weights_digest
from fastunet_core.inference.precision import PrecisionChoice, choose_precision
from fastunet_core.inference.resolution import (
    OUTPUT_GRIDS,
    ResolutionPlan,
    parse_resolution,
    plan_resolution,
    scaled_grid,
)
from fastunet_core.inference.tile_checks import check_overlap, check_tile_memory, check_tile_size, heavy_run_note
from fastunet_core.inference.tile_source import EmptyTile, TileItem, iter_tiles, prefetch
from fastunet_core.io.atomic import check_writable
from fastunet_core.io.output_files import head_path
from fastunet_core.io.raster_input import (
    OUT_OF_RANGE_WARN,
    Tile,
    TileReader,
    alpha_as_data,
    bounded_gdal_cache,
    check_crs,
    choose_bands,
    inspect_raster,
    open_raster,
    sample_value_range,
    tile_read_cache,
)
from fastunet_core.io.raster_output import (
    RasterRowWriter,
    add_overviews,
    block_rows,
    class_profile,
    describe_class_raster,
    describe_probs_raster,
    finish_class_raster,
    open_output,
    probs_profile,
)
from fastunet_core.io.resume import (
    PartialOutput,
    dataset_files,
    discard_partial,
    find_resume_rows,
    resumable_output,
    source_fingerprint,
    weights_digest,
)
from fastunet_core.io.targets import Role, check_distinct, target_locks
from fastunet_core.models.checkpoint_file import LoadedModel, open_model
from fastunet_core.models.deepness import ModelOverrides
from fastunet_core.models.metadata import OUTPUT_NODATA
from fastunet_core.models.registry import check_tile_multiple, size_divisor
from fastunet_core.runtime.device import DeviceChoice, default_batch_size, resolve_device
from fastunet_core.runtime.progress import NullProgress, Progress
from fastunet_core.tiling.grid import BLEND_MODES, TileGrid, edges
from fastunet_core.tiling.resample import resize_bilinear, resize_nearest
from fastunet_core.tiling.stitching import (
    ArrayOps,
    RowAssembler,
    RowWriter,
    StreamingStitcher,
    percent_from_sums,
)

STITCH_PLACES = ("auto", "host", "device")
RESOLUTION_TOLERANCE = 1.5  # warn when the raster's pixels are this many times larger or smaller than training's


@dataclass(frozen=True)
class PredictOptions:
    """How to run a prediction; ``None`` means "take it from the checkpoint"."""

    tile_size_px: int | None = None
    overlap_px: int | None = None
    # tiles per model call; None: 1 on CPUs (measured: no faster per tile at 4, and 4 tiles of activations
    # cost ~350 MB more; see README, "ONNX Runtime session options"), 4 on CUDA
    batch_size: int | None = None
    device: str = "auto"
    blend: str = "cosine"
    bands: tuple[int, ...] | None = None
    probs_path: Path | None = None
    overwrite: bool = False
    prefetch: bool = True  # read the next tiles on a background thread while the model runs
    precision: str = "auto"  # auto (fp32 on CPU, autocast on CUDA), fp32, or bf16 (faster on CPUs with bf16)
    engine: str = "auto"  # auto (ONNX Runtime on CPUs when installed, else PyTorch), torch, onnx
    # keep the finished rows of an interrupted run and continue from them next time (see fastunet_core.io.resume);
    # off: an interrupted run leaves nothing behind and every run starts over
    resume: bool = False
    cog: bool = False  # write the class raster as a Cloud Optimized GeoTIFF (else a tiled GeoTIFF with overviews)
    # for models whose file lacks them (Deepness-format ONNX): classes, resolution, threshold, output head
    model: ModelOverrides = field(default_factory=ModelOverrides)
    # auto: the model's resolution when the raster's differs by > 10 %; native: the raster's; or metres
    resolution: str | float = "auto"
    output_grid: str = "source"  # source: the class map on the raster's grid; model: on the grid the model ran on
    # where tiles are blended and classes decided: auto (on the GPU when a CUDA PyTorch engine runs the model,
    # else on the host), host, or device (the PyTorch engine's device, also the CPU: the tests compare the two)
    stitch: str = "auto"
    # segment a raster that has a geotransform but no CRS (its class map has none either); off: refused
    allow_no_crs: bool = False


@dataclass
class PredictResult:
    """What a prediction did.

    ``output``: the class raster (``outputs``: one per output head, ``output`` first); ``probs_output``: the
    probabilities or None; ``device``: where it ran and why; ``tiles_total``/``tiles_skipped`` (tiles without a
    valid pixel are not run); ``seconds`` of wall-clock time; ``megapixels`` of the raster; ``warnings`` (their
    text; the typed warnings were also issued), of which the first ``warnings_shown`` (those about the input,
    found before the first tile) were also sent to the progress as ``warning: ...`` messages before the tiles
    ran; ``notes``: what was assumed (e.g. an ONNX model's classes).
    """

    output: Path
    probs_output: Path | None
    device: DeviceChoice
    tiles_total: int
    tiles_skipped: int
    seconds: float
    megapixels: float
    warnings: list[str] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)  # one class raster per output head (``output`` first)
    notes: list[str] = field(default_factory=list)  # what was assumed or chosen, for the user
    resolution: str = ""  # the resolution the model ran at and why (also sent as a progress message)
    warnings_shown: int = 0  # the first warnings, already shown as progress messages (before the first tile)
    tiles_resumed: int = 0  # of ``tiles_total``, those an interrupted earlier run had finished (not run again)

    @property
    def warnings_not_shown(self) -> list[str]:
        """Return the warnings not sent to the progress during the run (those found from the first tile on)."""
        return self.warnings[self.warnings_shown:]


def predict_raster(raster: str | os.PathLike[str], model: str | Path | LoadedModel, output: str | Path,
                   options: PredictOptions | None = None, progress: Progress | None = None) -> PredictResult:
    """Segment ``raster`` with ``model`` (a checkpoint path or a loaded model) into ``output``.

    The raster is cut into overlapping square tiles (:mod:`fastunet_core.tiling.grid`), each tile's softmax
    probabilities are blended over the overlaps with raised-cosine weights and stitched as a stream (memory
    follows the raster's width, not its area; :mod:`fastunet_core.tiling.stitching`), then argmax per pixel.

    Args:
        raster: a GDAL-readable raster with a north-up geotransform; any band count and dtype (the model's
            ``input`` spec says which bands, and how raw values scale: ``(raw - lo) / (hi - lo)``, then
            mean/std). Pixels invalid in GDAL's dataset mask (nodata value, internal or external mask,
            alpha) or NaN are not classified.
        model: a checkpoint (.safetensors), a Deepness-format .onnx, an smp folder, or a :class:`LoadedModel`.
        output: the class raster to write: GeoTIFF, one uint8 band of class ids on the input's pixel grid
            (same CRS, transform, width and height), nodata 255, colour table, ``CLASSES`` tag, tiled with
            overviews; written to a temporary file and renamed when complete.
        options: tile size and overlap (px), batch size (tiles), device, engine, precision, bands,
            ``probs_path`` (per-class probabilities, uint8 percent, one band per class), resume, overwrite ...
        progress: receives tile counts, the device line, and the cancel question.

    Returns:
        :class:`PredictResult`: the outputs, device, tile counts, seconds, megapixels and warnings.

    Raises:
        FastUNetError: a subclass for anything the user can fix (InputRasterError, CheckpointError,
            ConfigError, DeviceError, OutputExistsError, OutputWriteError ...); in that case, and on
            CancelledError, no output file is left behind (an interrupted run keeps its finished rows for
            ``resume``).

    """
    opts = options or PredictOptions()
    return Predictor(model, opts).run(raster, output, opts.probs_path, progress)


class Predictor:
    """A model loaded once, on its device, ready to segment any number of rasters."""

    def __init__(self, model: str | Path | LoadedModel, options: PredictOptions | None = None) -> None:
        opts = options or PredictOptions()
        if opts.blend not in BLEND_MODES:
            raise ConfigError(f"unknown blend mode {opts.blend!r}; choose one of {', '.join(BLEND_MODES)}")
        if opts.batch_size is not None and opts.batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {opts.batch_size}")
        check_tile_size(opts.tile_size_px)
        self.options = opts
        self.model_path = None if isinstance(model, LoadedModel) else Path(model)
        # from a path: metadata only; the weights (and torch) are loaded only if the engine needs them
        self.loaded = model if isinstance(model, LoadedModel) else open_model(model, opts.model)
        meta = self.loaded.meta
        if self.loaded.onnx is None and opts.model.head not in (None, 0):  # an ONNX file checks its own heads
            raise ConfigError(f"{setting('head', opts.model.head)}: {self.loaded.path.name} has one output head "
                              "(0); choosing a head is for ONNX models with several outputs")
        self.tile = meta.tile_size_px if opts.tile_size_px is None else opts.tile_size_px
        self.overlap = meta.overlap_px if opts.overlap_px is None else opts.overlap_px
        self.notes: list[str] = [f"assumed {a}" for a in self.loaded.assumed]
        if opts.output_grid not in OUTPUT_GRIDS:
            raise ConfigError(f"unknown output grid {opts.output_grid!r}; choose one of {', '.join(OUTPUT_GRIDS)}")
        parse_resolution(opts.resolution)
        self.device = resolve_device(opts.device)
        self.batch_size = opts.batch_size or default_batch_size(self.device.is_cuda)
        self.run_batch = self.batch_size  # halved when the GPU runs out of memory, kept for later rasters
        if self.loaded.onnx is not None:
            self.precision = PrecisionChoice("as stored", "an ONNX file runs as it is")
            self._init_onnx_file()
            return
        self.heads = [OutputHead(meta.classes)]
        self.n_channels = meta.n_classes
        self.margin = 0
        check_tile_multiple(self.tile, meta.architecture, meta.arch_args)
        check_overlap(self.overlap, self.tile, opts.overlap_px is not None)
        self._check_one_tile_memory()
        shape = (1, meta.input.n_bands, self.tile, self.tile)
        self.precision = choose_precision(opts.precision, meta, self.device)
        if self.precision.precision == "bf16" and opts.precision == "auto" and opts.engine == "onnx":
            self.precision = PrecisionChoice("fp32", "the onnx engine runs fp32"
                                             + hint(" (bf16 runs with {})", "engine", value="torch"))
        self.engine, self.engine_name = make_engine(self.loaded, self.device, shape, opts.engine,
                                                    self.precision.precision, self.precision.fp32_layers)
        self._weights_digest: str | None = None
        self.device_arrays = self._device_arrays()

    def _device_arrays(self) -> ArrayOps | None:
        """Return the stitcher's arrays on the model's device when tiles are blended there (see ``stitch``)."""
        stitch = self.options.stitch
        if stitch not in STITCH_PLACES:
            raise ConfigError(f"unknown stitch place {stitch!r}; choose one of {', '.join(STITCH_PLACES)}")
        on_torch = hasattr(self.engine, "probs_tensor")
        if stitch == "device" and not on_torch:
            raise ConfigError(f"blending on the device needs the PyTorch engine, not {self.engine_name}")
        if stitch == "host" or not on_torch or (stitch == "auto" and not self.device.is_cuda):
            return None
        from fastunet_core.inference.device_stitch import TorchArrays

        return TorchArrays(self.device.device)

    def _init_onnx_file(self) -> None:
        """Run a Deepness-format ONNX file as it is: its heads, thresholds and output margin."""
        from fastunet_core.inference.onnx_file_engine import OnnxFileEngine

        spec = self.loaded.onnx
        assert spec is not None
        if self.options.engine == "torch":
            raise ConfigError(f"{spec.path.name} is an ONNX model: it runs with {setting('engine', 'auto')} or onnx, "
                              "not torch")
        self.tile = spec.input_size or self.tile
        engine = OnnxFileEngine(spec, self.device, self.tile)
        self.engine, self.engine_name = engine, f"onnxruntime ({engine.provider}, ONNX file)"
        self.margin = engine.margin
        check_overlap(self.overlap, self.tile, self.options.overlap_px is not None)
        if self.overlap < 2 * self.margin:
            self.notes.append(f"overlap raised from {self.overlap} to {2 * self.margin} px: the model's output "
                              f"is {2 * self.margin} px smaller than its input; the outer {self.margin} px of "
                              "the raster get no prediction")
            self.overlap = 2 * self.margin
            check_overlap(self.overlap, self.tile, given=False)
        self.device_arrays = None
        if self.options.stitch == "device":
            raise ConfigError(f"{spec.path.name} is an ONNX model: its tiles are blended on the host")
        self.heads, start = [], 0
        thresh = spec.seg_thresh if spec.seg_thresh_given else None
        for head in spec.heads:
            self.heads.append(OutputHead(head.classes, start, head.kind,
                                         spec.seg_thresh if head.kind == "sigmoid" else thresh))
            start += head.n_channels
        self.n_channels = start
        self._check_one_tile_memory()
        self._weights_digest = hashlib.blake2b(spec.path.read_bytes(), digest_size=16).hexdigest()

    def _check_one_tile_memory(self) -> None:
        """Refuse, before anything is loaded, a tile too large for the memory that no raster can shrink.

        A ``--tile`` given may be reduced to what a raster needs (:meth:`_tile_for`), and a batch is never more
        tiles than a raster has: the batch is checked per raster (:meth:`_check_batch_memory`), at the tile it runs.
        """
        if self.options.tile_size_px is None or self.loaded.onnx is not None:
            self._check_batch_memory(self.tile, 1)

    def _check_batch_memory(self, tile: int, n_tiles: int) -> None:
        """Refuse a batch of ``tile`` px tiles (as many as the raster has, at most) too large for the memory."""
        check_tile_memory(tile, self.loaded.meta.input.n_bands, self.n_channels, min(self.run_batch, n_tiles),
                          self.loaded.meta.tile_size_px)

    def _fingerprint(self, files: list[str], kind: str) -> dict[str, object] | None:
        """Return what must match for a partial output to be continued (None: the source is not local files).

        ``files``: every file the source dataset reads (see :func:`dataset_files`).
        """
        source = source_fingerprint(files)
        if source is None:
            return None
        if self._weights_digest is None:
            # a checkpoint file is hashed as stored (once per file version: the digest is remembered in the
            # cache, 0.1-0.3 s saved at each start); a model given in memory, as it is now (one whose weights
            # were not loaded is its file: the engine loaded them for itself and let the fp32 copy go)
            stored = self.model_path or (self.loaded.path if self.loaded.model is None else None)
            self._weights_digest = (cached_weights_digest(stored) if stored is not None and stored.is_file()
                                    else weights_digest(self.loaded.torch_model().state_dict()))
        o = self.options
        return {"source": source, "weights": self._weights_digest, "output": kind,
                "classes": [c.name for c in self.loaded.meta.classes], "tile": self.tile, "overlap": self.overlap,
                "blend": o.blend, "bands": list(o.bands) if o.bands else None, "precision": o.precision,
                "engine": self.engine_name.replace(EXPORTED, CACHED),  # the same whether this run wrote the export
                "resolution": str(o.resolution), "output_grid": o.output_grid}

    def _resume_plan(self, source_files: list[str],
                     targets: list[tuple[Path, str]]) -> tuple[list[dict[str, object]], int]:
        """Return each output's fingerprint and the rows all of them finished in an earlier run."""
        found = [self._fingerprint(source_files, kind) if self.options.resume else None for _, kind in targets]
        prints = [p for p in found if p is not None]
        if len(prints) < len(found):
            for target, _ in targets:
                discard_partial(target)
            return [{} for _ in targets], 0
        return prints, min(find_resume_rows(t, p) for (t, _), p in zip(targets, prints, strict=True))

    def run(self, raster: str | os.PathLike[str], output: str | Path, probs_output: str | Path | None = None,
            progress: Progress | None = None) -> PredictResult:
        """Segment one raster into ``output`` (and per-class percent into ``probs_output``)."""
        opts = self.options
        prog = progress or NullProgress()
        t0 = time.perf_counter()
        out = Path(output)
        probs = Path(probs_output) if probs_output is not None else None
        inputs = [Role("input raster", raster)]
        if self.model_path is not None:
            inputs.append(Role("model", self.model_path))
        heads_out = [Role("output", path) for path in self.class_outputs(out)]
        check_distinct(inputs, heads_out + ([Role(f"{setting('probs')} output", probs)] if probs is not None else []))
        partials: list[PartialOutput] = []
        try:
            with contextlib.ExitStack() as env:
                env.enter_context(target_locks([*self.class_outputs(out), probs]))
                for path in self.class_outputs(out):
                    check_writable(path, opts.overwrite)
                if probs is not None:
                    check_writable(probs, opts.overwrite)
                env.enter_context(bounded_gdal_cache())
                result = self._run(raster, out, probs, prog, t0, partials)
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", FastUNetWarning)
                    for path in result.outputs or [out]:
                        finish_class_raster(path, cog=opts.cog, overviews=False, overwrite=opts.overwrite)
                result.warnings += [str(w.message) for w in caught if issubclass(w.category, FastUNetWarning)]
                for w in caught:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
                return result
        except (CancelledError, KeyboardInterrupt) as exc:
            kept = [p for p in partials if p.kept]
            if not kept:
                raise CancelledError("cancelled; no output was written") from exc
            raise CancelledError(
                f"cancelled with {kept[0].rows_done} rows of {out.name} finished; they are kept in "
                f"{kept[0].path.name}: run the same command again to continue from there") from exc
        except MemoryError as exc:
            if isinstance(exc, FastUNetError):  # GPUMemoryError: it says what to lower already
                raise
            raise HostMemoryError(
                f"out of memory with {self.tile} px tiles, {self.run_batch} at a time ({_first_line(exc)}); use a "
                f"smaller {setting('tile')} (the model's is {self.loaded.meta.tile_size_px} px)"
                + (hint(" or {}", "batch_size", value=1) if self.run_batch > 1 else "")) from None

    def _run(self, raster: str | os.PathLike[str], out: Path, probs: Path | None, prog: Progress, t0: float,
             partials: list[PartialOutput]) -> PredictResult:
        opts, meta = self.options, self.loaded.meta
        with open_raster(raster) as source_ds, warnings.catch_warnings(record=True) as caught, \
                contextlib.ExitStack() as grid_stack:
            warnings.simplefilter("always", FastUNetWarning)
            info = inspect_raster(source_ds)
            check_crs(info, opts.allow_no_crs)
            if info.crs_wkt is None:
                warnings.warn(f"{info.path.name} has no CRS: the class map has none either (its coordinates are the "
                              "raster's, in no known system)", FastUNetWarning, stacklevel=2)
            bands = choose_bands(info, meta.input, opts.bands)
            alpha = alpha_as_data(info, bands)
            if alpha:
                which = ", ".join(map(str, alpha))
                warnings.warn(f"band {which} of {info.path.name} is tagged alpha but selected as model input: it is "
                              "read as data and marks no pixel as nodata (validity comes from the other bands' "
                              "nodata or masks)", FastUNetWarning, stacklevel=2)
            prog.device(f"{self.device.describe()}; engine: {self.engine_name}; precision "
                        f"{self.precision.precision}: {self.precision.reason}")
            if info.dtype != meta.input.dtype and not _both_float(info.dtype, meta.input.dtype):
                warnings.warn(
                    f"{info.path.name} is {info.dtype} but the model was trained on {meta.input.dtype} input "
                    f"(scaled from {meta.input.value_range}); results may be poor",
                    DtypeMismatchWarning, stacklevel=2,
                )
            plan = plan_resolution(opts.resolution, info.resolution_m, meta.resolution_m)
            tile, overlap, fitted = self._tile_for(info.width, info.height, plan.factor, info.path.name)
            src, tile_px, overlap_px, scale, resolution_text = self._run_grid(plan, source_ds, grid_stack, prog,
                                                                              tile, overlap)
            if not plan.resamples:
                warn_resolution_mismatch(info.path.name, info.resolution_m, meta.resolution_m)
            grid = TileGrid.for_raster(src.width, src.height, tile_px, overlap_px)
            self._check_batch_memory(tile, grid.n_tiles)  # at the tile it runs (reduced), before anything is read
            heavy = heavy_run_note(grid.n_tiles, tile, overlap, info.width * info.height, plan.factor)
            if heavy:
                prog.message(heavy)
            grid_stack.enter_context(tile_read_cache(source_ds, round(tile_px * source_ds.width / src.width)))
            reader = TileReader(src, bands, meta.input, tile, scale)
            warn_out_of_range(info.path.name, reader)
            shown = self._show_warnings(caught, prog)  # before the first tile: a long run is not wasted on them
            with contextlib.ExitStack() as stack:
                files = dataset_files(source_ds) if opts.resume else []
                stitcher = self._open_outputs(stack, src, raster, files, grid, out, probs, partials)
                if stitcher.start_row:
                    prog.message(f"resuming {out.name}: {stitcher.start_row} of {src.height} rows were finished "
                                 "by an earlier run")
                tiles = iter_tiles(grid, reader, stitcher.first_tile_row)
                if opts.prefetch:
                    tiles = prefetch(tiles, depth=2 * self.batch_size)
                # on cancel or error, stop the reader thread now, before ``src`` is closed (not when the
                # generator is collected: a traceback keeps it alive, and the thread would read a closed dataset)
                stack.callback(tiles.close)  # type: ignore[attr-defined]
                n_run = (len(grid.rows.starts) - stitcher.first_tile_row) * len(grid.cols.starts)
                skipped = self._run_tiles(tiles, n_run, stitcher, prog)
                stitcher.check_complete()
                if skipped == grid.n_tiles:
                    warnings.warn(f"{info.path.name} holds no valid pixel: the output is all nodata",
                                  EmptyInputWarning, stacklevel=2)
        messages = [str(w.message) for w in caught if issubclass(w.category, FastUNetWarning)]
        for w in caught:  # hand every warning on to the caller (the CLI prints ours from the result)
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return PredictResult(out, probs, self.device, grid.n_tiles, skipped, time.perf_counter() - t0,
                             info.width * info.height / 1e6, messages, self.class_outputs(out), [*self.notes, *fitted],
                             resolution_text, shown, grid.n_tiles - n_run)

    @staticmethod
    def _show_warnings(caught: list[warnings.WarningMessage], prog: Progress) -> int:
        """Send the warnings ``caught`` so far (about the input) to ``prog`` as messages; return how many."""
        texts = [str(w.message) for w in caught if issubclass(w.category, FastUNetWarning)]
        for text in texts:
            prog.message(f"warning: {text}")
        return len(texts)

    def _tile_for(self, width: int, height: int, factor: float, name: str) -> tuple[int, int, list[str]]:
        """Return the model tile and overlap this raster runs with, and a note when the chosen tile was reduced.

        A tile given larger than the raster needs (one tile covers it, padded by mirroring up to the tile) is
        reduced to the smallest that still covers it, but never below the model's own tile: the model then
        sees the same raster with less made-up border, in a fraction of the time and memory (``--tile 8192``
        on a 1024 px raster ran a 64 times larger tile). An ONNX file runs at the size it was made for.
        """
        meta = self.loaded.meta
        if self.loaded.onnx is not None or self.options.tile_size_px is None:
            return self.tile, self.overlap, []
        divisor = size_divisor(meta.architecture, meta.arch_args)
        need = math.ceil(max(width, height) / factor - 1e-6)  # the raster's longer side, in model pixels
        fit = math.ceil(max(need, meta.tile_size_px) / divisor) * divisor
        if fit >= self.tile:
            return self.tile, self.overlap, []
        note = (f"{setting('tile', self.tile)} is larger than {name} needs: ran with {fit} px tiles, one of which "
                f"covers it")
        return fit, min(self.overlap, fit - 1), [note]

    def _run_grid(self, plan: ResolutionPlan, src: rasterio.io.DatasetReader, stack: contextlib.ExitStack,
                  prog: Progress, tile: int, overlap: int) -> tuple[rasterio.io.DatasetReader, int, int, float, str]:
        """Return the dataset to tile, the tile size and overlap on it, the read scale, and what was done and why.

        ``tile`` and ``overlap`` are in model pixels (see :meth:`_tile_for`).

        Output on the source grid: tiles of the source grid, each read resampled to the model's tile size.
        Output on the model grid: a WarpedVRT at the model's resolution (bilinear), read as it is.
        """
        how = "as they are"
        result: tuple[rasterio.io.DatasetReader, int, int, float]
        if plan.resamples and self.options.output_grid == "model":
            from rasterio.enums import Resampling
            from rasterio.vrt import WarpedVRT

            transform, width, height = scaled_grid(src.transform, src.width, src.height, plan.factor)
            vrt = stack.enter_context(WarpedVRT(src, crs=src.crs, transform=transform, width=width, height=height,
                                                resampling=Resampling.bilinear))
            how = (f"resampled (bilinear) to a {width} x {height} grid; class map on that grid "
                   f"({setting('output_grid', 'model')})")
            result = (vrt, tile, overlap, 1.0)
        elif plan.resamples:
            tile_src = max(2, round(tile * plan.factor))
            overlap_src = min(tile_src - 1, round(overlap * plan.factor))
            how = (f"read resampled (bilinear) {plan.factor:.3g}x: {tile_src} px of the raster per {tile} px "
                   f"model tile; class map on the raster's grid")
            result = (src, tile_src, overlap_src, tile_src / tile)
        else:
            result = (src, tile, overlap, 1.0)
        prog.message(f"resolution: {plan.reason}; tiles {how}")
        return (*result, f"{plan.reason}; tiles {how}")

    def class_outputs(self, out: Path) -> list[Path]:
        """Return the class raster written per output head: ``out`` itself, or ``OUT_headK.tif`` for several."""
        if len(self.heads) == 1:
            return [out]
        return [head_path(out, k) for k in range(len(self.heads))]

    def _open_outputs(self, stack: contextlib.ExitStack, src: rasterio.io.DatasetReader,
                      raster: str | os.PathLike[str], source_files: list[str], grid: TileGrid, out: Path,
                      probs: Path | None, partials: list[PartialOutput]) -> StreamingStitcher:
        """Open the output rasters (partial files until the stack closes cleanly) and the stitcher.

        ``source_files``: every file the source dataset reads, for the resume fingerprint.
        """
        meta, overwrite = self.loaded.meta, self.options.overwrite
        if probs is not None and len(self.heads) > 1:
            raise ConfigError(f"the model has several output heads: choose one with {setting('head')} to write "
                              "probabilities")
        heads = self.heads
        class_paths = self.class_outputs(out)
        targets = [(path, "classes" if k == 0 else f"classes{k}") for k, path in enumerate(class_paths)]
        targets += [(probs, "probs")] if probs is not None else []
        prints, start_row = self._resume_plan(source_files, targets)
        y_edges, x_edges = edges(grid.rows), edges(grid.cols)
        source = Path(str(raster))
        profiles = [class_profile(src) for _ in class_paths]
        profiles += [probs_profile(src, meta.n_classes)] if probs is not None else []
        assemblers = []
        for k, ((target, kind), fp, profile) in enumerate(zip(targets, prints, profiles, strict=True)):
            part = stack.enter_context(resumable_output(target, fp, start_row, overwrite, self.options.resume))
            partials.append(part)
            if kind.startswith("classes") and not self.options.cog:  # overviews before the rename
                part.before_commit = functools.partial(add_overviews, target=target)
            # always a new file, written as one uninterrupted run writes it: a resumed output is byte-identical
            dst, watch = stack.enter_context(open_output(part.path, target, "w", **profile))
            if kind.startswith("classes"):
                describe_class_raster(dst, dataclasses.replace(meta, classes=heads[k].classes), source)
            else:
                describe_probs_raster(dst, meta)
            write = _tracked(RasterRowWriter(dst, watch), part, src.width)
            head = _copy_finished(part, start_row, block_rows(profile), write) if start_row else None
            assemblers.append(RowAssembler(y_edges, x_edges, profile["count"], np.dtype(np.uint8), block_rows(profile),
                                           int(profile["blockxsize"]), write, start_row, head))
        if self.options.resume:
            stack.push(functools.partial(_flush_when_stopped, assemblers))
        class_rows = assemblers[: len(heads)]
        prob_rows = assemblers[len(heads)] if probs is not None else None

        class_map: Callable[[OutputHead, Any, Any, int], np.ndarray] = OutputHead.class_map
        percent: Callable[[Any, Any, int], np.ndarray] = percent_from_sums
        if self.device_arrays is not None:
            from fastunet_core.inference.device_stitch import class_map_on_device, percent_on_device

            class_map, percent = class_map_on_device, percent_on_device

        def finish_cell(ly: int, x0: int, sums: Any, wsum: Any) -> None:
            for head, rows in zip(heads, class_rows, strict=True):
                rows.put(ly, x0, class_map(head, sums, wsum, OUTPUT_NODATA)[None])
            if prob_rows is not None:
                prob_rows.put(ly, x0, percent(sums, wsum, OUTPUT_NODATA))

        return StreamingStitcher(grid, self.n_channels, self.options.blend, finish_cell, start_row,
                                 self.device_arrays)

    def _run_tiles(self, tiles: Iterator[TileItem], n_tiles: int, stitcher: StreamingStitcher,
                   prog: Progress) -> int:
        """Run and stitch every tile; return how many were skipped (no data)."""
        prog.start(n_tiles, "tiles")
        batch: list[Tile] = []
        skipped = 0

        def flush() -> None:
            if prog.is_cancelled():
                raise CancelledError("cancelled")
            try:
                probs = self._infer(np.stack([t.data for t in batch]))
                if not getattr(self.engine, "checks_finite", False) and not np.isfinite(probs.sum()):
                    raise NonFiniteError("the model gives NaN or infinite outputs")
            except NonFiniteError as exc:
                t = batch[0]
                raise NonFiniteError(
                    f"the model {self.loaded.path} gives NaN or infinite outputs (tiles from row {t.row}, column "
                    f"{t.col} of the tile grid on); its weights overflow or are damaged, so no class map is "
                    "written") from exc
            m = self.margin
            for t, p in zip(batch, probs, strict=True):
                h, w = t.valid.shape
                hm, wm = t.model_hw or (h, w)
                covered = None
                if m:  # the output covers the input's centre: place it there, the border has no prediction
                    p = np.pad(p, ((0, 0), (m, m), (m, m)))
                    covered = np.ones((self.tile, self.tile), dtype=bool)
                    covered[:m] = covered[:, :m] = covered[self.tile - m :] = covered[:, self.tile - m :] = False
                p = p[:, :hm, :wm]
                if (hm, wm) != (h, w):  # read resampled: probabilities back onto the raster's window
                    p = resize_bilinear(np.asarray(p.cpu()) if self.device_arrays else p, h, w)
                    if self.device_arrays is not None:
                        p = self.device_arrays.asarray(p)
                    if covered is not None:
                        covered = resize_nearest(covered[:hm, :wm], h, w)
                valid = t.valid if covered is None else t.valid & covered[:h, :w]
                stitcher.add(t.row, t.col, p, valid)
            prog.advance(len(batch))
            batch.clear()

        for item in tiles:
            if isinstance(item, EmptyTile):
                stitcher.add(item.row, item.col, None, None)
                skipped += 1
                prog.advance(1)
                continue
            batch.append(item)
            if len(batch) >= self.batch_size:
                flush()
        if batch:
            flush()
        return skipped


    def _infer(self, data: np.ndarray) -> Any:
        """Run the engine on ``data`` in chunks of ``run_batch`` tiles, halving it on CUDA out-of-memory."""
        while True:
            try:
                n = self.run_batch
                chunks = [data[i:i + n] for i in range(0, len(data), n)]
                if self.device_arrays is not None:  # probabilities stay on the device for the stitcher
                    return _cat_tensors([self.engine.probs_tensor(c) for c in chunks])  # type: ignore[attr-defined]
                return np.concatenate([self.engine(c) for c in chunks])
            except Exception as exc:
                if _host_allocation_failed(exc):  # the engine's own words for it: a MemoryError, for run()
                    raise MemoryError(_first_line(exc)) from exc
                torch = sys.modules.get("torch")  # a CUDA run has imported it; an ONNX Runtime run never does
                if torch is None or not isinstance(exc, torch.OutOfMemoryError):
                    raise
                torch.cuda.empty_cache()
                if self.run_batch == 1:
                    raise GPUMemoryError(
                        f"the GPU ran out of memory even with one {self.tile} px tile at a time ({_first_line(exc)}); "
                        f"use a smaller {setting('tile')}, close other programs using the GPU, or "
                        f"{setting('device', 'cpu')}"
                    ) from None
                self.run_batch = max(1, self.run_batch // 2)
                warnings.warn(f"the GPU ran out of memory with batches of {n} tiles; continuing with "
                              f"{self.run_batch} (use {setting('batch_size', self.run_batch)} to start there)",
                              GPUMemoryWarning, stacklevel=2)


# how the engines say that host memory ran out: PyTorch's CPU allocator (a RuntimeError), ONNX Runtime's arena
HOST_ALLOCATION_FAILED = ("DefaultCPUAllocator: can't allocate memory", "Failed to allocate memory")


def _host_allocation_failed(exc: Exception) -> bool:
    """Return True when an engine's error says that the machine's memory (not a GPU's) ran out."""
    text = str(exc)
    return not isinstance(exc, MemoryError) and any(words in text for words in HOST_ALLOCATION_FAILED) \
        and "CUDA" not in text


def _cat_tensors(parts: list[Any]) -> Any:
    import torch

    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__


def _copy_finished(part: PartialOutput, rows: int, block: int, write: RowWriter) -> np.ndarray | None:
    """Copy the first ``rows`` rows of the earlier partial file into the new one, in the chunks one run writes.

    Whole blocks are written now; the rows of an unfinished last block are returned, to be written with the
    rest of their block (so the new file receives exactly the writes of an uninterrupted run).
    """
    if part.previous is None:
        raise RuntimeError("resuming needs the earlier partial file")
    full = rows // block * block
    try:
        with rasterio.open(part.previous) as old:
            for r in range(0, full, block):
                write(r, old.read(window=Window(0, r, old.width, min(block, rows - r))))
            return old.read(window=Window(0, full, old.width, rows - full)) if rows > full else None
    except rasterio.errors.RasterioIOError as exc:
        raise InputRasterError(f"the finished rows of an earlier run ({part.previous}) cannot be read; run again "
                               f"with {setting('no_resume')}") from exc


def _flush_when_stopped(assemblers: list[RowAssembler], exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: object) -> bool:
    """On Ctrl-C, SIGTERM or cancel: write every finished row, also of an unfinished block (resume redoes less)."""
    if exc_type is not None and issubclass(exc_type, (KeyboardInterrupt, CancelledError)):
        for rows in assemblers:
            rows.flush_finished()
    return False


def _tracked(write: RasterRowWriter, part: PartialOutput, width: int) -> RowWriter:
    """Wrap a writer so ``part`` knows how many rows are final.

    Blocks are written in file order: the rightmost block of a block row finishes its rows.
    """

    def tracked(row0: int, values: np.ndarray, col0: int = 0) -> None:
        write(row0, values, col0)
        if col0 + values.shape[2] == width:
            part.rows_done = row0 + values.shape[1]

    return tracked


def _both_float(a: str, b: str) -> bool:
    """float32 and float64 share their scaling (values, not bit patterns): no type warning between them."""
    return all(np.issubdtype(np.dtype(t), np.floating) for t in (a, b))


def _dtype_within(dtype: str, value_range: tuple[float, float]) -> bool:
    """Return True when every value of the integer type ``dtype`` lies within ``value_range``."""
    if not np.issubdtype(np.dtype(dtype), np.integer):
        return False
    info = np.iinfo(np.dtype(dtype))
    return value_range[0] <= info.min and info.max <= value_range[1]


def warn_out_of_range(name: str, reader: TileReader) -> None:
    """Warn when the raster's values lie largely outside the range the model scales to [0, 1].

    A uint16 or float raster fed to a model trained on 0..255 (or reflectance 0..10000 to a 0..1 model) runs
    without any error and gives garbage; a sample of a few windows shows it before the run. Integer pixels
    whose type cannot hold a value outside the range (uint8 for a 0..255 model) are not read for it.
    """
    if _dtype_within(reader.src.dtypes[reader.bands[0] - 1], reader.spec.value_range):
        return
    sample = sample_value_range(reader)
    if sample.share_outside <= OUT_OF_RANGE_WARN:
        return
    lo, hi = reader.spec.value_range
    warnings.warn(
        f"{100 * sample.share_outside:.0f} % of the valid pixels sampled from {name} lie outside the value range "
        f"{lo:g}..{hi:g} the model scales to its input (sampled values {sample.low:g} to {sample.high:g}); the "
        f"model never saw such values, so results may be garbage. Use a model made for this data "
        f"({setting('init_value_range')}{hint(' or {}', 'train_value_range')}) or rescale the raster (e.g. "
        f"{setting('rescale')})",
        InputRangeWarning, stacklevel=3,
    )


def warn_resolution_mismatch(name: str, raster_m: float | None, model_m: float | None) -> None:
    """Warn when the raster's ground resolution is far from the one the model was trained at.

    A CNN learns objects at the size they had in training: at another pixel size buildings and roads look
    larger or smaller than anything it has seen, and results fall apart without any error.
    """
    if not raster_m or not model_m:
        return
    ratio = raster_m / model_m
    if 1 / RESOLUTION_TOLERANCE <= ratio <= RESOLUTION_TOLERANCE:
        return
    finer = "finer" if ratio < 1 else "coarser"
    warnings.warn(
        f"{name} has {raster_m:.3g} m pixels, {max(ratio, 1 / ratio):.1f}x {finer} than the {model_m:.3g} m the "
        f"model was trained on; objects will not look the size the model learned. Resample it to about "
        f"{model_m:.3g} m first (e.g. gdalwarp -tr with that pixel size in a metric CRS), or run with "
        f"{setting('resolution', f'{model_m:.3g}')}",
        ResolutionMismatchWarning, stacklevel=3,
    )
