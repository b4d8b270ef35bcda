"""Augmentation and normalisation on the device (fastunet_core.train.device_augment), run here on CPU tensors.

The same code runs on a GPU in training; tests/test_cuda.py checks that CUDA gives the CPU's numbers.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from fastunet_core.models.metadata import InputSpec
from fastunet_core.train.augment import SampleTransform
from fastunet_core.train.device_augment import IDENTITY, N_PARAMS, DeviceBatchTransform, draw_params

RGB = InputSpec(bands=(1, 2, 3), dtype="uint8", value_range=(0.0, 255.0), mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))


def _sample(seed: int = 0, side: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    return image, (image[..., 0] % 5).astype(np.int64)  # the mask is a function of band 1's pixel


def _params(t: int = 0, fx: int = 0, fy: int = 0, jitter: int = 0, b: float = 1.0, c: float = 1.0,
            h: float = 0.0) -> torch.Tensor:
    return torch.tensor([[t, fx, fy, jitter, b, c, h]], dtype=torch.float32)


def _raw(image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(np.moveaxis(image, -1, 0).copy())[None], torch.from_numpy(mask.astype(np.uint8))[None]


def _denormalise(x: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    mean, std = torch.tensor(spec.mean)[:, None, None], torch.tensor(spec.std)[:, None, None]
    return (x * std + mean) * 255.0


def test_identity_parameters_give_the_cpu_paths_input() -> None:
    image, mask = _sample()
    cpu_x, cpu_y = SampleTransform(RGB, train=False)(image, mask)
    x, y = DeviceBatchTransform(RGB)(*_raw(image, mask), torch.from_numpy(IDENTITY)[None])
    assert torch.allclose(x[0], cpu_x, atol=1e-5)
    assert torch.equal(y[0], cpu_y)


def test_the_eight_flips_and_rotations_move_mask_and_image_together() -> None:
    image, mask = _sample(side=12)
    tf = DeviceBatchTransform(RGB)
    outputs = []
    for t, fx, fy in itertools.product((0, 1), repeat=3):
        x, y = tf(*_raw(image, mask), _params(t, fx, fy))
        band1 = torch.round(_denormalise(x[0], RGB)[0]).long()
        assert torch.equal(y[0], band1 % 5), (t, fx, fy)  # every mask pixel went where its image pixel went
        outputs.append(band1)
    assert len({tuple(o.flatten().tolist()) for o in outputs}) == 8  # eight distinct results
    x, _ = tf(*_raw(image, mask), _params(t=1))
    assert torch.equal(torch.round(_denormalise(x[0], RGB)[0]).long(), torch.from_numpy(image[..., 0].T).long())


def test_colour_jitter_brightness_contrast_and_hue() -> None:
    image, mask = _sample()
    tf = DeviceBatchTransform(RGB)
    raw = _raw(image, mask)
    bright, _ = tf(*raw, _params(jitter=1, b=1.2))
    expected = np.clip(image.astype(np.float32) * 1.2, 0, 255)
    assert np.allclose(_denormalise(bright[0], RGB).numpy(), np.moveaxis(expected, -1, 0), atol=1e-3)
    off, _ = tf(*raw, _params(jitter=0, b=1.2, c=0.5, h=0.05))  # drawn but not applied
    assert np.allclose(_denormalise(off[0], RGB).numpy(), np.moveaxis(image, -1, 0), atol=1e-3)
    flat, _ = tf(*raw, _params(jitter=1, c=0.0))  # contrast 0: every pixel at the image's grey mean
    grey = (image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])).mean()
    assert np.allclose(_denormalise(flat[0], RGB).numpy(), grey, atol=1e-2)
    # a third of a turn about the grey axis maps red to green, green to blue, blue to red
    turned, _ = tf(*raw, _params(jitter=1, h=1 / 3))
    assert np.allclose(_denormalise(turned[0], RGB).numpy(), np.moveaxis(image, -1, 0)[[2, 0, 1]], atol=1e-2)


def test_sixteen_bit_jitter_clips_to_the_value_range() -> None:
    spec = InputSpec(bands=(1,), dtype="uint16", value_range=(0.0, 65535.0))
    raw = torch.tensor([[[[60000, 1000], [30000, 65535]]]], dtype=torch.int32)
    x, _ = DeviceBatchTransform(spec)(raw, torch.zeros(1, 2, 2, dtype=torch.uint8), _params(jitter=1, b=1.2))
    assert float(x.max()) == pytest.approx(1.0) and float(x.min()) == pytest.approx(1200 / 65535, rel=1e-5)


def test_parameters_are_uniform_over_the_eight_and_jitter_half_the_time() -> None:
    draws = np.stack([draw_params(np.random.default_rng(s), train=True, photometric=True, square=True, rgb=True)
                      for s in range(4000)])
    codes = (draws[:, 0] * 4 + draws[:, 1] * 2 + draws[:, 2]).astype(int)
    counts = np.bincount(codes, minlength=8)
    assert counts.min() > 400 and counts.max() < 600  # about 500 each
    assert 0.45 < draws[:, 3].mean() < 0.55
    assert np.all(np.abs(draws[:, 4] - 1) <= 0.2) and np.all(np.abs(draws[:, 6]) <= 0.05)
    tall = draw_params(np.random.default_rng(1), train=True, photometric=True, square=False, rgb=True)
    assert tall[0] == 0  # no transpose of a non-square tile
    assert np.array_equal(draw_params(np.random.default_rng(1), train=False, photometric=True, square=True,
                                      rgb=True), IDENTITY)


def test_raw_samples_are_seeded_and_small() -> None:
    image, mask = _sample()
    tf = SampleTransform(RGB, train=True, device_side=True)
    tf.set_random_seed(7)
    x, y, p = tf.raw(image, mask)
    tf.set_random_seed(7)
    _, _, again = tf.raw(image, mask)
    assert x.dtype == torch.uint8 and y.dtype == torch.uint8 and p.shape == (N_PARAMS,)
    assert torch.equal(p, again)
    spec16 = InputSpec(bands=(1,), dtype="uint16", value_range=(0.0, 65535.0))
    x16, _, _ = SampleTransform(spec16, train=False, device_side=True).raw(
        np.full((8, 8, 1), 60000, np.uint16), np.zeros((8, 8), np.int64))
    assert x16.dtype == torch.int32 and int(x16.max()) == 60000


def test_training_with_augmentation_on_the_device(shared_data: Path, tmp_path: Path) -> None:
    from fastunet_core.train.config import config_from_dict
    from fastunet_core.train.loop import train

    root = shared_data / "torchgeo-fixtures" / "landcoverai"
    cfg = config_from_dict({"data": {"kind": "landcoverai", "root": str(root), "tile_size": 32},
                            "output": str(tmp_path / "run"), "device": "cpu", "model": {"architecture": "unet_tiny"},
                            "augment": {"on_device": True},
                            "optim": {"epochs": 2, "batch_size": 2, "micro_batch": 2, "num_workers": 1,
                                      "max_batches_per_epoch": 3}})
    res = train(cfg)
    assert [h.epoch for h in res.history] == [1, 2]
    assert all(np.isfinite([h.train_loss for h in res.history] + [h.val_loss for h in res.history]))
