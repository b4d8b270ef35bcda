"""``test_pixel_colour``: a deterministic stand-in model for tests, demos of the plumbing and benches.

A single 1x1 convolution that gives every pixel the class of the nearest grey prototype: class ``k`` of
``K`` stands for the grey level ``g_k = ((k + 0.5) / K) ** 1.5`` of the normalised input (dark pixels get the
first class, bright ones the last). Its weights are set in the constructor, not drawn at random, so every
build, checkpoint, engine (PyTorch eager, folded, bf16, ONNX) and process gives the same map, and the map
follows the image: tests that compare two runs compare maps that differ from place to place, so a shifted
tile or swapped outputs show. It has no spatial context, so it checks placement, not the model's receptive
field. Not a trained model.

Nearest prototype in the least-squares sense: ``argmin_k |x - g_k 1|^2 = argmax_k (2 g_k sum(x) - C g_k^2)``
for ``C`` bands, i.e. a 1x1 convolution with weight ``2 g_k`` and bias ``-C g_k^2`` (scaled for wide margins).
"""

from __future__ import annotations

import torch
from torch import nn

SHARPNESS = 20.0  # logit scale: wide margins so that bf16 and fp32 agree away from the class boundaries


def grey_prototypes(num_classes: int) -> torch.Tensor:
    """Return the ``(num_classes,)`` float32 grey levels in [0, 1] that stand for the classes."""
    k = torch.arange(num_classes, dtype=torch.float32)
    return ((k + 0.5) / num_classes) ** 1.5


class PixelColour(nn.Module):
    """A 1x1 convolution mapping each pixel to the class of the nearest grey level (see the module doc)."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.head = nn.Conv2d(in_channels, num_classes, 1)
        g = grey_prototypes(num_classes)
        weight = (SHARPNESS * 2 * g).reshape(num_classes, 1, 1, 1).expand_as(self.head.weight)
        self.head.weight = nn.Parameter(weight.clone())
        self.head.bias = nn.Parameter(-SHARPNESS * in_channels * g * g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, C, H, W)`` normalised pixels to ``(N, num_classes, H, W)`` logits."""
        return self.head(x)
