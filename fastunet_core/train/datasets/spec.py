"""The dataset part of a training configuration, and the one function that opens any registered layout."""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Literal

from fastunet_core.errors import ConfigError
from fastunet_core.hints import setting
from fastunet_core.runtime.progress import Progress
from fastunet_core.train.datasets._common import DEFAULT_VAL_FRACTION, SegmentationDataset
from fastunet_core.train.datasets.cache import with_tile_cache
from fastunet_core.train.datasets.layouts import get_layout
from fastunet_core.train.datasets.loveda import LOVEDA_SCENES, NODATA_MODES

DatasetKind = str  # a registered layout's name (see :mod:`fastunet_core.train.datasets.layouts`)
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DatasetSpec:
    """Where the training data is and how to read it.

    Attributes:
        kind: the layout, a name in :data:`~fastunet_core.train.datasets.layouts.LAYOUTS` (``landcoverai``,
            ``loveda``, ``folder``, ``raster_vector`` ...).
        root: the dataset folder; relative ``raster``/``vector`` paths are taken from it.
        tile_size: side of the square training windows in pixels.
        loveda_scenes: LoveDA scenes to use (``Urban``, ``Rural``).
        loveda_nodata: LoveDA label 0: ``ignore`` (IGNORE_INDEX) or ``class`` (a class of its own).
        raster: the orthophoto of a ``raster_vector`` dataset.
        vector: its polygon labels (Shapefile, GeoPackage, GeoJSON ...).
        class_field: the polygon attribute holding each polygon's class (name or integer code).
        class_names: class names in channel order (``folder``: required; ``raster_vector``: optional).
        label_values: the mask or attribute code of each class, also its class id (default 0..n-1).
        val_fraction: share held out for validation when the data has no separate validation split.
        seed: seed of the ``folder`` validation draw.
        resolution_m: ground size of a pixel, recorded in the checkpoint so that predict can warn about
            rasters of another resolution; default: measured from georeferenced images (LoveDA: 0.3 m).
        cache: the tile cache (see :mod:`fastunet_core.train.datasets.cache`): ``auto`` (the user's cache
            folder, when the disk has room), ``off``, or a folder. YAML's bare ``off``/``false`` mean off.

    """

    kind: DatasetKind
    root: Path
    tile_size: int = 512
    loveda_scenes: tuple[str, ...] = LOVEDA_SCENES
    loveda_nodata: Literal["ignore", "class"] = "ignore"
    raster: Path | None = None
    vector: Path | None = None
    class_field: str | None = None
    class_names: tuple[str, ...] | None = None
    label_values: tuple[int, ...] | None = None
    val_fraction: float = DEFAULT_VAL_FRACTION
    seed: int = 0
    resolution_m: float | None = None
    cache: str = "auto"

    def __post_init__(self) -> None:
        if isinstance(self.cache, bool):  # YAML 1.1 reads a bare off/no/false as False, on/yes/true as True
            object.__setattr__(self, "cache", "auto" if self.cache else "off")
        if not isinstance(self.cache, (str, PathLike)) or not str(self.cache):
            raise ConfigError(f"data.cache must be auto, off or a folder, got {self.cache!r}")
        object.__setattr__(self, "cache", str(self.cache))
        get_layout(self.kind)  # an unknown kind is an error listing the registered ones
        object.__setattr__(self, "root", Path(self.root).expanduser())
        for name in ("raster", "vector"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, self.root / Path(value).expanduser())
        for name in ("loveda_scenes", "class_names", "label_values"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        if self.tile_size < 1:
            raise ConfigError(f"tile_size must be a positive number of pixels, got {self.tile_size}")
        if self.resolution_m is not None and not self.resolution_m > 0:
            raise ConfigError(f"resolution_m must be a positive number of metres, got {self.resolution_m}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"{setting('data.val_fraction')} must be in [0, 1), got {self.val_fraction}")
        if self.loveda_nodata not in NODATA_MODES:
            raise ConfigError(f"loveda_nodata must be one of {', '.join(NODATA_MODES)}, got {self.loveda_nodata!r}")


def open_dataset(spec: DatasetSpec, split: str, progress: Progress | None = None) -> SegmentationDataset:
    """Open the ``train``, ``val`` or ``test`` split of a dataset, through its tile cache unless ``spec.cache`` is off.

    See each layout's module for the layouts; a missing or stale cache is built here (``progress`` shows it).
    """
    return with_tile_cache(_open_source(spec, split), spec.cache, split, progress)


def _open_source(spec: DatasetSpec, split: str) -> SegmentationDataset:
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return get_layout(spec.kind).open(spec, split)
