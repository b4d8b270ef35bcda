"""Tile grid math: which windows to run the model on, and how much each tile counts where.

Pure functions, no I/O. Windows are :class:`rasterio.windows.Window` objects in the source raster's own
pixel grid, so every tile's georeferencing comes from ``window_transform(window)``.

The grid along one axis of length ``n`` with tile size ``t`` and overlap ``o`` uses the fewest tiles whose
stride is at most ``t - o``, spread evenly from 0 to ``n - t``: the first tile starts at the edge, the last
ends exactly at ``n`` (flush: no missed strip, no window outside the raster), and every overlap is at
least ``o`` and nearly the same. An axis shorter than one tile gets one window of
length ``n``; the reader pads that tile up to ``t`` so the model still sees its usual input size.
Overlap exists because a CNN sees less context near a tile's border: predictions there are worse, so
neighbouring tiles are blended (``cosine``) or only each tile's centre is kept (``core``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from fastunet_core.errors import ConfigError

BLEND_MODES = ("cosine", "core")


def axis_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Return the tile start offsets along one axis (sorted, unique, last one flush with the end)."""
    _check_tiling(tile, overlap)
    if length <= 0:
        raise ConfigError(f"raster axis length must be positive, got {length}")
    if length <= tile:
        return [0]
    stride = tile - overlap
    count = math.ceil((length - tile) / stride) + 1
    # spread the tiles evenly between 0 and length - tile: every overlap is at least ``overlap`` and they
    # differ by at most one pixel (rather than a last tile overlapping its neighbour by up to tile - 1)
    span = length - tile
    return sorted({round(i * span / (count - 1)) for i in range(count)})


def tile_windows(width: int, height: int, tile: int, overlap: int) -> list[list[Window]]:
    """Return the tile windows as rows (top to bottom) of windows (left to right)."""
    cols = axis_starts(width, tile, overlap)
    rows = axis_starts(height, tile, overlap)
    tw, th = min(tile, width), min(tile, height)
    return [[Window(c, r, tw, th) for c in cols] for r in rows]


def _check_tiling(tile: int, overlap: int) -> None:
    if tile < 1:
        raise ConfigError(f"tile size must be a positive number of pixels, got {tile}")
    if overlap < 0 or overlap >= tile:
        raise ConfigError(f"overlap must be >= 0 and smaller than the tile size ({tile} px), got {overlap}")


@dataclass(frozen=True)
class AxisLayout:
    """Tile starts along one axis plus, per tile, its weight profile."""

    starts: tuple[int, ...]
    tile: int  # length of each window along this axis (min(tile size, axis length))
    overlap: int
    length: int

    def weights(self, index: int, mode: str) -> np.ndarray:
        """Return the 1-D weight profile (float32, length ``tile``) of tile ``index``.

        ``cosine``: 1 in the tile's middle, a raised-cosine ramp over ``overlap`` pixels on each side that
        has a neighbour (so two regularly spaced neighbours' weights sum to 1), strictly positive.
        ``core``: 1 on the pixels this tile owns (those nearer its centre than any other tile's), else 0;
        ownership partitions the axis, so every pixel is taken from exactly one tile.
        """
        n = self.tile
        if mode == "core":
            lo, hi = self.owned_range(index)
            w = np.zeros(n, dtype=np.float32)
            start = self.starts[index]
            w[lo - start : hi - start] = 1.0
            return w
        if mode != "cosine":
            raise ConfigError(f"unknown blend mode {mode!r}; choose one of {', '.join(BLEND_MODES)}")
        w = np.ones(n, dtype=np.float32)
        ramp_len = min(self.overlap, n // 2)
        if ramp_len > 0:
            i = np.arange(ramp_len, dtype=np.float64)
            ramp = (0.5 - 0.5 * np.cos(np.pi * (i + 0.5) / ramp_len)).astype(np.float32)
            if index > 0:
                w[:ramp_len] = ramp
            if index < len(self.starts) - 1:
                w[n - ramp_len :] = ramp[::-1]
        return w

    def owned_range(self, index: int) -> tuple[int, int]:
        """Return the [lo, hi) pixel range owned by tile ``index`` in ``core`` mode."""
        centres = [s + self.tile / 2 for s in self.starts]
        lo = 0 if index == 0 else math.ceil((centres[index - 1] + centres[index]) / 2)
        hi = self.length if index == len(self.starts) - 1 else math.ceil((centres[index] + centres[index + 1]) / 2)
        return lo, hi


@dataclass(frozen=True)
class TileGrid:
    """The full tile layout of one raster: separable into a row axis and a column axis."""

    rows: AxisLayout
    cols: AxisLayout

    @classmethod
    def for_raster(cls, width: int, height: int, tile: int, overlap: int) -> TileGrid:
        """Build the grid for a ``width`` x ``height`` raster."""
        return cls(
            rows=AxisLayout(tuple(axis_starts(height, tile, overlap)), min(tile, height), overlap, height),
            cols=AxisLayout(tuple(axis_starts(width, tile, overlap)), min(tile, width), overlap, width),
        )

    @property
    def width(self) -> int:
        """Raster width in pixels."""
        return self.cols.length

    @property
    def height(self) -> int:
        """Raster height in pixels."""
        return self.rows.length

    @property
    def n_tiles(self) -> int:
        """Number of tiles."""
        return len(self.rows.starts) * len(self.cols.starts)

    def first_row_reaching(self, y: int) -> int:
        """Return the index of the first tile row whose window reaches below pixel row ``y``.

        Tile rows start in increasing order, so every tile covering a pixel at or below ``y`` is in this
        row or a later one (the tile rows a resumed run has to redo).
        """
        if y <= 0:
            return 0
        return next((i for i, s in enumerate(self.rows.starts) if s + self.rows.tile > y), len(self.rows.starts))

    def window(self, row: int, col: int) -> Window:
        """Return the window of tile (row, col)."""
        return Window(self.cols.starts[col], self.rows.starts[row], self.cols.tile, self.rows.tile)

    def windows(self, first_row: int = 0) -> list[tuple[int, int, Window]]:
        """Return every tile as (row index, column index, window), row-major, from tile row ``first_row``."""
        return [
            (r, c, self.window(r, c))
            for r in range(first_row, len(self.rows.starts)) for c in range(len(self.cols.starts))
        ]

    def weights(self, row: int, col: int, mode: str) -> np.ndarray:
        """Return the 2-D (rows, cols) float32 weights of tile (row, col)."""
        return np.outer(self.rows.weights(row, mode), self.cols.weights(col, mode))


def edges(layout: AxisLayout) -> list[int]:
    """Return the sorted cell edges of an axis: every tile start and end, plus 0 and the length."""
    points = {0, layout.length}
    for s in layout.starts:
        points.update((s, s + layout.tile))
    return sorted(points)


def covering_counts(layout: AxisLayout, cell_edges: Sequence[int]) -> list[int]:
    """Return, per cell between consecutive edges, how many tiles of the axis cover it."""
    return [
        sum(1 for s in layout.starts if s <= a and b <= s + layout.tile)
        for a, b in itertools.pairwise(cell_edges)
    ]
