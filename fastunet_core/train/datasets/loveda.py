"""LoveDA: 1024 x 1024 PNG tiles of urban and rural scenes, each cut into tile_size pieces.

Layout (as unpacked from Train.zip, Val.zip, Test.zip)::

    ROOT/Train|Val|Test/Urban|Rural/images_png/<id>.png   RGB uint8
    ROOT/Train|Val/Urban|Rural/masks_png/<id>.png          0 no-data, 1 background, 2 building, 3 road,
                                                           4 water, 5 barren, 6 forest, 7 agriculture

Test has no masks (its labels are held by the benchmark server). Each tile is cut into ``tile_size``
windows with :func:`fastunet_core.tiling.grid.tile_windows` (no overlap; 1024 / 512 gives four).

Label 0 (no-data) is handled as ``nodata``: ``"ignore"`` maps it to IGNORE_INDEX and 1..7 to channels
0..6 (class ids 1..7, so a predicted class raster keeps LoveDA's coding); ``"class"`` keeps 0..7 as
channels 0..7 with ids 0..7.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from fastunet_core.errors import ConfigError, DatasetLayoutError
from fastunet_core.models.metadata import ClassInfo
from fastunet_core.train.datasets._common import (
    IGNORE_INDEX,
    WindowedPairs,
    describe_dir,
    list_images,
    make_classes,
    make_lut,
    match_pairs,
    pair_windows,
)

LOVEDA_NAMES = ("background", "building", "road", "water", "barren", "forest", "agriculture")
LOVEDA_SCENES = ("Urban", "Rural")
NODATA_MODES = ("ignore", "class")
_SPLIT_DIRS = {"train": "Train", "val": "Val", "test": "Test"}
LOVEDA_GSD_M = 0.3  # the dataset's ground sampling distance (Wang et al. 2021); its PNGs carry no georeferencing


def loveda_classes(nodata: str) -> tuple[tuple[ClassInfo, ...], dict[int, int]]:
    """Return the classes (channel order) and the raw-label -> channel mapping for a no-data mode."""
    if nodata == "ignore":
        return make_classes(LOVEDA_NAMES, ids=range(1, 8)), {0: IGNORE_INDEX, **{v: v - 1 for v in range(1, 8)}}
    if nodata == "class":
        return make_classes(("no-data", *LOVEDA_NAMES), ids=range(8)), {v: v for v in range(8)}
    raise ConfigError(f"loveda_nodata must be one of {', '.join(NODATA_MODES)}, got {nodata!r}")


def open_loveda(root: Path, split: str, tile_size: int = 512, scenes: Sequence[str] = LOVEDA_SCENES,
                nodata: str = "ignore") -> WindowedPairs:
    """Open one split of LoveDA (the given scenes together), cut into tile_size windows."""
    classes, mapping = loveda_classes(nodata)
    if split not in _SPLIT_DIRS:
        raise ConfigError(f"LoveDA has splits {', '.join(_SPLIT_DIRS)}, not {split!r}")
    bad = [s for s in scenes if s not in LOVEDA_SCENES]
    if bad or not scenes:
        raise ConfigError(f"loveda_scenes must be taken from {', '.join(LOVEDA_SCENES)}, got {list(scenes)}")
    folder = root / _SPLIT_DIRS[split]
    if not folder.is_dir():
        raise DatasetLayoutError(
            f"expected LoveDA's Train/, Val/ and Test/ folders under {root} (unpack Train.zip, Val.zip, Test.zip "
            f"there), {describe_dir(root)}; {folder.name}/ is missing"
        )
    missing = [s for s in scenes if not (folder / s).is_dir()]
    if missing:
        present = [s for s in scenes if s not in missing]
        hint = (f"; to use only the scene{'s' if len(present) > 1 else ''} there, set "
                f"data.loveda_scenes=[{','.join(present)}]" if present else "")
        folders = ", ".join(s + "/" for s in missing)
        raise DatasetLayoutError(f"data.loveda_scenes asks for {', '.join(scenes)} but {folder} has no {folders} "
                                 f"folder ({describe_dir(folder)}){hint}")
    pairs = []
    for scene in scenes:
        pairs += _scene_pairs(folder / scene, split)
    samples, header = pair_windows(pairs, tile_size)
    header = dataclasses.replace(header, resolution_m=header.resolution_m or LOVEDA_GSD_M)  # PNGs: no georeferencing
    name = "loveda" if tuple(scenes) == LOVEDA_SCENES else f"loveda-{'+'.join(scenes)}"
    return WindowedPairs(samples, classes=classes, lut=make_lut(mapping), name=name, header=header)


def _scene_pairs(scene_dir: Path, split: str) -> list[tuple[Path, Path]]:
    image_dir, mask_dir = scene_dir / "images_png", scene_dir / "masks_png"
    if not image_dir.is_dir():
        raise DatasetLayoutError(
            f"expected images_png/ and masks_png/ in {scene_dir}, {describe_dir(scene_dir)}"
        )
    if not mask_dir.is_dir():
        if split == "test":
            raise DatasetLayoutError(
                f"LoveDA's Test split has no masks ({mask_dir} does not exist: its labels are kept by the benchmark "
                "server), so it cannot be used for training or evaluation; use the train and val splits"
            )
        raise DatasetLayoutError(f"expected masks_png/ beside images_png/ in {scene_dir}, {describe_dir(scene_dir)}")
    return match_pairs(list_images(image_dir, (".png",)), list_images(mask_dir, (".png",)), image_dir, mask_dir)
