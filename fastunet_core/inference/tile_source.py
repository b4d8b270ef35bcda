"""Produce the tiles of a raster in row-major order, optionally read ahead on a background thread.

Reading ahead lets GDAL decode the next tiles while the model works on the current batch, so an
accelerator is not left idle. The reader thread is the only user of the source dataset while it runs; a
bounded queue limits how far it reads ahead (memory), and errors in the thread reach the caller.

GDAL's error handler is per thread: rasterio routes GDAL's warnings to its logger only in a thread that has
entered a ``rasterio.Env``. The reader thread enters one with the caller's options, so a warning from a read
(e.g. "RowsPerStrip not defined") is a debug line, not raw text on the user's terminal.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import rasterio
from rasterio.env import getenv, hasenv

from fastunet_core.io.raster_input import Tile, TileReader
from fastunet_core.tiling.grid import TileGrid


@dataclass(frozen=True)
class EmptyTile:
    """A tile whose window holds no valid pixel: it is not read or run."""

    row: int
    col: int


TileItem = Tile | EmptyTile
_DONE = object()


def iter_tiles(grid: TileGrid, reader: TileReader, first_row: int = 0) -> Iterator[TileItem]:
    """Yield the tiles of ``grid`` from tile row ``first_row`` on, row-major, reading only those with data."""
    for row, col, window in grid.windows(first_row):
        valid = reader.read_valid(window)
        if valid.any():
            yield reader.read(row, col, window, valid)
        else:
            yield EmptyTile(row, col)


def prefetch(items: Iterator[TileItem], depth: int) -> Iterator[TileItem]:
    """Run ``items`` on a background thread, at most ``depth`` tiles ahead of the consumer."""
    q: queue.Queue[object] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    options = getenv() if hasenv() else {}

    def work() -> None:
        try:
            with rasterio.Env(**options):
                _feed(items, q, stop)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            q.put(exc)

    thread = threading.Thread(target=work, name="fastunet-tile-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        while thread.is_alive():  # drain so a blocked put wakes up, then let the thread finish
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


def _feed(items: Iterator[TileItem], q: queue.Queue[object], stop: threading.Event) -> None:
    """Put ``items`` on ``q`` until they end (then ``_DONE``) or ``stop`` is set."""
    for item in items:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                break
            except queue.Full:
                continue
        if stop.is_set():
            return
    q.put(_DONE)
