"""Dataset layout registry: a layout name (``data.kind``) maps to how to open it and how to recognise it.

Like the models' registry (:mod:`fastunet_core.models.registry`), every layout that training and evaluation
can read is registered here, once: :func:`~fastunet_core.train.datasets.spec.open_dataset` opens any of them,
``DatasetSpec`` accepts their names, and ``evaluate --data FOLDER`` / ``train --data FOLDER`` recognise a
folder by asking each layout in turn (the first that answers wins; the image/mask folder, a fallback, last).

Adding a layout: write its module (an ``open_...(root, split, tile_size, ...)`` returning a
:class:`~fastunet_core.train.datasets._common.WindowedPairs`), then one :func:`register_layout` call below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastunet_core.errors import ConfigError, DatasetLayoutError

if TYPE_CHECKING:
    from fastunet_core.models.metadata import ModelMeta
    from fastunet_core.train.datasets._common import SegmentationDataset
    from fastunet_core.train.datasets.spec import DatasetSpec

Opener = Callable[["DatasetSpec", str], "SegmentationDataset"]
Recogniser = Callable[[Path, "ModelMeta | None"], "dict[str, Any] | None"]


@dataclass(frozen=True)
class Layout:
    """A registered dataset layout.

    Attributes:
        kind: its ``data.kind`` name.
        open: ``(spec, split) -> dataset`` for ``split`` in train/val/test.
        description: one line for listings and errors.
        recognise: ``(folder, model metadata) -> the data section's layout-specific keys``, or None when the
            folder does not look like this layout; None for layouts that are never guessed. The metadata is
            None for ``train --data`` (no model yet): give only what the folder itself tells.
        fallback: asked only after every other layout (the image/mask folder, which takes any folder).

    """

    kind: str
    open: Opener
    description: str
    recognise: Recogniser | None = None
    fallback: bool = False


LAYOUTS: dict[str, Layout] = {}


def register_layout(kind: str, open: Opener, description: str, recognise: Recogniser | None = None,
                    fallback: bool = False) -> None:
    """Add a layout to the registry (a later one with the same name replaces it)."""
    LAYOUTS[kind] = Layout(kind, open, description, recognise, fallback)


def get_layout(kind: str) -> Layout:
    """Return the registered layout, or raise an error listing the valid names."""
    try:
        return LAYOUTS[kind]
    except KeyError:
        raise ConfigError(f"unknown dataset kind {kind!r}; choose one of {', '.join(LAYOUTS)}") from None


def recognise_layout(root: Path, meta: ModelMeta | None) -> dict[str, Any]:
    """Return ``kind`` and the layout-specific keys of the data section for the dataset folder ``root``.

    ``meta``: the model to evaluate, whose classes and tile size fill what the folder cannot tell; None when
    training (the configuration and its overrides give those).
    """
    for layout in sorted(LAYOUTS.values(), key=lambda layout: layout.fallback):  # stable: registration order
        if layout.recognise is not None and (keys := layout.recognise(root, meta)) is not None:
            return {"kind": layout.kind, **keys}
    raise ConfigError(f"{root} is not a dataset folder of a known layout ({', '.join(LAYOUTS)})")


def data_section_for(root: Path, meta: ModelMeta | None = None) -> dict[str, Any]:
    """Recognise a dataset folder's layout and describe it as a data section (``evaluate/train --data FOLDER``).

    Each registered layout is asked in turn (:func:`recognise_layout`): LoveDA's Train/, Val/ or Test/
    folders; LandCover.ai's images/ and masks/ with train/val/test lists; anything else is read as a folder
    of image/mask pairs. With ``meta`` (evaluate) the model's tile size and classes fill the rest (a pair
    folder's mask codes are the model's class ids); without it (train) they come from the configuration.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetLayoutError(f"dataset folder not found: {root}")
    tile = {"tile_size": meta.tile_size_px} if meta is not None else {}
    return {"root": str(root), **tile, **recognise_layout(root, meta)}


# -- the built-in layouts (their modules import their heavy libraries only when opened) --

def _open_landcoverai(spec: DatasetSpec, split: str) -> SegmentationDataset:
    from fastunet_core.train.datasets.landcoverai import open_landcoverai

    return open_landcoverai(spec.root, split, spec.tile_size)


def _open_loveda(spec: DatasetSpec, split: str) -> SegmentationDataset:
    from fastunet_core.train.datasets.loveda import open_loveda

    return open_loveda(spec.root, split, spec.tile_size, spec.loveda_scenes, spec.loveda_nodata)


def _open_folder(spec: DatasetSpec, split: str) -> SegmentationDataset:
    from fastunet_core.train.datasets.folder import open_folder

    return open_folder(spec.root, split, spec.tile_size, spec.class_names, spec.label_values, spec.val_fraction,
                       spec.seed)


def _open_raster_vector(spec: DatasetSpec, split: str) -> SegmentationDataset:
    if spec.raster is None or spec.vector is None:
        raise ConfigError("a raster_vector dataset needs raster (the orthophoto GeoTIFF) and vector (the polygon "
                          "labels), e.g. raster: ortho.tif, vector: labels.gpkg")
    # imported here: geopandas and shapely load only for vector labels (a GPU machine may lack them)
    from fastunet_core.train.datasets.raster_vector import open_raster_vector

    return open_raster_vector(spec.raster, spec.vector, split, spec.tile_size, spec.class_field, spec.class_names,
                              spec.label_values, spec.val_fraction)


def _is_loveda(root: Path, meta: ModelMeta | None) -> dict[str, Any] | None:
    if not any((root / d).is_dir() for d in ("Train", "Val", "Test")):
        return None
    found: dict[str, Any] = {}  # training: LoveDA's label 0 is no-data (ignored) unless the config says otherwise
    if meta is not None:
        found["loveda_nodata"] = "class" if meta.classes and meta.classes[0].id == 0 else "ignore"
    scenes = [s for s in ("Urban", "Rural") if any((root / d / s).is_dir() for d in ("Train", "Val", "Test"))]
    return {**found, "loveda_scenes": scenes} if scenes else found  # only the scenes that are there


def _is_landcoverai(root: Path, meta: ModelMeta | None) -> dict[str, Any] | None:
    lists = any((root / f"{s}.txt").is_file() for s in ("train", "val", "test"))
    return {} if (root / "images").is_dir() and (root / "masks").is_dir() and lists else None


def _as_folder(root: Path, meta: ModelMeta | None) -> dict[str, Any]:
    """Any other folder: image/mask pairs whose mask codes are the model's class ids (training: the config's)."""
    if meta is None:
        return {}
    return {"class_names": [c.name for c in meta.classes], "label_values": [c.id for c in meta.classes]}


register_layout("loveda", _open_loveda, "LoveDA: Train|Val|Test/Urban|Rural/images_png + masks_png", _is_loveda)
register_layout("landcoverai", _open_landcoverai, "LandCover.ai v1: images/ + masks/ sheets, train/val/test lists",
                _is_landcoverai)
register_layout("folder", _open_folder, "image/mask pairs matched by name (images/ + masks/, mmseg's img_dir/ann_dir)",
                _as_folder, fallback=True)
register_layout("raster_vector", _open_raster_vector, "one orthophoto with polygon labels (vector file)")
