"""fastunet-geo core: tiling, models, streaming inference, training and vectorisation.

This package never imports Qt or QGIS; the CLI and the QGIS plugin are thin callers of its functions. The
tool functions are importable from here (``from fastunet_core import segment_raster``); each is loaded on
first use, so importing the package itself pulls in no torch, rasterio or GDAL.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_TOOLS = {
    "predict_raster": "fastunet_core.inference.predict",
    "segment_raster": "fastunet_core.inference.segment",
    "vectorize_raster": "fastunet_core.polygons.vectorize",
    "train": "fastunet_core.train.loop",
    "evaluate_checkpoint": "fastunet_core.train.evaluate",
    "load_checkpoint": "fastunet_core.models.checkpoint",
}
__all__ = ["__version__", "evaluate_checkpoint", "load_checkpoint", "predict_raster", "segment_raster", "train",
           "vectorize_raster"]

if TYPE_CHECKING:
    from fastunet_core.inference.predict import predict_raster
    from fastunet_core.inference.segment import segment_raster
    from fastunet_core.models.checkpoint import load_checkpoint
    from fastunet_core.polygons.vectorize import vectorize_raster
    from fastunet_core.train.evaluate import evaluate_checkpoint
    from fastunet_core.train.loop import train


def __getattr__(name: str) -> Any:
    """Load a tool function on first access."""
    if name in _TOOLS:
        return getattr(importlib.import_module(_TOOLS[name]), name)
    raise AttributeError(f"module 'fastunet_core' has no attribute {name!r}")
