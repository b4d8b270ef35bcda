"""Checks of the tile size and overlap a prediction is asked to run with, made before anything is loaded or read.

Both are counted in the model's pixels: ``tile`` is the side of the square the model takes, ``overlap`` how
much of it neighbouring tiles share. When the raster is read resampled (``resolution`` auto or metres, see
:mod:`fastunet_core.inference.resolution`), a tile covers ``tile x factor`` raster pixels and the overlap
scales with it, so the part of each tile that is shared stays the same whatever the raster's resolution:
an overlap is valid when it is valid for the model's tile (0 <= overlap < tile), and it is checked there,
against the numbers the user gave, never against the converted ones.
"""

from __future__ import annotations

import os
import sys

from fastunet_core.errors import ConfigError
from fastunet_core.hints import hint, setting

FLOAT32 = 4
GIB = 2.0 ** 30


def check_tile_size(tile: int | None) -> None:
    """Refuse a tile size that is not a positive number of pixels (None: the model's)."""
    if tile is not None and tile < 1:
        raise ConfigError(f"{setting('tile')} must be at least 1 px, got {tile}")


def check_overlap(overlap: int, tile: int, given: bool) -> None:
    """Refuse an overlap outside 0 .. tile - 1 model pixels; ``given``: the user chose it (else the model's)."""
    if 0 <= overlap < tile:
        return
    if given:
        raise ConfigError(f"{setting('overlap')} must be >= 0 and smaller than the tile size ({tile} px), "
                          f"got {overlap}")
    raise ConfigError(f"the model's overlap ({overlap} px) is not smaller than the tile size ({tile} px); "
                      f"give a smaller {setting('overlap')} or a larger {setting('tile')}")


HEAVY_WORK = 16.0  # model pixels computed per raster pixel above which a run is called heavy (defaults: ~1.2)
HEAVY_MIN_TILES = 64  # fewer tiles finish in seconds, whatever the ratio (a small raster in one large tile)


def heavy_run_note(n_tiles: int, tile: int, overlap: int, raster_px: int, factor: float) -> str | None:
    """Return a line that says a run will compute many times the raster's pixels, and why; None for a usual run.

    ``n_tiles`` tiles of ``tile`` model pixels over a raster of ``raster_px`` pixels, read ``factor`` times
    coarser (below 1: finer). An overlap near the tile size or a resolution far finer than the raster's turn
    seconds into hours; both are allowed, so the run goes on, but the user hears it before the first tile.
    """
    work = n_tiles * tile * tile / max(1, raster_px)
    if work <= HEAVY_WORK or n_tiles < HEAVY_MIN_TILES:
        return None
    causes = []
    if 2 * overlap > tile:
        causes.append(f"{setting('overlap', overlap)} leaves a step of {tile - overlap} px between {tile} px tiles")
    if factor < 1 / 2:
        causes.append(f"the tiles are read {1 / factor:.3g}x finer than the raster ({setting('resolution')})")
    why = "; ".join(causes) or "the tiles are much larger than the raster"
    return (f"heavy run: {n_tiles:,} tiles, about {work:,.0f} model pixels per raster pixel ({why}); a smaller "
            "overlap or a coarser resolution runs many times faster")


def batch_bytes(tile: int, bands: int, channels: int, batch: int) -> int:
    """Return the bytes one batch of tiles needs at the least: its float32 input and probabilities.

    The model's own activations come on top (for a UNet several times the input); this is a floor.
    """
    return batch * (bands + channels) * tile * tile * FLOAT32


def check_tile_memory(tile: int, bands: int, channels: int, batch: int, model_tile: int,
                      memory: int | None = None) -> None:
    """Refuse a tile whose batch cannot fit in this machine's memory, before anything is allocated.

    ``memory``: the bytes of RAM (default: :func:`physical_memory`; unknown: no check). Only what is
    certain is counted (:func:`batch_bytes`), so a tile refused here could never run; a tile that passes may
    still exhaust memory in the model, which predict reports as one line too.
    """
    total = physical_memory() if memory is None else memory
    need = batch_bytes(tile, bands, channels, batch)
    if total is None or need <= total:
        return
    tiles = f"a batch of {batch} {tile} px tiles" if batch > 1 else f"one {tile} px tile"
    raise ConfigError(
        f"{tiles} needs at least {need / GIB:.3g} GiB for its input and probabilities alone, more than this "
        f"machine's {total / GIB:.3g} GiB of memory; use a smaller {setting('tile')} "
        f"(the model's is {model_tile} px){hint(' or {}', 'batch_size', value=1) if batch > 1 else ''}"
    )


def physical_memory() -> int | None:
    """Return this machine's physical memory in bytes, or None when it cannot be read."""
    if sys.platform == "win32":
        return _windows_memory()
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _windows_memory() -> int | None:
    import ctypes

    class MemoryStatus(ctypes.Structure):
        _fields_ = [("dwLength", ctypes.c_ulong), ("dwMemoryLoad", ctypes.c_ulong),
                    ("ullTotalPhys", ctypes.c_ulonglong), ("ullAvailPhys", ctypes.c_ulonglong),
                    ("ullTotalPageFile", ctypes.c_ulonglong), ("ullAvailPageFile", ctypes.c_ulonglong),
                    ("ullTotalVirtual", ctypes.c_ulonglong), ("ullAvailVirtual", ctypes.c_ulonglong),
                    ("ullAvailExtendedVirtual", ctypes.c_ulonglong)]

    status = MemoryStatus()
    status.dwLength = ctypes.sizeof(MemoryStatus)
    if not ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):  # type: ignore[attr-defined]
        return None
    return int(status.ullTotalPhys)
