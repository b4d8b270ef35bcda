"""Augment and normalise training samples: numpy (image, mask) in, model-ready tensors out.

Training augmentation (``SampleTransform(spec, train=True)``), as in the paper:

- geometry, through albumentations, applied identically to image and mask: HorizontalFlip (p 0.5),
  VerticalFlip (p 0.5) and RandomRotate90 (k uniform in 0..3), so all eight flips/rotations of the
  square are equally likely. They move whole pixels, so the mask needs no interpolation at all (the
  nearest-neighbour result is exact).
- colour, with probability 0.5: for 3-band uint8 images albumentations' ColorJitter (brightness and
  contrast factors in [0.8, 1.2], hue shift up to 0.05 of the hue circle, saturation untouched). Hue is
  only meaningful for RGB, and albumentations' colour transforms assume uint8 or [0, 1] floats, so for
  any other band count or dtype (16-bit panchromatic, multispectral, float) the same brightness and
  contrast factors are applied here in float32: ``x * b`` then ``mean + (x - mean) * c`` over the whole
  image, clipped to the InputSpec value range for integer sources. Both are scale-free, so a uint16
  image using a fraction of its range is not wrecked.

Before anything else, non-finite pixels (NaN, +/-inf, and the nodata pixels datasets hand on as NaN) get
the raw value that normalises to 0 (:meth:`InputSpec.fill_values`, the same input predict gives nodata)
and IGNORE_INDEX in the mask, so they reach neither the model nor the loss and metrics.

Then the image is padded if asked (:func:`pad_to_multiple`) and normalised with ``InputSpec.normalise``
(never an unconditional /255). Random draws come from torch's generator (one draw per sample seeds a
numpy generator shared by all transforms), so ``torch.manual_seed`` and DataLoader worker seeding make
augmentation reproducible, and a resumed run that restores torch's RNG state continues the same stream;
``set_random_seed(s)`` instead fixes the next sample's draws (e.g. from (seed, epoch, index)), which
makes them independent of worker count and order.
"""

from __future__ import annotations

import os
import random

# albumentations asks PyPI for a newer version at import unless told not to: no network calls from training
# (an offline GPU machine would wait for the timeout, and every run would leak a request)
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albumentations as alb
import numpy as np
import torch

from fastunet_core.errors import ConfigError
from fastunet_core.models.metadata import InputSpec
from fastunet_core.train.datasets import IGNORE_INDEX
from fastunet_core.train.device_augment import draw_params, is_rgb8

JITTER_P = 0.5
BRIGHTNESS = 0.2
CONTRAST = 0.2
HUE = 0.05


def pad_to_multiple(image: np.ndarray, mask: np.ndarray, divisor: int, min_size: int = 0) -> tuple[np.ndarray,
                                                                                                   np.ndarray]:
    """Pad bottom/right so height and width are multiples of ``divisor`` (and at least ``min_size``).

    Args:
        image: (H, W, bands) array; padded by mirroring (``symmetric``), so the model sees plausible
            texture rather than a hard black edge.
        mask: (H, W) array; padded with IGNORE_INDEX, so the padding counts for nothing in loss and metrics.
        divisor: e.g. ``2 ** levels`` for a UNet with that many poolings.
        min_size: pad up to at least this size first (e.g. the tile size, for a window at a small raster).

    Returns:
        The padded image and mask (the inputs themselves when no padding is needed).

    """
    if divisor < 1:
        raise ConfigError(f"divisor must be a positive integer, got {divisor}")
    h, w = mask.shape
    th = -(-max(h, min_size) // divisor) * divisor
    tw = -(-max(w, min_size) // divisor) * divisor
    if (th, tw) == (h, w):
        return image, mask
    image = np.pad(image, ((0, th - h), (0, tw - w), (0, 0)), mode="symmetric")
    mask = np.pad(mask, ((0, th - h), (0, tw - w)), mode="constant", constant_values=IGNORE_INDEX)
    return image, mask


def fill_nonfinite(image: np.ndarray, mask: np.ndarray, fill: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Give non-finite pixels (NaN, +/-inf: no data) of a float image a neutral value and ignore them.

    Args:
        image: (H, W, bands); integer images are returned as they are.
        mask: (H, W) channel indices; pixels with a non-finite value in any band become IGNORE_INDEX.
        fill: one raw value per band (``InputSpec.fill_values()``: what normalises to 0, as in predict).

    Returns:
        The image (a copy when something was filled) and the mask (a copy when something changed).

    """
    if not np.issubdtype(image.dtype, np.floating):
        return image, mask
    finite = np.isfinite(image)
    if finite.all():
        return image, mask
    image = np.where(finite, image, fill.astype(image.dtype).reshape(1, 1, -1))
    mask = np.where(finite.all(axis=-1), mask, IGNORE_INDEX)
    return image, mask


class SampleTransform:
    """Turn a numpy sample into tensors: augment (training only), pad, normalise.

    Calling it on ``(image (H, W, bands), mask (H, W))`` returns ``(tensor (bands, H, W) float32,
    tensor (H, W) int64)``; the bands fed are ``spec.bands`` (1-based) of the image.
    """

    def __init__(self, spec: InputSpec, train: bool, *, divisor: int = 1, min_size: int = 0,
                 photometric: bool = True, device_side: bool = False) -> None:
        self.spec = spec
        self.device_side = device_side  # hand over raw pixels + parameters (see fastunet_core.train.device_augment)
        self.train = train
        self.divisor = divisor
        self.min_size = min_size
        self.photometric = photometric
        self._next_seed: int | None = None
        self._geometric = alb.Compose([alb.HorizontalFlip(p=0.5), alb.VerticalFlip(p=0.5), alb.RandomRotate90(p=1.0)])
        self._jitter = alb.Compose([alb.ColorJitter(brightness=BRIGHTNESS, contrast=CONTRAST, saturation=0.0, hue=HUE,
                                                p=JITTER_P)])

    def set_random_seed(self, seed: int | None) -> None:
        """Fix the random draws of the next call (then back to torch's generator); None clears it."""
        self._next_seed = None if seed is None else int(seed)

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Transform one sample."""
        image = self._select_bands(image)
        image, mask = fill_nonfinite(image, mask, self.spec.fill_values())
        if self.train:
            image, mask = self._augment(image, mask)
        if self.divisor > 1 or self.min_size:
            image, mask = pad_to_multiple(image, mask, self.divisor, self.min_size)
        x = self.spec.normalise(np.moveaxis(image, -1, 0))
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.asarray(mask, dtype=np.int64))

    def raw(self, image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Select bands, pad and draw the parameters; leave the pixels raw for :class:`DeviceBatchTransform`.

        Returns (bands, H, W) pixels in the source dtype (uint8; other integers as int32; floats as float32),
        the (H, W) uint8 mask and the sample's augmentation parameters (identity when not training).
        """
        image = self._select_bands(image)
        image, mask = fill_nonfinite(image, mask, self.spec.fill_values())  # as in __call__: no NaN to the device
        if mask.min() < 0 or mask.max() > IGNORE_INDEX:
            raise ConfigError(f"mask values must be channel indices or {IGNORE_INDEX}, got {mask.min()}..{mask.max()}")
        if self.divisor > 1 or self.min_size:
            image, mask = pad_to_multiple(image, mask, self.divisor, self.min_size)
        seed, self._next_seed = self._next_seed, None
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, ()).item())
        params = draw_params(np.random.default_rng(seed), train=self.train, photometric=self.photometric,
                             square=mask.shape[0] == mask.shape[1], rgb=is_rgb8(self.spec))
        raw = np.moveaxis(image, -1, 0)
        if raw.dtype != np.uint8 and np.issubdtype(raw.dtype, np.integer):
            raw = raw.astype(np.int32)  # uint16 and friends: a type torch handles everywhere
        elif not np.issubdtype(raw.dtype, np.integer):
            raw = raw.astype(np.float32)
        return (torch.from_numpy(np.ascontiguousarray(raw)), torch.from_numpy(mask.astype(np.uint8)),
                torch.from_numpy(params))

    def _select_bands(self, image: np.ndarray) -> np.ndarray:
        n = image.shape[-1]
        if self.spec.bands == tuple(range(1, n + 1)):
            return image
        if max(self.spec.bands) > n:
            raise ConfigError(f"the input spec reads bands {list(self.spec.bands)} but the images have {n} band(s)")
        return image[..., [b - 1 for b in self.spec.bands]]

    def _augment(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if mask.min() < 0 or mask.max() > IGNORE_INDEX:
            raise ConfigError(f"mask values must be channel indices or {IGNORE_INDEX}, got {mask.min()}..{mask.max()}")
        seed, self._next_seed = self._next_seed, None
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, ()).item())
        rng = np.random.default_rng(seed)
        self._geometric.set_random_state(rng, random.Random(seed))
        out = self._geometric(image=image, mask=mask.astype(np.uint8))
        image, mask = out["image"], out["mask"].astype(np.int64)
        if not self.photometric:
            return image, mask
        if image.dtype == np.uint8 and image.shape[-1] == 3:
            self._jitter.set_random_state(rng, random.Random(seed + 1))
            return self._jitter(image=image)["image"], mask
        return self._brightness_contrast(image, rng), mask

    def _brightness_contrast(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() >= JITTER_P:
            return image
        b, c = rng.uniform(1 - BRIGHTNESS, 1 + BRIGHTNESS), rng.uniform(1 - CONTRAST, 1 + CONTRAST)
        x = image.astype(np.float32) * np.float32(b)
        x = np.float32(x.mean()) + (x - np.float32(x.mean())) * np.float32(c)
        if np.issubdtype(image.dtype, np.integer):
            np.clip(x, *self.spec.value_range, out=x)
        return x
