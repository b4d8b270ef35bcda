"""The paper's UNet family as one parameterised builder.

``UNet(widths, convs)``: one ConvBlock per level (``convs[j]`` times 3x3 conv + BatchNorm + ReLU), a 2x2
max-pool between levels, the last level is the bottleneck. The decoder goes back up level by level: a 2x2
stride-2 transposed convolution from ``widths[j+1]`` to ``widths[j]`` channels, concatenation with the
skip, then a ConvBlock with ``convs[j]`` convolutions. A 1x1 convolution maps to the classes.

The four variants of Cai & Zhang are presets of this builder (see :data:`PRESETS`); users define their own
trimmed UNets by giving other widths and convolution counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fastunet_core.errors import ConfigError
from fastunet_core.models.presets import PRESETS, SKINNY_WIDTHS

__all__ = ["PRESETS", "SKINNY_WIDTHS", "UNet"]


class ConvBlock(nn.Module):
    """``n`` x (3x3 convolution with bias, BatchNorm, ReLU).

    A module of its own rather than an ``nn.Sequential``: torchsummary-style footprints count the output of
    every module that is not a Sequential, and the paper's figures count this block's output (see
    :mod:`fastunet_core.models.summary`).
    """

    def __init__(self, cin: int, cout: int, n: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(n):
            layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1), nn.BatchNorm2d(cout),
                       nn.ReLU(inplace=True)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the convolutions."""
        return self.layers(x)


class UpBlock(nn.Module):
    """One decoder level: 2x2 stride-2 transposed conv (``cin`` to ``cout``), concat the skip, ConvBlock."""

    def __init__(self, cin: int, cout: int, n: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        self.block = ConvBlock(2 * cout, cout, n)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Upsample ``x``, join it with ``skip`` (same size, ``cout`` channels) and convolve."""
        return self.block(torch.cat([self.up(x), skip], dim=1))


class UNet(nn.Module):
    """A UNet with a width and a convolution count per level.

    Args:
        in_channels: number of input bands.
        num_classes: number of output classes (logit channels).
        widths: channels per level, top (full resolution) to bottom (bottleneck).
        convs: convolutions per block per level (same length as ``widths``), used by both the encoder
            block and the decoder block of that level; a single int applies to every level.

    Raises:
        ConfigError: on fewer than two levels, mismatched lengths or non-positive values.

    """

    def __init__(
        self, in_channels: int, num_classes: int, widths: Sequence[int], convs: Sequence[int] | int = 2
    ) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        convs_list = [int(convs)] * len(widths) if isinstance(convs, int) else [int(c) for c in convs]
        if len(widths) < 2:
            raise ConfigError(f"a UNet needs at least two levels, got widths {widths}")
        if len(convs_list) != len(widths):
            raise ConfigError(f"convs needs one count per level ({len(widths)}), got {convs_list}")
        if in_channels < 1 or num_classes < 1 or min(widths) < 1 or min(convs_list) < 1:
            raise ConfigError("in_channels, num_classes, widths and convs must all be positive")
        self.widths = widths
        self.encoder = nn.ModuleList()
        cin = in_channels
        for w, n in zip(widths, convs_list, strict=True):
            self.encoder.append(ConvBlock(cin, w, n))
            cin = w
        self.pool = nn.MaxPool2d(2)
        self.decoder = nn.ModuleList(
            UpBlock(widths[j + 1], widths[j], convs_list[j]) for j in range(len(widths) - 2, -1, -1)
        )
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    @property
    def size_divisor(self) -> int:
        """Input height and width must be multiples of this (one halving per pool)."""
        return 2 ** (len(self.widths) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (B, bands, H, W) to logits (B, classes, H, W).

        Raises:
            ConfigError: if H or W is not a multiple of :attr:`size_divisor` (checked in eager mode only,
                not while tracing, scripting or compiling).

        """
        if not (torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling()):
            self._check_size(x)
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x)
            if i < len(self.encoder) - 1:
                skips.append(x)
                x = self.pool(x)
        for up in self.decoder:
            x = up(x, skips.pop())
        return self.head(x)

    def _check_size(self, x: torch.Tensor) -> None:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        d = self.size_divisor
        if h % d or w % d:
            raise ConfigError(
                f"input height and width must be multiples of {d} for this {len(self.widths)}-level UNet, "
                f"got {h}x{w}; pad to {-(-h // d) * d}x{-(-w // d) * d}"
            )
