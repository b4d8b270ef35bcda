"""Resize tile arrays between the model's grid and the raster's (pure numpy, pixel centres aligned).

A tile read at the model's resolution gives probabilities on the model's grid; they are brought back to the
raster's window by bilinear interpolation (probabilities, never class ids), so blending and the argmax happen
on the raster's own grid. Pixel centres line up as in GDAL: ``src = (dst + 0.5) * in / out - 0.5``.
"""

from __future__ import annotations

import numpy as np


def _axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pos = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    pos = np.clip(pos, 0, n_in - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (pos - lo).astype(np.float32)


def resize_bilinear(arr: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Resize (C, h, w) float32 to (C, out_h, out_w) bilinearly."""
    _, h, w = arr.shape
    if (h, w) == (out_h, out_w):
        return arr
    y0, y1, fy = _axis(h, out_h)
    x0, x1, fx = _axis(w, out_w)
    rows = arr[:, y0] * (1 - fy)[None, :, None] + arr[:, y1] * fy[None, :, None]
    return (rows[:, :, x0] * (1 - fx) + rows[:, :, x1] * fx).astype(np.float32, copy=False)


def resize_nearest(mask: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Resize a (h, w) array to (out_h, out_w) by nearest neighbour (for masks)."""
    h, w = mask.shape
    ys = np.minimum(((np.arange(out_h) + 0.5) * h / out_h).astype(np.intp), h - 1)
    xs = np.minimum(((np.arange(out_w) + 0.5) * w / out_w).astype(np.intp), w - 1)
    return mask[ys][:, xs]
