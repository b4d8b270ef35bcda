"""Output heads: which channels of the engine's output make one class map, and how.

A fastunet-geo checkpoint has one softmax head over all channels. A Deepness-format ONNX model may have
several heads, each a softmax over its classes or a sigmoid (channels ``1 - p``, ``p``). The decision is
taken after blending, per head: argmax (probabilities below the threshold, when one is set, do not count,
as in Deepness), or ``p >= threshold`` for a sigmoid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fastunet_core.models.metadata import ClassInfo
from fastunet_core.tiling.stitching import argmax_channels


@dataclass(frozen=True)
class OutputHead:
    """One class map made from channels ``start .. start + len(classes)`` of the engine's output."""

    classes: tuple[ClassInfo, ...]
    start: int = 0
    kind: str = "softmax"  # or "sigmoid"
    threshold: float | None = None  # softmax: ignore weaker probabilities; sigmoid: class 1 where p >= this

    @property
    def stop(self) -> int:
        """One past the head's last channel."""
        return self.start + len(self.classes)

    def class_map(self, sums: np.ndarray, wsum: np.ndarray, nodata: int) -> np.ndarray:
        """Blended channel sums (C_all, h, w) and weight sum (h, w) to class ids (h, w); ``nodata`` where no weight."""
        s = sums[self.start : self.stop]
        ids = np.asarray([c.id for c in self.classes], dtype=np.uint8)
        safe = np.where(wsum > 0, wsum, 1.0)
        if self.kind == "sigmoid":
            idx = (s[1] / safe >= (0.5 if self.threshold is None else self.threshold)).astype(np.intp)
        else:
            idx = argmax_channels(s)
            if self.threshold:
                best = np.take_along_axis(s, idx[None], axis=0)[0] / safe
                idx[best < self.threshold] = 0
        out = ids[idx]
        out[wsum <= 0] = nodata
        return out
