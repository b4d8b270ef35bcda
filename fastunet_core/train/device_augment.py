"""Training augmentation and normalisation on the device, batched, after the copy (the GPU path).

On a GPU the loader workers only read, select bands, pad and draw each sample's random parameters, from
the same per-sample seed (seed, epoch, index) as the CPU path (:class:`~fastunet_core.train.augment.SampleTransform`),
so a run stays reproducible whatever the worker count. They hand over the raw pixels in the source dtype
(uint8 stays uint8: a quarter of float32's bytes through pinned memory and PCIe), the mask as uint8 and the
parameters; on the device the whole batch is flipped, transposed, colour-jittered and normalised in a few
tensor operations, with no host-device synchronisation.

The augmentation is the paper's, as on the CPU path: the eight flips/rotations of a square tile equally
likely (transpose, horizontal and vertical flip, each with probability 0.5), and with probability 0.5 a
colour jitter: brightness and contrast factors in [0.8, 1.2]; for 3-band uint8 images also a hue shift of
up to 0.05 of the circle (a rotation about the grey axis, where albumentations converts to HSV: the same
kind of shift, not bit-identical); clipped to the value range for integer sources. Mask pixels move with
the image pixels exactly.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from fastunet_core.models.metadata import InputSpec

BRIGHTNESS = 0.2
CONTRAST = 0.2
HUE = 0.05
JITTER_P = 0.5
N_PARAMS = 7  # transpose, flip_x, flip_y, jitter, brightness, contrast, hue
IDENTITY = np.array([0, 0, 0, 0, 1, 1, 0], dtype=np.float32)
_GREY = (0.299, 0.587, 0.114)  # the luma weights albumentations' contrast uses for RGB


def is_rgb8(spec: InputSpec) -> bool:
    """Return True for 3-band uint8 input, the one that gets a hue shift (as on the CPU path)."""
    return spec.dtype == "uint8" and spec.n_bands == 3


def draw_params(rng: np.random.Generator, *, train: bool, photometric: bool, square: bool,
                rgb: bool) -> np.ndarray:
    """Draw one sample's augmentation parameters (float32, N_PARAMS); identity when not training."""
    if not train:
        return IDENTITY.copy()
    t, fx, fy = (int(v) for v in rng.integers(0, 2, 3))
    jitter = photometric and rng.random() < JITTER_P
    b = rng.uniform(1 - BRIGHTNESS, 1 + BRIGHTNESS)
    c = rng.uniform(1 - CONTRAST, 1 + CONTRAST)
    h = rng.uniform(-HUE, HUE) if rgb else 0.0
    return np.array([t if square else 0, fx, fy, float(jitter), b, c, h], dtype=np.float32)


def _hue_matrices(shift: torch.Tensor) -> torch.Tensor:
    """Return (N, 3, 3) rotations of RGB about the grey axis by ``shift`` turns."""
    a = shift * (2 * math.pi)
    cos, sin = torch.cos(a), torch.sin(a)
    third, root = (1 - cos) / 3, sin * math.sqrt(1 / 3)
    d = cos + third
    return torch.stack([torch.stack([d, third - root, third + root], -1),
                        torch.stack([third + root, d, third - root], -1),
                        torch.stack([third - root, third + root, d], -1)], -2)


class DeviceBatchTransform:
    """Augment (training) and normalise a batch of raw samples where it lies (GPU or CPU).

    Call with ``x`` (N, bands, H, W) in the source dtype, ``y`` (N, H, W) integer masks and ``params``
    (N, N_PARAMS) from :func:`draw_params`; returns (float32 model input, int64 masks).
    """

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        self.rgb = is_rgb8(spec)
        self.integer = np.issubdtype(np.dtype(spec.dtype), np.integer)
        lo, hi = spec.value_range
        self.lo, self.scale = float(lo), 1.0 / (float(hi) - float(lo))
        n = spec.n_bands
        self.mean = torch.tensor(spec.mean if spec.mean else (0.0,) * n, dtype=torch.float32)
        self.std = torch.tensor(spec.std if spec.std else (1.0,) * n, dtype=torch.float32)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Transform one batch."""
        x, y = x.float(), y.long()
        p = params.to(device=x.device, dtype=torch.float32)
        flag = p[:, :4] > 0.5
        if x.shape[-1] == x.shape[-2]:
            x = torch.where(flag[:, 0, None, None, None], x.transpose(-1, -2), x)
            y = torch.where(flag[:, 0, None, None], y.transpose(-1, -2), y)
        x = torch.where(flag[:, 1, None, None, None], x.flip(-1), x)
        y = torch.where(flag[:, 1, None, None], y.flip(-1), y)
        x = torch.where(flag[:, 2, None, None, None], x.flip(-2), x)
        y = torch.where(flag[:, 2, None, None], y.flip(-2), y)
        x = self._jitter(x, flag[:, 3], p[:, 4], p[:, 5], p[:, 6])
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        x = ((x - self.lo) * self.scale - mean[:, None, None]) / std[:, None, None]
        return x.contiguous(), y.contiguous()

    def _jitter(self, x: torch.Tensor, on: torch.Tensor, b: torch.Tensor, c: torch.Tensor,
                h: torch.Tensor) -> torch.Tensor:
        b = torch.where(on, b, torch.ones_like(b))[:, None, None, None]
        c = torch.where(on, c, torch.ones_like(c))[:, None, None, None]
        lo, hi = self.spec.value_range
        out = x * b
        if self.integer:
            out = out.clamp(lo, hi)
        if self.rgb:
            weights = torch.tensor(_GREY, dtype=out.dtype, device=out.device)
            grey = torch.einsum("c,nchw->nhw", weights, out).mean(dim=(-1, -2))[:, None, None, None]
        else:
            grey = out.mean(dim=(1, 2, 3), keepdim=True)
        out = grey + (out - grey) * c
        if self.integer:
            out = out.clamp(lo, hi)
        if self.rgb:
            shift = torch.where(on, h, torch.zeros_like(h))
            out = torch.einsum("nij,njhw->nihw", _hue_matrices(shift), out).clamp(lo, hi)
        return out
