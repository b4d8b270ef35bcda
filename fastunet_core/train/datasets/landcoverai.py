"""LandCover.ai v1: orthophoto sheets cut into tiles following the official train/val/test lists.

Layout (as downloaded)::

    ROOT/images/<sheet>.tif   RGB GeoTIFF orthophoto sheets (about 9000 x 9500 px at 0.25 m)
    ROOT/masks/<sheet>.tif    one-band masks on the same grid: 0 background, 1 building, 2 woodland,
                              3 water, 4 road
    ROOT/train.txt, val.txt, test.txt   one tile id ``<sheet>_<k>`` per line
    ROOT/output/<sheet>_<k>.jpg + <sheet>_<k>_m.png   (optional) the tiles cut by the dataset's split.py

The tile numbering is the one of the dataset's official ``split.py``: it walks the sheet row-major in
non-overlapping ``512 x 512`` steps (``for y in range(0, H, 512): for x in range(0, W, 512)``) and
increments ``k`` at *every* step, but only writes complete tiles. So ``k`` also counts the incomplete
tiles at the right and bottom edges, which are dropped: with ``n = ceil(W / 512)`` steps per row, tile
``k`` is at ``row = k // n``, ``col = k % n``, i.e. the window ``(col * 512, row * 512, 512, 512)``, and
an id pointing at an incomplete tile does not exist. (Checked against several published copies of
split.py, where ``k += 1`` sits outside the ``if tile is complete`` block.)

When ``images/`` and ``masks/`` are present the tiles are read on the fly from the sheets by windowed
reads (lossless pixels; the split.py JPEGs carry compression artefacts). Only when they are absent are
the pre-cut ``output/`` files used. ``tile_size`` must be the size the lists were made with (512 for the
official lists); the small test fixtures use other sizes.
"""

from __future__ import annotations

import math
from pathlib import Path

from rasterio.windows import Window

from fastunet_core.errors import DatasetLayoutError
from fastunet_core.hints import setting
from fastunet_core.train.datasets._common import (
    PairWindow,
    RasterHeader,
    WindowedPairs,
    describe_dir,
    list_some,
    make_classes,
    make_lut,
    pair_windows,
    read_header,
    uniform_header,
)

LANDCOVERAI_CLASSES = make_classes(("background", "building", "woodland", "water", "road"))
_SPLITS = ("train", "val", "test")
OFFICIAL_TILE_PX = 512
"""The tile size of LandCover.ai's own split lists (its split.py)."""


def open_landcoverai(root: Path, split: str, tile_size: int = OFFICIAL_TILE_PX) -> WindowedPairs:
    """Open one split of LandCover.ai, from the sheets if present, else from the pre-cut tiles."""
    has_sheets = (root / "images").is_dir() and (root / "masks").is_dir()
    has_tiles = (root / "output").is_dir()
    if not (has_sheets or has_tiles):
        raise DatasetLayoutError(
            f"expected LandCover.ai's images/ and masks/ (or the pre-cut output/) under {root}, "
            f"{describe_dir(root)}; point root at the unpacked landcover.ai.v1 folder"
        )
    ids = read_split_list(root, split)
    if has_sheets:
        samples, header = _sheet_samples(root, ids, tile_size)
    else:
        samples, header = _precut_samples(root, ids, tile_size)
    lut = make_lut({c: c for c in range(len(LANDCOVERAI_CLASSES))})
    return WindowedPairs(samples, classes=LANDCOVERAI_CLASSES, lut=lut, name="landcoverai", header=header)


def read_split_list(root: Path, split: str) -> list[str]:
    """Read the tile ids of ``<split>.txt`` (blank lines skipped)."""
    if split not in _SPLITS:
        raise DatasetLayoutError(f"LandCover.ai has splits {', '.join(_SPLITS)}, not {split!r}")
    path = root / f"{split}.txt"
    if not path.is_file():
        raise DatasetLayoutError(
            f"expected the split lists train.txt, val.txt and test.txt under {root} (they come with "
            f"LandCover.ai v1), {describe_dir(root)}; {path.name} is missing"
        )
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DatasetLayoutError(f"{path} lists no tile ids; expected one <sheet>_<k> per line")
    return ids


def parse_tile_id(tile_id: str) -> tuple[str, int]:
    """Split ``<sheet>_<k>`` into the sheet name and the tile number."""
    sheet, _, k = tile_id.rpartition("_")
    if not sheet or not k.isdigit():
        raise DatasetLayoutError(f"tile id {tile_id!r} is not of the form <sheet>_<k> (e.g. M-33-20-D-c-4-2_17)")
    return sheet, int(k)


def tile_window(k: int, width: int, height: int, tile: int) -> Window | None:
    """Return the window of split.py's tile ``k`` on a width x height sheet, or None if it is incomplete."""
    row, col = divmod(k, math.ceil(width / tile))
    x, y = col * tile, row * tile
    if x + tile > width or y + tile > height:
        return None
    return Window(x, y, tile, tile)


def _sheet_samples(root: Path, ids: list[str], tile: int) -> tuple[list[PairWindow], RasterHeader]:
    entries = [(tile_id, *parse_tile_id(tile_id)) for tile_id in ids]
    sheets = sorted({sheet for _, sheet, _ in entries})
    images = {p.stem: p for p in (root / "images").glob("*.tif")}
    masks = {p.stem: p for p in (root / "masks").glob("*.tif")}
    missing = [s for s in sheets if s not in images or s not in masks]
    if missing:
        raise DatasetLayoutError(
            f"the split lists name {len(missing)} sheet(s) without both images/<sheet>.tif and masks/<sheet>.tif "
            f"under {root}: {list_some(missing)}; {describe_dir(root / 'images')}"
        )
    headers = {s: read_header(images[s]) for s in sheets}
    header = uniform_header(list(headers.values()), [images[s] for s in sheets])
    samples = []
    for tile_id, sheet, k in entries:
        h = headers[sheet]
        window = tile_window(k, h.width, h.height, tile)
        if window is None:
            raise DatasetLayoutError(
                f"tile {tile_id} is not a complete {tile} px tile of {sheet}.tif ({h.width} x {h.height} px); "
                f"give the tile size the split lists were made with: {setting('data.tile_size', OFFICIAL_TILE_PX)} "
                f"for the official lists"
            )
        samples.append(PairWindow(images[sheet], masks[sheet], window))
    return samples, header


def _precut_samples(root: Path, ids: list[str], tile: int) -> tuple[list[PairWindow], RasterHeader]:
    out = root / "output"
    pairs = [(out / f"{i}.jpg", out / f"{i}_m.png") for i in ids]
    missing = [i for i, (img, msk) in zip(ids, pairs, strict=True) if not (img.is_file() and msk.is_file())]
    if missing:
        raise DatasetLayoutError(
            f"{len(missing)} tile(s) of the split list have no output/<id>.jpg + output/<id>_m.png pair under "
            f"{root}: {list_some(missing)}; run LandCover.ai's split.py, or keep images/ and masks/ instead"
        )
    return pair_windows(pairs, tile)
