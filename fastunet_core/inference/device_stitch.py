"""Blend tiles and decide classes where the model ran: a CUDA predict keeps probabilities on the GPU.

On the host, a CUDA predict spent most of its time outside the GPU (profile of ``make gpu-check`` on an
H200: 6 % GPU busy): copying every tile's float32 probabilities back, blending them into the cell
accumulators and taking the argmax there. With these operations the :class:`StreamingStitcher` keeps its
accumulators as tensors on the model's device, and a finished cell comes back as uint8 class ids (and
percent, when asked): 1 byte per pixel instead of 4 per class. The arithmetic is the host path's (float32,
the same order of operations, ties to the first class), so the class map is the same byte for byte; the
CPU tests run it with torch on the CPU against the numpy path.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fastunet_core.inference.heads import OutputHead


class TorchArrays:
    """The array operations :class:`~fastunet_core.tiling.stitching.StreamingStitcher` needs, on ``device``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def zeros(self, shape: tuple[int, ...]) -> torch.Tensor:
        """Return a float32 accumulator on the device."""
        return torch.zeros(shape, dtype=torch.float32, device=self.device)

    def asarray(self, values: Any) -> torch.Tensor:
        """Return ``values`` (a numpy array or a tensor) as a tensor on the device."""
        if isinstance(values, torch.Tensor):
            return values.to(self.device)
        return torch.from_numpy(np.ascontiguousarray(values)).to(self.device)


def to_host(values: Any) -> np.ndarray:
    """Return a tensor (anywhere) or an array as a numpy array."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def class_map_on_device(head: OutputHead, sums: torch.Tensor, wsum: torch.Tensor, nodata: int) -> np.ndarray:
    """:meth:`OutputHead.class_map` computed on the tensors' device; only the uint8 class ids come back."""
    if head.kind != "softmax" or head.threshold:  # not the checkpoints' head: the host's code, on host copies
        return head.class_map(to_host(sums), to_host(wsum), nodata)
    ids = torch.tensor([c.id for c in head.classes], dtype=torch.uint8, device=sums.device)
    out = ids[sums[head.start : head.stop].argmax(dim=0)]  # ties: the first maximal class, as argmax_channels
    out[wsum <= 0] = nodata
    return to_host(out)


def percent_on_device(sums: torch.Tensor, wsum: torch.Tensor, nodata: int) -> np.ndarray:
    """:func:`~fastunet_core.tiling.stitching.percent_from_sums` on the tensors' device (uint8 percent back)."""
    safe = torch.where(wsum > 0, wsum, torch.ones_like(wsum))
    pct = torch.round(sums / safe * 100.0).clamp(0, 100).to(torch.uint8)  # round half to even, as np.rint
    pct[:, wsum <= 0] = nodata
    return to_host(pct)
