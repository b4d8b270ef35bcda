"""Tile grid: every pixel covered, no window outside the raster, last tile flush with the edge."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastunet_core.errors import ConfigError
from fastunet_core.tiling.grid import TileGrid, axis_starts, tile_windows


@st.composite
def grids(draw: st.DrawFn) -> tuple[int, int, int, int]:
    tile = draw(st.integers(1, 96))
    overlap = draw(st.integers(0, tile - 1))
    width = draw(st.integers(1, 400))
    height = draw(st.integers(1, 400))
    return width, height, tile, overlap


@settings(max_examples=300, deadline=None)
@given(grids())
def test_windows_cover_every_pixel_and_stay_inside(g: tuple[int, int, int, int]) -> None:
    width, height, tile, overlap = g
    cover = np.zeros((height, width), dtype=np.int32)
    rows = tile_windows(width, height, tile, overlap)
    for row in rows:
        for w in row:
            assert w.col_off >= 0 and w.row_off >= 0
            assert w.col_off + w.width <= width and w.row_off + w.height <= height
            assert w.width == min(tile, width) and w.height == min(tile, height)
            cover[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] += 1
    assert cover.min() >= 1
    # the last row and column are flush with the raster edge
    assert rows[-1][-1].col_off + rows[-1][-1].width == width
    assert rows[-1][-1].row_off + rows[-1][-1].height == height


@settings(max_examples=300, deadline=None)
@given(grids())
def test_consecutive_tiles_overlap_at_least_the_requested_overlap(g: tuple[int, int, int, int]) -> None:
    width, _, tile, overlap = g
    starts = axis_starts(width, tile, overlap)
    assert starts == sorted(set(starts))
    for a, b in itertools.pairwise(starts):
        assert b - a <= tile - overlap  # never a gap, never less overlap than asked


@settings(max_examples=200, deadline=None)
@given(grids(), st.sampled_from(["cosine", "core"]))
def test_weights_positive_where_needed(g: tuple[int, int, int, int], mode: str) -> None:
    width, height, tile, overlap = g
    grid = TileGrid.for_raster(width, height, tile, overlap)
    total = np.zeros(width)
    for j in range(len(grid.cols.starts)):
        w = grid.cols.weights(j, mode)
        assert w.shape == (grid.cols.tile,) and (w >= 0).all()
        if mode == "cosine":
            assert (w > 0).all()
        s = grid.cols.starts[j]
        total[s : s + grid.cols.tile] += w
    if mode == "core":
        assert np.array_equal(total, np.ones(width))  # each pixel owned by exactly one tile
    else:
        assert total.min() > 0


def test_raster_smaller_than_tile_gets_one_window() -> None:
    rows = tile_windows(30, 20, 64, 8)
    assert len(rows) == 1 and len(rows[0]) == 1
    w = rows[0][0]
    assert (w.col_off, w.row_off, w.width, w.height) == (0, 0, 30, 20)


def test_regular_overlap_weights_sum_to_one() -> None:
    grid = TileGrid.for_raster(64 * 3 - 2 * 16, 64, 64, 16)  # exactly regular: 3 tiles, stride 48
    total = np.zeros(grid.width)
    for j, s in enumerate(grid.cols.starts):
        total[s : s + 64] += grid.cols.weights(j, "cosine")
    assert np.allclose(total, 1.0, atol=1e-6)


@pytest.mark.parametrize(("tile", "overlap"), [(0, 0), (64, 64), (64, -1)])
def test_bad_tiling_is_refused(tile: int, overlap: int) -> None:
    with pytest.raises(ConfigError):
        tile_windows(100, 100, tile, overlap)


def test_overlaps_are_even_so_the_last_tile_does_not_overlap_more() -> None:
    starts = axis_starts(16384, 512, 64)
    overlaps = {512 - (b - a) for a, b in itertools.pairwise(starts)}
    assert starts[0] == 0 and starts[-1] == 16384 - 512
    assert min(overlaps) >= 64 and max(overlaps) - min(overlaps) <= 1
