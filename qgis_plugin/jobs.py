"""One segmentation run as plain data, and the function that runs it with the core's tools.

The dock's task and the Processing algorithm both build a :class:`SegmentJob` and call
:func:`run_segment_job`, which chains the core's tool functions (crop to the processed area, then
``predict_raster``, then ``vectorize_raster``); no pipeline step is written again here. Nothing in this
module touches QGIS, so it runs on a worker thread. Heavy imports happen inside the function.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .progress_bridge import ProgressSink, StageProgress

AreaKind = Literal["layer", "extent", "polygons"]
AUTO = -1.0  # simplify / minimum area: derived from the raster's pixel size (see resolve_polygon_options)
SIMPLIFY_PIXELS = 1.0  # the automatic simplify tolerance: one pixel, which smooths the pixel staircase
MIN_AREA_PIXELS = 2.0  # the automatic minimum area: polygons under two pixels (single-pixel speckle) are dropped
ClassAreaRow = tuple[int, str, int, float, float]  # class id, name, pixels, area (m²), share of the classified area


@dataclass(frozen=True)
class AreaSpec:
    """Which part of the raster to process, in the raster's CRS.

    Attributes:
        kind: ``layer`` (all of it), ``extent`` (``bounds``) or ``polygons`` (inside ``polygons_wkb``).
        bounds: xmin, ymin, xmax, ymax of the extent.
        polygons_wkb: the polygons, as WKB, already in the raster's CRS.

    """

    kind: AreaKind = "layer"
    bounds: tuple[float, float, float, float] | None = None
    polygons_wkb: tuple[bytes, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (WKB as hex)."""
        return {"kind": self.kind, "bounds": list(self.bounds) if self.bounds else None,
                "polygons_wkb": [w.hex() for w in self.polygons_wkb]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AreaSpec:
        """Rebuild from :meth:`to_dict`."""
        bounds = d.get("bounds")
        return cls(d["kind"], tuple(bounds) if bounds else None,
                   tuple(bytes.fromhex(h) for h in d.get("polygons_wkb", ())))

    def describe(self) -> str:
        """Say in words what is processed."""
        if self.kind == "extent":
            return "the map extent"
        if self.kind == "polygons":
            return f"inside {len(self.polygons_wkb)} polygon(s)"
        return "the whole layer"


@dataclass(frozen=True)
class SegmentJob:
    """Everything one segmentation run needs, in plain values (safe to hand to a worker thread)."""

    raster: Path  # a file the engine can read
    model: Path
    class_output: Path
    polygons_output: Path | None = None  # None: do not vectorise
    tile_size_px: int | None = None  # None: the model's
    overlap_px: int | None = None
    batch_size: int = 4
    device: str = "auto"
    area: AreaSpec = field(default_factory=AreaSpec)
    simplify_m: float = AUTO  # AUTO: one pixel
    min_area_m2: float = AUTO  # AUTO: two pixels
    bands: tuple[int, ...] | None = None  # raster bands in the model's channel order; None: the model's
    overwrite: bool = True
    work_dir: Path | None = None  # where the cropped input goes (default: the system's temp folder)

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

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {"class_raster": str(self.class_raster), "polygons": str(self.polygons) if self.polygons else None,
                "files": [str(f) for f in self.files], "classes": [list(c) for c in self.classes],
                "device": self.device, "tiles": self.tiles, "features": self.features, "seconds": self.seconds,
                "warnings": list(self.warnings), "class_areas": [list(c) for c in self.class_areas]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SegmentOutcome:
        """Rebuild from :meth:`to_dict`."""
        classes = tuple((int(c[0]), str(c[1]), (int(c[2][0]), int(c[2][1]), int(c[2][2]))) for c in d["classes"])
        return cls(Path(d["class_raster"]), Path(d["polygons"]) if d["polygons"] else None,
                   [Path(f) for f in d["files"]], classes, d["device"], int(d["tiles"]), int(d["features"]),
                   float(d["seconds"]), list(d["warnings"]),
                   tuple((int(c[0]), str(c[1]), int(c[2]), float(c[3]), float(c[4])) for c in d.get("class_areas", ())))


def run_segment_job(job: SegmentJob, sink: ProgressSink) -> SegmentOutcome:
    """Crop, segment and (optionally) vectorise; on failure or cancel, remove everything this run wrote.

    Raises the core's errors (:class:`~fastunet_core.errors.FastUNetError` subclasses, CancelledError included).
    """
    from fastunet_core.inference.predict import PredictOptions, predict_raster
    from fastunet_core.models.checkpoint_file import read_metadata
    from fastunet_core.polygons.class_area import class_areas
    from fastunet_core.polygons.vectorize import VectorizeOptions, vectorize_raster

    from .area import crop_to_area

    t0 = time.perf_counter()
    meta = read_metadata(job.model)
    vectorize = job.polygons_output is not None
    written: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="fastunet_", dir=job.work_dir) as tmp:
        try:
            sink.log(f"processing {job.area.describe()} of {job.raster.name}")
            source = crop_to_area(job.raster, job.area, Path(tmp) / f"{job.raster.stem}.tif", StageProgress(sink, 0, 5))
            options = PredictOptions(tile_size_px=job.tile_size_px, overlap_px=job.overlap_px,
                                     batch_size=job.batch_size, device=job.device, overwrite=job.overwrite,
                                     bands=job.bands)
            predicted = predict_raster(source, job.model, job.class_output, options,
                                       StageProgress(sink, 5, 85 if vectorize else 100))
            sidecars = [p for p in (job.class_output.with_suffix(".qml"),
                                    job.class_output.with_name(job.class_output.name + ".aux.xml")) if p.is_file()]
            written += [job.class_output, *sidecars]
            warnings = list(predicted.warnings)
            features, files = 0, [job.class_output, *sidecars]
            if job.polygons_output is not None:
                simplify_m, min_area_m2 = resolve_polygon_options(job, job.class_output)
                sink.log(f"polygons: simplify {simplify_m:.3g} m, minimum area {min_area_m2:.3g} m²")
                vopts = VectorizeOptions(simplify_m=simplify_m, min_area_m2=min_area_m2, overwrite=job.overwrite)
                vectorized = vectorize_raster(job.class_output, job.polygons_output, vopts,
                                              StageProgress(sink, 85, 100))
                features = vectorized.features
                files += vectorized.files
                warnings += vectorized.warnings
        except BaseException:
            for path in written:  # the core never leaves a partial file; drop the finished ones of this run too
                with contextlib.suppress(OSError):
                    path.unlink()
            raise
    for text in warnings:
        sink.log(f"warning: {text}")
    classes = tuple((c.id, c.name, c.color) for c in meta.classes)
    areas = tuple((c.id, c.name, c.pixels, c.area_m2, c.share) for c in class_areas(job.class_output))
    return SegmentOutcome(job.class_output, job.polygons_output, files, classes, predicted.device.describe(),
                          predicted.tiles_total, features, time.perf_counter() - t0, warnings, areas)


def resolve_polygon_options(job: SegmentJob, class_raster: Path) -> tuple[float, float]:
    """Return the simplify tolerance (m) and minimum area (m²), turning AUTO into pixel multiples."""
    if job.simplify_m >= 0 and job.min_area_m2 >= 0:
        return job.simplify_m, job.min_area_m2
    import rasterio

    from fastunet_core.polygons.measure import Measurer

    with rasterio.open(class_raster) as src:
        wkt = src.crs.to_wkt() if src.crs else ""
        pixel = Measurer.for_raster(wkt, src.transform, src.width, src.height).pixel_size_m if wkt \
            else abs(src.transform.determinant) ** 0.5
    simplify = job.simplify_m if job.simplify_m >= 0 else SIMPLIFY_PIXELS * pixel
    min_area = job.min_area_m2 if job.min_area_m2 >= 0 else MIN_AREA_PIXELS * pixel * pixel
    return simplify, min_area
