"""The engine calls the plugin makes, as plain functions of JSON-ready dicts (no QGIS, no Qt).

Each call runs a core tool function: ``segment`` (:func:`~.jobs.run_segment_job`: crop, predict, vectorise),
``vectorize`` (``vectorize_raster``) and ``train`` (``train``); ``stats`` says which process answered and how
often it loaded a model (see :mod:`.engine_cache`). They take and return dicts so that
:mod:`.engine_process` can run them either here or in a separate Python process (see there why).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .progress_bridge import EpochProgress, ProgressSink, StageProgress
from .words import qgis_worded

Payload = dict[str, Any]


def segment(payload: Payload, sink: ProgressSink) -> Payload:
    """Run a :class:`~.jobs.SegmentJob` given as a dict; return the outcome as a dict."""
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # if torch runs (bf16): threads sleep, not spin
    from . import engine_cache
    from .jobs import SegmentJob, run_segment_job

    return run_segment_job(SegmentJob.from_dict(payload), sink, engine_cache.current()).to_dict()


def vectorize(payload: Payload, sink: ProgressSink) -> Payload:
    """Vectorise ``raster`` into ``output`` with the given options."""
    from fastunet_core.polygons.vectorize import VectorizeOptions, vectorize_raster

    from .jobs import resolve_polygon_options

    classes = payload.get("classes")
    simplify_m, min_area_m2 = resolve_polygon_options(payload["simplify_m"], payload["min_area_m2"],
                                                      Path(payload["raster"]))  # AUTO: one / two pixels
    sink.log(f"polygons: simplify {simplify_m:.3g} m, minimum area {min_area_m2:.3g} m²")
    options = VectorizeOptions(classes=tuple(classes) if classes else None, simplify_m=simplify_m,
                               min_area_m2=min_area_m2, dissolve=payload["dissolve"], overwrite=True)
    result = vectorize_raster(payload["raster"], payload["output"], options, StageProgress(sink, 0, 100))
    return {"output": str(result.output), "files": [str(f) for f in result.files], "features": result.features,
            "warnings": list(result.warnings)}


def train(payload: Payload, sink: ProgressSink) -> Payload:
    """Train from a configuration dict (the core's YAML layout); return where the checkpoints are.

    With ``model`` (a path: the dock's Train tab), the best checkpoint is also copied there once the run has
    ended well (through a temporary file: a cancelled or failed run leaves nothing under that name, and an
    earlier model stays); messages then name the tab's controls.
    """
    import shutil

    from fastunet_core.hints import speaking
    from fastunet_core.io.atomic import atomic_output
    from fastunet_core.train.config import config_from_dict
    from fastunet_core.train.loop import train as run_training

    from .words import QGIS, TRAIN_TAB

    cfg = config_from_dict(payload["config"])
    model = payload.get("model")
    with speaking(TRAIN_TAB if model else QGIS):  # the Train tab's run folder follows its model file
        result = run_training(cfg, EpochProgress(sink, cfg.optim.epochs), fresh=bool(payload.get("fresh")))
    best = result.history[result.best_epoch - 1] if result.best_epoch else None
    if model:
        with atomic_output(Path(model), overwrite=True) as tmp:
            shutil.copyfile(result.best_checkpoint, tmp)
    return {"output_dir": str(Path(result.output_dir)), "best_checkpoint": str(result.best_checkpoint),
            "best_epoch": result.best_epoch, "val_miou": best.val_miou if best else None,
            "device": result.device.describe(), "epochs": len(result.history),
            "stopped_early": result.stopped_early, "model": str(model) if model else None}


def device(payload: Payload, sink: ProgressSink) -> Payload:
    """Say whether CUDA can be used (and which GPU), or why not; this imports torch, so never on a GUI thread."""
    from fastunet_core.runtime.device import cuda_unavailable_reason, resolve_device

    why_not = cuda_unavailable_reason()
    return {"why_not": why_not, "gpu": resolve_device("cuda").describe() if why_not is None else None}


def model_meta(payload: Payload, sink: ProgressSink) -> Payload:
    """Read a model's metadata with the engine's packages (ONNX files and smp folders need onnx/safetensors)."""
    from fastunet_core.models.checkpoint_file import read_metadata

    return read_metadata(payload["path"]).to_dict()


def stats(payload: Payload, sink: ProgressSink) -> Payload:
    """Return this process's id and how often it loaded or reused a model (the dock's tests ask)."""
    import os

    from . import engine_cache

    cache = engine_cache.current()
    return cache.stats() if cache is not None else {"pid": os.getpid(), "loads": 0, "reuses": 0}


# every call builds its messages with the plugin's names for settings, never a command-line flag
CALLS: dict[str, Callable[[Payload, ProgressSink], Payload]] = {name: qgis_worded(call) for name, call in {
    "model_meta": model_meta,
    "segment": segment,
    "vectorize": vectorize,
    "train": train,
    "device": device,
    "stats": stats,
}.items()}
