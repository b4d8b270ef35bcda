"""The model a long-lived engine process keeps loaded between runs (see :mod:`.engine_child`).

The dock's engine process serves one run after another; loading the model (reading the weights, building
the ONNX Runtime session or the torch module) is then done once, and the next run with the same model file
and the same settings reuses the :class:`~fastunet_core.inference.predict.Predictor`. The key is the file's
path, size and modification time (each file's, for an smp folder) and the prediction options, so a model
written again under the same name is loaded again. Only the last model is kept (memory).

Nothing here touches QGIS; the cache is switched on by the engine process only (:func:`enable`), so a run
in QGIS's own process or in a one-run child loads its model as before.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from .progress_bridge import ProgressSink

if TYPE_CHECKING:
    from fastunet_core.inference.predict import PredictOptions, Predictor

CacheKey = tuple[str, tuple[tuple[str, int, int], ...], str]


def model_fingerprint(model: Path) -> tuple[tuple[str, int, int], ...]:
    """Return (name, size, mtime in ns) of the model file, or of every file in an smp folder."""
    files = sorted(p for p in model.rglob("*") if p.is_file()) if model.is_dir() else [model]
    stats = [(str(p.relative_to(model)) if model.is_dir() else p.name, p.stat()) for p in files]
    return tuple((name, st.st_size, st.st_mtime_ns) for name, st in stats)


class PredictorCache:
    """The last :class:`Predictor` built, reused while its model file and options stay the same."""

    def __init__(self) -> None:
        self._key: CacheKey | None = None
        self._predictor: Predictor | None = None
        self.loads = 0  # models loaded by this process
        self.reuses = 0  # runs that found their model loaded

    def predictor(self, model: Path, options: PredictOptions, sink: ProgressSink) -> Predictor:
        """Return the loaded model for ``model`` and ``options``, loading it when the cached one differs."""
        from fastunet_core.inference.predict import Predictor

        key: CacheKey = (str(model.resolve()), model_fingerprint(model), repr(options))
        if key == self._key and self._predictor is not None:
            self.reuses += 1
            sink.log(f"model: {model.name} is already loaded in the engine process (reused {self.reuses}x)")
            return self._predictor
        self._key, self._predictor = None, None  # let the previous model go before loading the next
        predictor = Predictor(model, options)
        self.loads += 1
        sink.log(f"model: {model.name} loaded ({predictor.engine_name}; model load {self.loads} "
                 f"in engine process {os.getpid()})")
        self._key, self._predictor = key, predictor
        return predictor

    def stats(self) -> dict[str, int]:
        """Return the counters (for the ``stats`` engine call)."""
        return {"pid": os.getpid(), "loads": self.loads, "reuses": self.reuses}


_cache: PredictorCache | None = None


def enable() -> PredictorCache:
    """Keep models loaded in this process from now on (called by the engine process); return the cache."""
    global _cache
    if _cache is None:
        _cache = PredictorCache()
    return _cache


def current() -> PredictorCache | None:
    """Return this process's cache, or None where models are not kept (QGIS's process, one-run children)."""
    return _cache
