"""``segment_raster``: the whole user job on one raster, crop to an area -> predict -> vectorise.

The CLI's ``predict`` (one raster, or many in :mod:`.batch`) and the QGIS plugin's runs (dock and Processing)
all call this one function; each stage is a core tool function of its own (:func:`~fastunet_core.io.area.
crop_to_area`, :func:`~.predict.predict_raster` through a :class:`~.predict.Predictor`,
:func:`~fastunet_core.polygons.vectorize.vectorize_raster`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fastunet_core.hints import setting
from fastunet_core.inference.predict import PredictOptions, Predictor, PredictResult
from fastunet_core.io.area import AreaSpec, crop_to_area
from fastunet_core.io.kept_outputs import kept_until_done
from fastunet_core.io.output_files import FORMATS, head_path, output_paths
from fastunet_core.io.sources import RasterSource, raster_source
from fastunet_core.io.styles import own_style_path, style_for
from fastunet_core.io.targets import check_raster_suffix
from fastunet_core.models.checkpoint_file import LoadedModel
from fastunet_core.polygons.options import VectorizeOptions, VectorizeResult
from fastunet_core.runtime.progress import NullProgress, Progress

Stage = Literal["crop", "predict", "vectorize"]
StageProgress = Callable[[Stage], Progress]  # the progress to report a stage to (one bar, or a share of one)


@dataclass
class SegmentResult:
    """What :func:`segment_raster` wrote.

    Attributes:
        prediction: the class raster(s) (and probabilities) written, device, tiles, seconds, warnings.
        vectorized: the polygons written, or None without a vector output (of the first head's class raster).
        vectorized_heads: with several output heads, the polygons of each head's class raster (``vectorized``
            first; ``OUT_headK`` beside the vector output, as the class rasters are named); else ``[vectorized]``.
        files: every file written, class raster(s) and their side files (``.qml``, ``.aux.xml``) first.
        warnings: the prediction's and the vectorisation's warnings, in that order (see ``warnings_not_shown``).

    """

    prediction: PredictResult
    vectorized: VectorizeResult | None
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    vectorized_heads: list[VectorizeResult] = field(default_factory=list)

    @property
    def warnings_not_shown(self) -> list[str]:
        """Return the warnings the stages' progress did not get as messages (the input's came before the tiles)."""
        return self.warnings[self.prediction.warnings_shown:]


def segment_raster(raster: str | os.PathLike[str], model: str | Path | LoadedModel | Predictor, output: str | Path,
                   options: PredictOptions | None = None, probs_output: str | Path | None = None,
                   vector_output: str | Path | None = None,
                   vectorize: VectorizeOptions | None = None, area: AreaSpec | None = None,
                   work_dir: str | Path | None = None, progress: StageProgress | None = None) -> SegmentResult:
    """Segment ``raster`` (or the ``area`` of it) into the class raster ``output``, optionally with polygons.

    Args:
        raster: a GDAL-readable raster with a north-up geotransform.
        model: a checkpoint path, a loaded model, or a :class:`Predictor` reused over many rasters (its
            options then apply and ``options`` is ignored).
        output: the class raster to write (GeoTIFF, uint8 class ids, nodata 255, on the input's pixel grid).
        options: prediction settings (tile size, overlap, bands, device, engine, precision ...).
        probs_output: per-class probabilities to write (GeoTIFF, uint8 percent, one band per class), or None
            for ``options.probs_path``.
        vector_output: the polygons to write (.gpkg, .shp or .geojson), or None for none. A model with several
            output heads (a Deepness ONNX) writes a class raster per head, ``OUT_headK.tif``, and polygons per
            head, ``VECTOR_headK.gpkg``, as Deepness gives a layer per head.
        vectorize: polygon settings (simplify tolerance in m, minimum area in m², classes ...).
        area: the part of the raster to process, in its CRS (default: all of it). A part is first copied to
            a temporary GeoTIFF on the same pixel grid, pixels outside the polygons masked, so the outputs
            cover the area's bounding box and line up with the input pixel for pixel.
        work_dir: where that temporary copy goes (default: the system's temporary folder).
        progress: gives the progress to report each stage (``crop``, ``predict``, ``vectorize``) to.

    Returns:
        :class:`SegmentResult`.

    Raises:
        FastUNetError: a subclass for anything the user can fix (see :mod:`fastunet_core.errors`), and
        CancelledError when a stage's progress asks to stop. In either case no output of this call is left:
        the stages write through temporary files, and a class raster already finished is removed when a later
        stage fails. Files it replaced (with ``overwrite``) are put back as they were.

    """
    stage: StageProgress = progress or (lambda _stage: NullProgress())
    out = Path(output)
    check_raster_suffix(out, setting("output"))  # before the model loads: every front end refuses x.img alike
    given_probs = probs_output if probs_output is not None else options.probs_path if options else None
    if given_probs is not None:
        check_raster_suffix(given_probs, f"{setting('probs')} output")
    predictor = model if isinstance(model, Predictor) else Predictor(model, options)
    targets = _vector_targets(vector_output, len(predictor.class_outputs(out)))
    if targets:  # before any tile: an existing polygon file found after the prediction cost the whole run
        from fastunet_core.io.vector_output import check_outputs  # pyogrio: only with polygons

        for target in targets:
            check_outputs(target, (vectorize or VectorizeOptions()).overwrite)
    written: list[Path] = []
    probs = probs_output if probs_output is not None else predictor.options.probs_path
    replaced = _replaceable(predictor.class_outputs(out) if predictor.options.overwrite else [], probs,
                            targets if vectorize is not None and vectorize.overwrite else [])
    with tempfile.TemporaryDirectory(prefix="fastunet_", dir=work_dir) as tmp, kept_until_done(replaced):
        try:
            source: RasterSource = raster_source(raster)  # GDAL virtual paths and URLs kept as typed
            if area is not None and area.kind != "layer":
                source = crop_to_area(source, area, Path(tmp) / f"{source.stem}.tif", stage("crop"))
            prediction = predictor.run(source, out, probs, stage("predict"))
            written += _written_by(prediction)
            heads: list[VectorizeResult] = []
            if targets:
                from fastunet_core.polygons.vectorize import vectorize_raster  # pyogrio, shapely: only now

                rasters = prediction.outputs or [prediction.output]
                for class_raster, target in zip(rasters, targets, strict=True):
                    heads.append(vectorize_raster(class_raster, target, vectorize, stage("vectorize")))
                    written += heads[-1].files
        except BaseException:
            for path in written:  # the stages never leave a partial file; drop this call's finished ones too
                with contextlib.suppress(OSError):
                    path.unlink()
            raise
    return SegmentResult(prediction, heads[0] if heads else None, written,
                         [*prediction.warnings, *(w for v in heads for w in v.warnings)], heads)


def _vector_targets(vector_output: str | Path | None, heads: int) -> list[Path]:
    """Return the polygon files to write: ``vector_output``, or ``VECTOR_headK`` per output head."""
    if vector_output is None:
        return []
    return [Path(vector_output)] if heads == 1 else [head_path(Path(vector_output), k) for k in range(heads)]


def _replaceable(rasters: list[Path], probs: str | Path | None, polygons: list[Path]) -> Iterator[Path]:
    """Yield the files the call may replace (class rasters, probabilities, polygons) with sidecars and styles."""
    for raster in [*rasters, *([Path(probs)] if rasters and probs is not None else [])]:
        yield from (raster, raster.with_name(raster.name + ".aux.xml"), own_style_path(raster),
                    raster.with_suffix(".qml"))
    for target in polygons:
        if target.suffix.lower() in FORMATS:  # else the vectorising says
            yield from (*output_paths(target), own_style_path(target), target.with_suffix(".qml"))


def _written_by(prediction: PredictResult) -> list[Path]:
    """Return the class raster(s), the probabilities and the files read beside them (style, statistics)."""
    rasters = [*(prediction.outputs or [prediction.output]),
               *([prediction.probs_output] if prediction.probs_output else [])]
    sides = [p for r in rasters for p in (style_for(r), r.with_name(r.name + ".aux.xml"))
             if p is not None and p.is_file()]
    return [*rasters, *sides]
