"""Streaming blend-and-stitch of per-tile class probabilities into finished rows of a class map.

The raster is cut into *cells* by every tile edge along each axis. Each cell is covered by a fixed set of
tiles, known in advance, so a cell is finished the moment its last tile has been added: it is then turned
into class ids (argmax after blending, never per tile) and handed to the row assembler, and its
accumulator is freed. Accumulators are allocated when a cell is first touched, so with tiles added row by
row the live memory is the band of overlap cells below the current tile row plus about one tile, never
the whole raster. The assembler writes each block of the output as soon as it is complete, in file order.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from fastunet_core.errors import FastUNetError
from fastunet_core.tiling.grid import TileGrid, covering_counts, edges


class RowWriter(Protocol):
    """Write ``values`` (bands, rows, columns) at row ``row0``, column ``col0`` of the output."""

    def __call__(self, row0: int, values: np.ndarray, col0: int = 0) -> None: ...  # noqa: D102


class RowAssembler:
    """Collect finished cells into the output's blocks; write each block as soon as it and those before it are complete.

    Blocks are written in the file's order (block row by block row, left to right), each when every cell
    that covers it is finished: the live memory is the blocks being filled (about one block row), not the
    full-width rows of every cell since the last written block row plus a copy of them.
    """

    def __init__(self, y_edges: list[int], x_edges: list[int], bands: int, dtype: np.dtype,
                 block_rows: int, block_cols: int, write: RowWriter, start_row: int = 0,
                 head: np.ndarray | None = None) -> None:
        # resuming: rows above ``start_row`` are finished; those of an unfinished block (from its first row)
        # come as ``head`` (bands, rows, width) and are written with the rest of their block, as in one run
        head_rows = 0 if head is None else head.shape[1]
        if (start_row - head_rows) % block_rows and start_row != y_edges[-1]:
            raise ValueError(f"rows before {start_row - head_rows} do not end on a block (height {block_rows})")
        self.y_edges = y_edges
        self.x_edges = x_edges
        self.height, self.width = y_edges[-1], x_edges[-1]
        self.bands = bands
        self.dtype = dtype
        self.block_rows = block_rows
        self.block_cols = block_cols
        self._write = write
        self.start_row = start_row
        n_x_cells = len(x_edges) - 1
        # y-cells that end above ``start_row`` were written by an earlier run: nothing more arrives for them
        self._remaining = [0 if y1 <= start_row else n_x_cells for y1 in y_edges[1:]]
        self._complete_upto = 0  # y-cells [0, this) are complete
        while self._complete_upto < len(self._remaining) and self._remaining[self._complete_upto] == 0:
            self._complete_upto += 1
        self._n_block_cols = -(-self.width // block_cols)
        # per block: how many cells still have to arrive in it
        by = [sum(1 for y0, y1 in itertools.pairwise(y_edges) if y1 > start_row and y0 < min(b + block_rows,
                                                                                           self.height) and y1 > b)
              for b in range(0, self.height, block_rows)]
        bx = [sum(1 for x0, x1 in itertools.pairwise(x_edges) if x0 < b + block_cols and x1 > b)
              for b in range(0, self.width, block_cols)]
        self._pending = np.outer(np.asarray(by, dtype=np.int64), np.asarray(bx, dtype=np.int64))
        self._rows: dict[int, np.ndarray] = {}  # block row -> (bands, its height, width), until all written
        self._next = ((start_row - head_rows) // block_rows, 0)  # the next block to write
        self.written_rows = start_row - head_rows  # rows [0, this) are written across the full width
        if head is not None and head_rows:
            by0 = self._next[0]
            for k in range(self._n_block_cols):
                c0 = k * block_cols
                self._block(by0, k)[:, :head_rows] = head[:, :, c0 : c0 + block_cols]

    def _block(self, by: int, bx: int) -> np.ndarray:
        """Return block (by, bx) as a view of its block row's buffer (allocated when first touched).

        One buffer per block row rather than one per block: fewer, larger allocations, which glibc keeps
        in its heap instead of mapping and faulting in a fresh 256 KiB per block (10x the page faults).
        """
        buf = self._rows.get(by)
        if buf is None:
            h = min(self.block_rows, self.height - by * self.block_rows)
            buf = self._rows[by] = np.empty((self.bands, h, self.width), dtype=self.dtype)
        return buf[:, :, bx * self.block_cols : (bx + 1) * self.block_cols]

    def flush_finished(self) -> None:
        """Write every finished row now, also those of an unfinished block (when a run is interrupted).

        The file then holds all the rows the run finished, so a resumed run redoes only the tile rows that
        reach above the last finished cell: the overlap band, not up to a block height more.
        """
        done_row = max(self.y_edges[self._complete_upto], self.start_row)
        by, bx = self._next
        r0 = by * self.block_rows
        if r0 >= done_row or by * self.block_rows >= self.height:
            return
        for k in range(bx, self._n_block_cols):  # rows [r0, done_row) of the blocks not written yet
            self._write(r0, self._block(by, k)[:, : done_row - r0], k * self.block_cols)
        self.written_rows = done_row

    def put(self, ly: int, x0: int, values: np.ndarray) -> None:
        """Place a finished cell (y-cell ``ly``, starting at column ``x0``)."""
        y0, y1 = self.y_edges[ly], self.y_edges[ly + 1]
        x1 = x0 + values.shape[2]
        br, bc = self.block_rows, self.block_cols
        for by in range(y0 // br, (y1 - 1) // br + 1):
            a, b = max(y0, by * br), min(y1, (by + 1) * br)
            for bx in range(x0 // bc, (x1 - 1) // bc + 1):
                c, d = max(x0, bx * bc), min(x1, (bx + 1) * bc)
                self._block(by, bx)[:, a - by * br : b - by * br, c - bx * bc : d - bx * bc] = \
                    values[:, a - y0 : b - y0, c - x0 : d - x0]
                self._pending[by, bx] -= 1
        self._remaining[ly] -= 1
        while self._complete_upto < len(self._remaining) and self._remaining[self._complete_upto] == 0:
            self._complete_upto += 1
        self._flush()

    def _flush(self) -> None:
        by, bx = self._next
        while by < self._pending.shape[0] and self._pending[by, bx] == 0:
            self._write(by * self.block_rows, self._block(by, bx), bx * self.block_cols)
            bx += 1
            if bx == self._n_block_cols:
                del self._rows[by]
                by, bx = by + 1, 0
                self.written_rows = min(self.height, by * self.block_rows)
        self._next = (by, bx)


class ArrayOps(Protocol):
    """Where the stitcher's accumulators live: float32 zeros, and tile weights moved there."""

    def zeros(self, shape: tuple[int, ...]) -> Any: ...  # noqa: D102

    def asarray(self, values: np.ndarray) -> Any: ...  # noqa: D102


class NumpyArrays:
    """Accumulators in host memory (numpy)."""

    def zeros(self, shape: tuple[int, ...]) -> np.ndarray:
        """Return a float32 accumulator."""
        return np.zeros(shape, np.float32)

    def asarray(self, values: np.ndarray) -> np.ndarray:
        """Return ``values`` as they are."""
        return values


class StreamingStitcher:
    """Blend tiles' class probabilities and emit finished class ids (and optional probabilities).

    Args:
        grid: the tile grid.
        n_classes: number of probability channels per tile.
        blend: ``cosine`` or ``core`` (see :meth:`fastunet_core.tiling.grid.AxisLayout.weights`).
        finish_cell: called with (y-cell, x0, summed probabilities (C, h, w), weight sum (h, w)) when a
            cell is complete; weight 0 marks a pixel without data.
        arrays: where the accumulators live: numpy arrays (default), or tensors on the model's device
            (:class:`fastunet_core.inference.device_stitch.TorchArrays`; ``probs`` are then tensors there).

    """

    def __init__(self, grid: TileGrid, n_classes: int, blend: str,
                 finish_cell: Callable[[int, int, Any, Any], None], start_row: int = 0,
                 arrays: ArrayOps | None = None) -> None:
        self.arrays: ArrayOps = arrays or NumpyArrays()
        self.grid = grid
        self.n_classes = n_classes
        self.blend = blend
        self.finish_cell = finish_cell
        self.x_edges = edges(grid.cols)
        self.y_edges = edges(grid.rows)
        cx = covering_counts(grid.cols, self.x_edges)
        cy = covering_counts(grid.rows, self.y_edges)
        self._pending = np.outer(np.asarray(cy), np.asarray(cx)).astype(np.int64)
        self._acc: dict[tuple[int, int], Any] = {}
        self._added = np.zeros((len(grid.rows.starts), len(grid.cols.starts)), dtype=bool)
        # resuming: rows above ``start_row`` are already in the output. Every tile that covers a cell
        # reaching below it starts at or after ``first_tile_row``; the tile rows before it are not run,
        # and the cells wholly above ``start_row`` are neither accumulated nor emitted.
        self.start_row = start_row
        self.first_tile_row = grid.first_row_reaching(start_row)
        self._added[: self.first_tile_row] = True
        self._wy = [grid.rows.weights(i, blend) for i in range(len(grid.rows.starts))]
        self._wx = [grid.cols.weights(j, blend) for j in range(len(grid.cols.starts))]

    def _cells(self, edges_: list[int], start: int, length: int) -> range:
        return range(edges_.index(start), edges_.index(start + length))

    def add(self, row: int, col: int, probs: Any, valid: np.ndarray | None) -> None:
        """Add tile (row, col): ``probs`` (C, h, w) over its window and its validity (h, w).

        ``probs=None`` adds a tile without data (it was skipped): its cells just count it as done.
        """
        if self._added[row, col]:
            raise FastUNetError(f"tile ({row}, {col}) was added twice")
        self._added[row, col] = True
        r0, c0 = self.grid.rows.starts[row], self.grid.cols.starts[col]
        h, w = self.grid.rows.tile, self.grid.cols.tile
        weights = None
        if probs is not None:
            weights = np.outer(self._wy[row], self._wx[col])
            if valid is not None:
                weights = weights * valid
            weights = self.arrays.asarray(weights)
        for ly in self._cells(self.y_edges, r0, h):
            y0, y1 = self.y_edges[ly], self.y_edges[ly + 1]
            if y1 <= self.start_row:
                continue
            for kx in self._cells(self.x_edges, c0, w):
                x0, x1 = self.x_edges[kx], self.x_edges[kx + 1]
                acc = self._acc.get((ly, kx))
                if acc is None:
                    acc = self._acc[(ly, kx)] = self.arrays.zeros((self.n_classes + 1, y1 - y0, x1 - x0))
                if probs is not None and weights is not None:
                    wcell = weights[y0 - r0 : y1 - r0, x0 - c0 : x1 - c0]
                    acc[:-1] += probs[:, y0 - r0 : y1 - r0, x0 - c0 : x1 - c0] * wcell
                    acc[-1] += wcell
                self._pending[ly, kx] -= 1
                if self._pending[ly, kx] == 0:
                    del self._acc[(ly, kx)]
                    self.finish_cell(ly, x0, acc[:-1], acc[-1])

    def check_complete(self) -> None:
        """Raise if any tile was never added (a bug, or an interrupted run)."""
        if not self._added.all() or self._acc:
            raise FastUNetError(f"stitching incomplete: {int((~self._added).sum())} tile(s) never added")


def argmax_channels(sums: np.ndarray) -> np.ndarray:
    """Index of the largest channel of ``sums`` (C, h, w) per pixel, as ``np.argmax(sums, axis=0)`` (ties: first).

    One pass per channel over contiguous planes instead of a strided reduction over the first axis: 1.3-4x
    faster for the few classes of land-cover models; the host-side argmax was the largest single cost of a
    CUDA predict (profile of `make gpu-check` on an H200, README "GPU").
    """
    best = sums[0].copy()
    idx = np.zeros(sums.shape[1:], dtype=np.intp)
    for c in range(1, sums.shape[0]):
        better = sums[c] > best
        idx[better] = c
        np.maximum(best, sums[c], out=best)
    return idx


def classes_from_sums(sums: np.ndarray, wsum: np.ndarray, class_ids: np.ndarray, nodata: int) -> np.ndarray:
    """Argmax of blended probabilities, mapped to class ids; ``nodata`` where the weight sum is 0."""
    out = class_ids[argmax_channels(sums)].astype(np.uint8)
    out[wsum <= 0] = nodata
    return out


def percent_from_sums(sums: np.ndarray, wsum: np.ndarray, nodata: int) -> np.ndarray:
    """Blended probabilities as whole percent (uint8 0..100); ``nodata`` where the weight sum is 0."""
    safe = np.where(wsum > 0, wsum, 1.0)
    pct = np.rint(sums / safe * 100.0).clip(0, 100).astype(np.uint8)
    pct[:, wsum <= 0] = nodata
    return pct
