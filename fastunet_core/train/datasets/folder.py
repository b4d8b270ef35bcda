"""A folder of image/mask pairs matched by file name stem (tif, png or jpg).

Layouts (``images``/``masks`` may also be called ``img_dir``/``ann_dir`` as in mmsegmentation, or
``imgs``/``labels``/``annotations``)::

    ROOT/images/<name>.<ext>          ROOT/masks/<name>.<ext>            one pool, split by val_fraction
    ROOT/images/train|val|test/...    ROOT/masks/train|val|test/...      separate splits (mmseg layout)

Masks hold integer codes in band 1. ``label_values[i]`` is the code of channel ``i``, and also its class
id, so a predicted class raster keeps the masks' coding; codes not listed (e.g. a boundary or no-data
code) become IGNORE_INDEX. Without ``label_values`` the codes are
0..n-1. ``class_names`` is required: n_classes must not depend on which codes happen to occur.

Without split subfolders the pairs are shuffled with ``seed`` and ``round(n * val_fraction)`` of them (at
least one) form the validation split. The split is by file, not by window, so no validation window
overlaps a training window. Every image is cut into tile_size windows (no overlap, flush edges).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fastunet_core.errors import ConfigError, DatasetLayoutError
from fastunet_core.hints import setting
from fastunet_core.train.datasets._common import (
    DEFAULT_VAL_FRACTION,
    WindowedPairs,
    describe_dir,
    list_images,
    make_classes,
    make_lut,
    match_pairs,
    pair_windows,
)

IMAGE_DIR_NAMES = ("images", "img_dir", "imgs")
MASK_DIR_NAMES = ("masks", "ann_dir", "labels", "annotations")
_SPLITS = ("train", "val", "test")


def open_folder(root: Path, split: str, tile_size: int = 512, class_names: Sequence[str] | None = None,
                label_values: Sequence[int] | None = None, val_fraction: float = DEFAULT_VAL_FRACTION,
                seed: int = 0) -> WindowedPairs:
    """Open one split of a folder of image/mask pairs."""
    if not class_names:
        raise ConfigError(
            "a folder dataset needs class_names in channel order (e.g. class_names: [background, building]), "
            "and label_values if the masks' codes are not 0..n-1"
        )
    if split not in _SPLITS:
        raise ConfigError(f"splits are {', '.join(_SPLITS)}, not {split!r}")
    values = list(range(len(class_names))) if label_values is None else [int(v) for v in label_values]
    if len(values) != len(class_names) or len(set(values)) != len(values):
        raise ConfigError(
            f"label_values must give one distinct mask code per class: {len(class_names)} class name(s) but "
            f"label_values {values}"
        )
    image_dir, mask_dir = find_pair_dirs(root)
    pairs = _split_pairs(image_dir, mask_dir, split, val_fraction, seed)
    samples, header = pair_windows(pairs, tile_size)
    classes = make_classes(class_names, ids=values)
    lut = make_lut({v: c for c, v in enumerate(values)})
    return WindowedPairs(samples, classes=classes, lut=lut, name=f"folder:{root.name}", header=header)


def find_pair_dirs(root: Path) -> tuple[Path, Path]:
    """Return the image and mask folders under root (first existing name of each alias list)."""
    image_dir = next((root / n for n in IMAGE_DIR_NAMES if (root / n).is_dir()), None)
    mask_dir = next((root / n for n in MASK_DIR_NAMES if (root / n).is_dir()), None)
    if image_dir is None or mask_dir is None:
        raise DatasetLayoutError(
            f"expected images/ and masks/ (or img_dir/ and ann_dir/) under {root}, {describe_dir(root)}"
        )
    return image_dir, mask_dir


def _split_pairs(image_dir: Path, mask_dir: Path, split: str, val_fraction: float,
                 seed: int) -> list[tuple[Path, Path]]:
    subdirs = sorted(p.name for p in image_dir.iterdir() if p.is_dir() and p.name in _SPLITS)
    if subdirs:
        if split not in subdirs:
            raise DatasetLayoutError(
                f"{image_dir} has split folders {', '.join(s + '/' for s in subdirs)} but no {split}/"
            )
        images, masks = image_dir / split, mask_dir / split
        if not masks.is_dir():
            raise DatasetLayoutError(f"expected {masks} beside {images}, {describe_dir(mask_dir)}")
        return match_pairs(list_images(images), list_images(masks), images, masks)
    if split == "test":
        raise DatasetLayoutError(
            f"{image_dir} has no test/ folder; a flat folder is split into train and val only (by val_fraction)"
        )
    pairs = match_pairs(list_images(image_dir), list_images(mask_dir), image_dir, mask_dir)
    val = validation_indices(len(pairs), val_fraction, seed)
    if split == "val":
        if not val:
            raise_it = f"use {setting('data.val_fraction', DEFAULT_VAL_FRACTION)}, " if val_fraction <= 0 else ""
            raise ConfigError(
                f"no validation pairs: {len(pairs)} pair(s) in {image_dir} with {setting('data.val_fraction')} "
                f"{val_fraction}; {raise_it}add pairs, or put separate images/val and masks/val folders"
            )
        return [pairs[i] for i in sorted(val)]
    return [p for i, p in enumerate(pairs) if i not in val]


def validation_indices(n: int, val_fraction: float, seed: int) -> set[int]:
    """Pick round(n * val_fraction) indices (at least one, never all) with a seeded shuffle."""
    if val_fraction <= 0 or n < 2:
        return set()
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    order = np.random.default_rng(seed).permutation(n)
    return {int(i) for i in order[:n_val]}
