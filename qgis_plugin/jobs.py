"""One segmentation run as plain data, and the function that runs it with the core's tools.

The dock's task and the Processing algorithm both build a :class:`SegmentJob` and call
:func:`run_segment_job`, a thin call of the core's ``segment_raster`` (crop to the processed area, predict,
vectorise); no pipeline step is written again here. Nothing in this
module touches QGIS, so it runs on a worker thread. Heavy imports happen inside the function.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastunet_core.io.area import AreaKind, AreaSpec  # plain data, no heavy import

from .progress_bridge import ProgressSink, StageProgress

if TYPE_CHECKING:
    from .engine_cache import PredictorCache

__all__ = ["AUTO", "AreaKind", "AreaSpec", "SegmentJob", "SegmentOutcome", "run_segment_job"]
AUTO = -1.0  # simplify / minimum area: derived from the raster's pixel size (see resolve_polygon_options)
SIMPLIFY_PIXELS = 1.0  # the automatic simplify tolerance: one pixel, which smooths the pixel staircase
MIN_AREA_PIXELS = 2.0  # the automatic minimum area: polygons under two pixels (single-pixel speckle) are dropped
ClassAreaRow = tuple[int, str, int, float, float]  # class id, name, pixels, area (m²), share of the classified area


@dataclass(frozen=True)
class SegmentJob:
    """Everything one segmentation run needs, in plain values (safe to hand to a worker thread)."""

    raster: Path  # a file the engine can read
    model: Path
    class_output: Path
    polygons_output: Path | None = None  # None: do not vectorise
    tile_size_px: int | None = None  # None: the model's
    overlap_px: int | None = None
    batch_size: int | None = None  # None: the core's default for the device (1 on a CPU, 4 on CUDA)
    device: str = "auto"
    area: AreaSpec = field(default_factory=AreaSpec)
    simplify_m: float = AUTO  # AUTO: one pixel
    min_area_m2: float = AUTO  # AUTO: two pixels
    bands: tuple[int, ...] | None = None  # raster bands in the model's channel order; None: the model's
    overwrite: bool = True
    work_dir: Path | None = None  # where the cropped input goes (default: the system's temp folder)
    resolution: str = "auto"  # ground resolution to run the model at: auto, native or metres
    output_grid: str = "source"  # the class raster's grid when resampling: source or model

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["area"] = self.area.to_dict()
        return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SegmentJob:
        """Rebuild from :meth:`to_dict`."""
        values = dict(d)
        for key in ("raster", "model", "class_output", "polygons_output", "work_dir"):
            values[key] = Path(values[key]) if values.get(key) is not None else None
        values["area"] = AreaSpec.from_dict(values["area"])
        values["bands"] = tuple(values["bands"]) if values.get("bands") else None
        return cls(**values)


@dataclass
class SegmentOutcome:
    """What a run wrote."""

    class_raster: Path
    polygons: Path | None
    files: list[Path]
    classes: tuple[tuple[int, str, tuple[int, int, int]], ...]  # id, name, RGB, from the model
    device: str
    tiles: int
    features: int
    seconds: float
    warnings: list[str] = field(default_factory=list)
    class_areas: tuple[ClassAreaRow, ...] = ()  # per class in the class raster, largest first
    # a model with several output heads (Deepness ONNX): the other heads' class rasters and polygons, as the
    # core names them (``class_raster`` and ``polygons`` are head 0's, ``X_head0.tif``, ``X_head0.gpkg``)
    more_heads: tuple[tuple[Path, Path | None], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {"class_raster": str(self.class_raster), "polygons": str(self.polygons) if self.polygons else None,
                "files": [str(f) for f in self.files], "classes": [list(c) for c in self.classes],
                "device": self.device, "tiles": self.tiles, "features": self.features, "seconds": self.seconds,
                "warnings": list(self.warnings), "class_areas": [list(c) for c in self.class_areas],
                "more_heads": [[str(r), str(p) if p else None] for r, p in self.more_heads]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SegmentOutcome:
        """Rebuild from :meth:`to_dict`."""
        classes = tuple((int(c[0]), str(c[1]), (int(c[2][0]), int(c[2][1]), int(c[2][2]))) for c in d["classes"])
        return cls(Path(d["class_raster"]), Path(d["polygons"]) if d["polygons"] else None,
                   [Path(f) for f in d["files"]], classes, d["device"], int(d["tiles"]), int(d["features"]),
                   float(d["seconds"]), list(d["warnings"]),
                   tuple((int(c[0]), str(c[1]), int(c[2]), float(c[3]), float(c[4])) for c in d.get("class_areas", ())),
                   tuple((Path(r), Path(p) if p else None) for r, p in d.get("more_heads", ())))


def run_segment_job(job: SegmentJob, sink: ProgressSink, predictors: PredictorCache | None = None) -> SegmentOutcome:
    """Run the job with the core's :func:`~fastunet_core.inference.segment.segment_raster` (crop, segment, vectorise).

    ``predictors``: where a long-lived engine process keeps the loaded model for the next run (None: load it).

    Raises the core's errors (:class:`~fastunet_core.errors.FastUNetError` subclasses, CancelledError included);
    on failure or cancel the core leaves none of this run's outputs behind.
    """
    from fastunet_core.inference.predict import PredictOptions
    from fastunet_core.inference.segment import segment_raster
    from fastunet_core.models.checkpoint_file import read_metadata
    from fastunet_core.polygons.class_area import class_areas
    from fastunet_core.polygons.vectorize import VectorizeOptions

    t0 = time.perf_counter()
    meta = read_metadata(job.model)
    vectorize = job.polygons_output is not None
    stages = {"crop": (0, 5), "predict": (5, 85 if vectorize else 100), "vectorize": (85, 100)}
    sink.log(f"processing {job.area.describe()} of {job.raster.name}")
    vopts = None
    if vectorize:
        # the class raster keeps the raster's pixels
        simplify_m, min_area_m2 = resolve_polygon_options(job.simplify_m, job.min_area_m2, job.raster)
        sink.log(f"polygons: simplify {simplify_m:.3g} m, minimum area {min_area_m2:.3g} m²")
        vopts = VectorizeOptions(simplify_m=simplify_m, min_area_m2=min_area_m2, overwrite=job.overwrite)
    options = PredictOptions(tile_size_px=job.tile_size_px, overlap_px=job.overlap_px, batch_size=job.batch_size,
                             device=job.device, overwrite=job.overwrite, bands=job.bands,
                             resolution=job.resolution, output_grid=job.output_grid)
    model = predictors.predictor(job.model, options, sink) if predictors is not None else job.model
    done = segment_raster(job.raster, model, job.class_output, options, vector_output=job.polygons_output,
                          vectorize=vopts, area=job.area, work_dir=job.work_dir,
                          progress=lambda stage: StageProgress(sink, *stages[stage]))
    for note in done.prediction.notes:
        sink.log(f"note: {note}")
    for text in done.warnings_not_shown:  # those about the input were logged before the first tile
        sink.log(f"warning: {text}")
    classes = tuple((c.id, c.name, c.color) for c in meta.classes)
    rasters = done.prediction.outputs or [done.prediction.output]  # one per output head
    polygons: list[Path | None] = [v.output for v in done.vectorized_heads] or [None] * len(rasters)
    try:
        areas = tuple((c.id, c.name, c.pixels, c.area_m2, c.share) for c in class_areas(rasters[0]))
    except BaseException:
        for path in done.files:  # nothing of a failed run is left behind
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    return SegmentOutcome(rasters[0], polygons[0], done.files, classes,
                          done.prediction.device.describe(), done.prediction.tiles_total,
                          sum(v.features for v in done.vectorized_heads), time.perf_counter() - t0,
                          done.warnings, areas, tuple(zip(rasters[1:], polygons[1:], strict=True)))


def resolve_polygon_options(simplify_m: float, min_area_m2: float, raster: Path) -> tuple[float, float]:
    """Return the simplify tolerance (m) and minimum area (m²), turning AUTO into multiples of ``raster``'s pixel.

    The one place the automatic values are made: the dock, Segment raster and Vectorize class raster all use it.
    """
    if simplify_m >= 0 and min_area_m2 >= 0:
        return simplify_m, min_area_m2
    from fastunet_core.io.raster_input import open_raster
    from fastunet_core.polygons.measure import Measurer

    with open_raster(raster) as src:
        wkt = src.crs.to_wkt() if src.crs else ""
        pixel = Measurer.for_raster(wkt, src.transform, src.width, src.height).pixel_size_m if wkt \
            else abs(src.transform.determinant) ** 0.5
    simplify = simplify_m if simplify_m >= 0 else SIMPLIFY_PIXELS * pixel
    min_area = min_area_m2 if min_area_m2 >= 0 else MIN_AREA_PIXELS * pixel * pixel
    return simplify, min_area
