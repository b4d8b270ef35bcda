"""Batch prediction over many rasters: input expansion, sharding across ranks, a summary file.

One failing input is recorded and skipped; it does not stop the others. ``skip_existing`` makes a re-run
after an interruption continue where it stopped (outputs appear only when complete, so an existing output
is a finished one).
"""

from __future__ import annotations

import csv
import glob
import json
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import rasterio
from rasterio.errors import NotGeoreferencedWarning

from fastunet_core.errors import CancelledError, ConfigError, FastUNetError, InputRasterError
from fastunet_core.hints import setting
from fastunet_core.inference.predict import PredictOptions, Predictor
from fastunet_core.inference.segment import Stage, segment_raster
from fastunet_core.io.atomic import atomic_output
from fastunet_core.io.output_files import head_path
from fastunet_core.io.sources import RasterSource, is_virtual, raster_source
from fastunet_core.io.targets import Role, check_distinct, make_folder
from fastunet_core.polygons.options import VectorizeOptions
from fastunet_core.runtime import distributed
from fastunet_core.runtime.progress import NullProgress, Progress

RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img", ".png", ".jpg", ".jpeg")
STATUS_OK, STATUS_FAILED, STATUS_SKIPPED, STATUS_EMPTY = "ok", "failed", "skipped", "empty"
STATUS_CANCELLED, STATUS_NOT_STARTED = "cancelled", "not started"  # a stopped run's summary (Ctrl-C, SIGTERM)


@dataclass
class BatchItem:
    """The outcome for one input raster."""

    input: str
    output: str
    status: str
    seconds: float = 0.0
    megapixels: float = 0.0
    device: str = ""
    rank: int = 0
    message: str = ""
    error: str = ""  # the error's class for a failed input (e.g. OutputExistsError), so callers add their hints


@dataclass
class BatchResult:
    """All outcomes, in input order."""

    items: list[BatchItem] = field(default_factory=list)
    # why the run stopped early (Ctrl-C, SIGTERM, the progress's cancel): the rest are cancelled / not started
    stopped: BaseException | None = None

    @property
    def failed(self) -> list[BatchItem]:
        """Items that failed."""
        return [i for i in self.items if i.status == STATUS_FAILED]

    @property
    def all_succeeded(self) -> bool:
        """True when no input failed."""
        return not self.failed


def expand_inputs(specs: Sequence[str | Path]) -> list[RasterSource]:
    """Turn files, folders, glob patterns and list files (.txt, one path per line) into raster paths.

    Order is kept (folders and globs sorted); duplicates are dropped. A spec that matches nothing is an
    error, so a typo does not silently process zero files.
    """
    out: list[RasterSource] = []
    for spec in specs:
        s = os.fspath(spec)
        if is_virtual(s):  # GDAL virtual path or URL: to GDAL exactly as typed
            out.append(raster_source(s))
            continue
        p = Path(s)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in RASTER_SUFFIXES)
            if not found:
                raise InputRasterError(f"folder {p} holds no raster ({', '.join(RASTER_SUFFIXES)})")
            out += found
        elif any(ch in s for ch in "*?[") and not p.exists():
            found = sorted(Path(m) for m in glob.glob(s, recursive=True) if Path(m).is_file())
            if not found:
                raise InputRasterError(f"pattern {s!r} matches no file")
            out += found
        elif p.suffix.lower() == ".txt" and p.is_file():
            lines = [ln.strip() for ln in p.read_text().splitlines()]
            out += [(p.parent / ln) if not Path(ln).is_absolute() else Path(ln)
                    for ln in lines if ln and not ln.startswith("#")]
        else:
            out.append(p)
    seen: set[RasterSource] = set()
    unique = []
    for q in out:
        key = q.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(q)
    return unique


def output_name(raster: RasterSource, suffix: str = "_classes") -> str:
    """Derive an output file name from an input raster's name."""
    return f"{raster.stem}{suffix}.tif"


def check_unique_outputs(inputs: Sequence[RasterSource]) -> None:
    """Refuse inputs whose derived output names would collide (same name in different folders)."""
    names: dict[str, RasterSource] = {}
    for p in inputs:
        n = output_name(p)
        if n in names:
            raise ConfigError(f"{names[n]} and {p} would both be written as {n}; rename one or run them separately")
        names[n] = p


@dataclass(frozen=True)
class BatchTargets:
    """What a batch run writes for one input."""

    classes: Path
    probs: Path | None
    vector: Path | None


def batch_targets(raster: RasterSource, out_dir: Path, with_probs: bool, with_vector: bool) -> BatchTargets:
    """Return the outputs of ``raster`` in ``out_dir``."""
    out = out_dir / output_name(raster)
    return BatchTargets(out, out_dir / output_name(raster, "_probs") if with_probs else None,
                        out.with_suffix(".gpkg") if with_vector else None)


def _peek(path: RasterSource) -> rasterio.io.DatasetReader:
    """Open ``path`` for a look at its size or tags, quietly.

    A raster without georeferencing is refused later, in its own line of the summary, not by rasterio's
    warning (with its site-packages path) here.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(path)


def _written_by_us(path: RasterSource) -> bool:
    try:
        with _peek(path) as ds:
            return ds.tags().get("SOFTWARE") == "fastunet-geo"
    except Exception:  # not a raster we can read: certainly not one of our outputs
        return False


def exclude_own_outputs(inputs: Sequence[RasterSource], out_dir: Path, with_probs: bool = False,
                        with_vector: bool = False, extra: Sequence[Role] = (),
                        progress: Progress | None = None) -> list[RasterSource]:
    """Return ``inputs`` without this run's own outputs; refuse an output that would replace an input.

    Class and probability rasters that fastunet-geo wrote (tagged ``SOFTWARE=fastunet-geo``) are left out,
    with a note: with ``--out-dir`` equal to the input folder a rerun finds the first run's outputs among
    its inputs, and a folder that holds earlier outputs (``NAME_classes.tif`` beside ``NAME.tif``) is no
    list of rasters to segment either. Any other input at an output's place, or the same file as an output
    (links), is refused, as are outputs that are the same file as each other or as ``extra`` files (the
    model, the summary).
    """
    roles: list[Role] = []
    for p in inputs:
        t = batch_targets(p, out_dir, with_probs, with_vector)
        roles.append(Role(f"output of {p.name}", t.classes))
        if t.probs is not None:
            roles.append(Role(f"probabilities of {p.name}", t.probs))
        if t.vector is not None:
            from fastunet_core.io.vector_output import output_roles  # pyogrio: only with polygons

            roles += output_roles(t.vector, f"polygons of {p.name}")
    places = {os.path.realpath(r.path) for r in roles}
    kept = []
    for p in inputs:
        if not _written_by_us(p):
            kept.append(p)
        elif progress is not None:
            why = ("it is an output of this command" if os.path.realpath(p) in places else
                   "fastunet-geo wrote it (a class map or probabilities of an earlier run); give it alone, with "
                   f"{setting('output')} instead of an output folder, to segment it anyway")
            progress.message(f"left out {p}: {why}")
    if inputs and not kept:
        raise InputRasterError(f"every input is an output of fastunet-geo (e.g. {inputs[0]}), left out; give the "
                               "rasters to segment")
    check_distinct([*(Role("input raster", p) for p in kept), *extra], roles)
    return kept


def pixel_count(path: RasterSource) -> int:
    """Width x height of a raster, or 0 when it cannot be opened (it will fail later, with its reason)."""
    try:
        with _peek(path) as ds:
            return int(ds.width) * int(ds.height)
    except Exception:  # any unreadable input: sharding only needs a weight
        return 0


def shard(inputs: Sequence[RasterSource], world_size: int, rank: int,
          sizes: Sequence[int] | None = None) -> list[RasterSource]:
    """Return this rank's share of ``inputs``, balanced by pixel count (largest first, to the lightest rank).

    Deterministic: every rank computes the same assignment. Order within a share follows the input order.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"bad rank {rank} for world size {world_size}")
    weights = list(sizes) if sizes is not None else [pixel_count(p) for p in inputs]
    load = [0] * world_size
    owner = [0] * len(inputs)
    for i in sorted(range(len(inputs)), key=lambda i: (-weights[i], i)):
        r = min(range(world_size), key=lambda r: (load[r], r))
        owner[i] = r
        load[r] += max(weights[i], 1)
    return [p for i, p in enumerate(inputs) if owner[i] == rank]


def predict_many(inputs: Sequence[RasterSource], predictor: Predictor, out_dir: Path, with_probs: bool = False,
                 skip_existing: bool = False, progress: Progress | None = None, rank: int = 0,
                 vectorize: VectorizeOptions | None = None) -> BatchResult:
    """Segment every input into ``out_dir``; failures are recorded, not raised.

    With ``vectorize`` options, each class map is also turned into ``NAME_classes.gpkg``.
    """
    prog = progress or NullProgress()
    if not out_dir.is_dir():
        raise ConfigError(f"output folder does not exist: {out_dir}")
    check_unique_outputs(inputs)
    model = [Role("model", predictor.model_path)] if predictor.model_path is not None else []
    inputs = exclude_own_outputs(inputs, out_dir, with_probs, vectorize is not None, model, prog)
    sizes = [pixel_count(p) for p in inputs]
    prog.start(sum(sizes) / 1e6, "Mpx")
    result = BatchResult()
    for index, (raster, size) in enumerate(zip(inputs, sizes, strict=True)):
        if prog.is_cancelled():
            result.stopped = CancelledError(f"cancelled before {raster.name} started")
            result.items += _not_started(inputs[index:], sizes[index:], out_dir, with_probs, vectorize, rank)
            break
        t = batch_targets(raster, out_dir, with_probs, vectorize is not None)
        out, probs, vector = t.classes, t.probs, t.vector
        heads_out = predictor.class_outputs(out)  # one class raster per output head of an ONNX model
        item = BatchItem(str(raster), ";".join(map(str, heads_out)), STATUS_OK, megapixels=size / 1e6,
                         device=predictor.device.name, rank=rank)
        # polygons per head too: NAME_classes_headK.gpkg (see segment_raster)
        vectors = [] if vector is None else [vector] if len(heads_out) == 1 else \
            [head_path(vector, k) for k in range(len(heads_out))]
        done_before = all(p.exists() for p in [*heads_out, *vectors])
        if skip_existing and done_before and (probs is None or probs.exists()):
            item.status, item.message = STATUS_SKIPPED, "output exists"
        else:
            prog.status(raster.name)
            t0 = time.perf_counter()
            try:
                done = segment_raster(raster, predictor, out, probs_output=probs, vector_output=vector,
                                      vectorize=vectorize, progress=_Scaled(prog, size / 1e6).stage)
                r = done.prediction
                item.megapixels = r.megapixels
                if r.tiles_skipped == r.tiles_total:
                    item.status = STATUS_EMPTY
                item.message = "; ".join(done.warnings)
            except (CancelledError, KeyboardInterrupt) as exc:  # the user stopped the whole run, not just this sheet
                item.status, item.message = STATUS_CANCELLED, str(exc) or "interrupted"
                item.seconds = round(time.perf_counter() - t0, 3)
                result.items.append(item)
                result.items += _not_started(inputs[index + 1:], sizes[index + 1:], out_dir, with_probs, vectorize,
                                             rank)
                result.stopped = exc
                break
            except (FastUNetError, OSError) as exc:  # one bad sheet must not stop the campaign
                item.status, item.message, item.error = STATUS_FAILED, str(exc), type(exc).__name__
            item.seconds = round(time.perf_counter() - t0, 3)
        result.items.append(item)
    return result


def _not_started(inputs: Sequence[RasterSource], sizes: Sequence[int], out_dir: Path, with_probs: bool,
                 vectorize: VectorizeOptions | None, rank: int) -> list[BatchItem]:
    """Summary rows for the inputs a stopped run did not reach."""
    return [BatchItem(str(p), str(batch_targets(p, out_dir, with_probs, vectorize is not None).classes),
                      STATUS_NOT_STARTED, megapixels=size / 1e6, rank=rank)
            for p, size in zip(inputs, sizes, strict=True)]


@dataclass
class BatchRun:
    """A finished :func:`run_batch`: every rank's outcomes in input order, and the summary file (main rank)."""

    result: BatchResult
    summary: Path | None
    is_main: bool


def run_batch(inputs: Sequence[RasterSource], model: Path, out_dir: Path, options: PredictOptions,
              with_probs: bool = False, summary_path: Path | None = None, skip_existing: bool = False,
              vectorize: VectorizeOptions | None = None, progress: Progress | None = None,
              dist: distributed.DistContext | None = None) -> BatchRun:
    """Segment ``inputs`` into ``out_dir`` on this process's share of them, and write the summary.

    Under torchrun (``dist`` from :func:`~fastunet_core.runtime.distributed.context_from_env`) every rank
    takes a share balanced by pixel count (:func:`shard`), the outcomes are gathered, and the main rank
    writes the summary (``summary_path``, default ``out_dir/summary.csv``; .csv or .json). One failing input
    is recorded in the summary, not raised; cancellation is.
    """
    ctx = dist or distributed.DistContext()
    prog = progress or NullProgress()
    make_folder(out_dir, "output folder")
    summary_file = summary_path or out_dir / "summary.csv"
    if summary_file.is_dir():  # found now, not after every raster is done
        raise ConfigError(f"summary {summary_file} is a folder: give a file name, e.g. {summary_file / 'summary.csv'}")
    inputs = exclude_own_outputs(inputs, out_dir, with_probs, vectorize is not None,
                                 [Role("model", model), Role("summary", summary_file)], prog if ctx.is_main else None)
    predictor = Predictor(model, options)
    distributed.init(ctx, predictor.device.is_cuda)
    try:
        mine = shard(inputs, ctx.world_size, ctx.rank)
        if ctx.is_main:
            prog.device(predictor.device.describe())
        result = predict_many(mine, predictor, out_dir, with_probs, skip_existing, prog if ctx.is_main else None,
                              ctx.rank, vectorize)
        if result.stopped is not None and ctx.world_size > 1:  # the other processes' outcomes are not known here
            raise _stopped(result.stopped, None)
        everything = [item for part in distributed.all_gather(result.items, ctx) for item in part]
    finally:
        distributed.shutdown()
    order = {str(p): i for i, p in enumerate(inputs)}
    merged = BatchResult(sorted(everything, key=lambda item: order.get(item.input, len(order))))
    summary = write_summary(merged, summary_file) if ctx.is_main else None
    if result.stopped is not None:  # a scheduler's log of where it stopped; the same command continues from there
        raise _stopped(result.stopped, summary)
    return BatchRun(merged, summary, ctx.is_main)


def _stopped(reason: BaseException, summary: Path | None) -> CancelledError:
    """Return the error a stopped batch ends with: why it stopped, and where its summary is."""
    text = str(reason) or "interrupted"
    if summary is not None:
        text += f"; {summary} lists the rasters done, cancelled and not started"
    return CancelledError(f"{text}; to continue, run the same command again with {setting('skip_existing')} "
                          "(it keeps the rasters already done)")


class _Scaled:
    """Map one raster's tile progress onto the batch's megapixel progress."""

    def __init__(self, parent: Progress, megapixels: float) -> None:
        self.parent = parent
        self.megapixels = megapixels
        self.per_tile = 0.0

    def stage(self, name: Stage) -> Progress:
        """Report the prediction (most of the time) to the batch's bar; the other stages to nothing."""
        return self if name == "predict" else NullProgress()

    def start(self, total: float, label: str) -> None:
        self.per_tile = self.megapixels / max(total, 1)

    def advance(self, n: float = 1) -> None:
        self.parent.advance(n * self.per_tile)

    def is_cancelled(self) -> bool:
        return self.parent.is_cancelled()

    def message(self, text: str) -> None:
        self.parent.message(text)

    def status(self, text: str) -> None:
        self.parent.status(text)

    def device(self, text: str) -> None:
        """Drop it: the batch says its device once, not once per raster."""


def write_summary(result: BatchResult, path: Path, overwrite: bool = True) -> Path:
    """Write the outcomes as CSV or JSON (by the file's extension)."""
    rows = [asdict(i) for i in result.items]
    with atomic_output(path, overwrite=overwrite) as tmp:
        if path.suffix.lower() == ".json":
            tmp.write_text(json.dumps(rows, indent=2))
        else:
            with tmp.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(BatchItem.__dataclass_fields__))
                writer.writeheader()
                writer.writerows(rows)
    return path
