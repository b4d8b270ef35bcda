"""Training datasets: LandCover.ai, LoveDA, image/mask folders, and rasters with vector labels.

Every dataset is a :class:`torch.utils.data.Dataset` whose ``__getitem__(i)`` returns ``(image, mask)``
as numpy arrays: ``image`` (H, W, bands) in the source dtype, ``mask`` (H, W) int64 holding model channel
indices ``0..n_classes-1`` or :data:`IGNORE_INDEX`. Each has ``classes`` (channel order; ``ClassInfo.id`` is
the value written to output class rasters), ``input_dtype``, ``n_bands`` and ``name``. Pixels are read
by windowed reads; :func:`open_dataset` serves them from a tile cache (each source decoded once, see
:mod:`fastunet_core.train.datasets.cache`) unless the spec's ``cache`` is ``off``.
"""

from typing import Any

from fastunet_core.train.datasets._common import IGNORE_INDEX, SegmentationDataset, WindowedPairs
from fastunet_core.train.datasets.folder import open_folder
from fastunet_core.train.datasets.landcoverai import LANDCOVERAI_CLASSES, open_landcoverai
from fastunet_core.train.datasets.loveda import loveda_classes, open_loveda
from fastunet_core.train.datasets.spec import SPLITS, DatasetKind, DatasetSpec, open_dataset

__all__ = [
    "IGNORE_INDEX",
    "LANDCOVERAI_CLASSES",
    "SPLITS",
    "DatasetKind",
    "DatasetSpec",
    "RasterVectorDataset",
    "SegmentationDataset",
    "WindowedPairs",
    "loveda_classes",
    "open_dataset",
    "open_folder",
    "open_landcoverai",
    "open_loveda",
    "open_raster_vector",
]


def __getattr__(name: str) -> Any:
    """Import the vector-label dataset on first use: geopandas and shapely are not needed for the others."""
    if name in ("RasterVectorDataset", "open_raster_vector"):
        from fastunet_core.train.datasets import raster_vector

        return getattr(raster_vector, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
