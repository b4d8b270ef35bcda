"""Blending on the model's device (what a CUDA predict does) writes the same files as blending on the host.

The device path keeps tile probabilities as torch tensors and only brings uint8 classes and percent back;
here it runs with torch on the CPU against the numpy path, with the stand-in model (classes follow the
pixels) plus a ramp across each tile, so overlapping tiles disagree and the blend decides the result.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from torch import nn

from fastunet_core.errors import ConfigError
from fastunet_core.inference.predict import PredictOptions, Predictor


class TileBias(nn.Module):
    """The stand-in's logits plus a ramp across each tile: overlapping tiles disagree, so the blend decides."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.inner(x).clone()
        logits[:, 0] += torch.linspace(-30.0, 30.0, x.shape[-1], dtype=logits.dtype)
        return logits


def _run(raster: Path, model: Path, out: Path, stitch: str, **kw: object) -> tuple[np.ndarray, np.ndarray]:
    probs = out.with_suffix(".probs.tif")
    predictor = Predictor(model, PredictOptions(engine="torch", device="cpu", stitch=stitch, **kw))  # type: ignore[arg-type]
    predictor.engine.model = TileBias(predictor.engine.model)  # type: ignore[attr-defined]
    predictor.run(raster, out, probs)
    with rasterio.open(out) as a, rasterio.open(probs) as b:
        return a.read(1), b.read()


@pytest.mark.parametrize("extra", [{}, {"blend": "core"}, {"resolution": 6.0}], ids=["cosine", "core", "resampled"])
def test_device_blend_equals_host_blend(tmp_path: Path, small_raster: Path, make_checkpoint: Callable[..., Path],
                                        extra: dict[str, object]) -> None:
    model = make_checkpoint(tile=64, overlap=24)
    host_cls, host_pct = _run(small_raster, model, tmp_path / "host.tif", "host", **extra)
    dev_cls, dev_pct = _run(small_raster, model, tmp_path / "dev.tif", "device", **extra)
    assert len(np.unique(host_cls)) >= 2, "the check needs a map with several classes"
    assert len(np.unique(host_pct)) >= 50, "the check needs probabilities that vary"
    np.testing.assert_array_equal(dev_cls, host_cls)
    np.testing.assert_array_equal(dev_pct, host_pct)


def test_device_blend_needs_the_pytorch_engine(make_checkpoint: Callable[..., Path]) -> None:
    model = make_checkpoint()
    with pytest.raises(ConfigError, match="PyTorch engine"):
        Predictor(model, PredictOptions(engine="onnx", device="cpu", stitch="device"))
    with pytest.raises(ConfigError, match="stitch"):
        Predictor(model, PredictOptions(engine="torch", device="cpu", stitch="gpu"))
    # auto blends on the host without CUDA
    assert Predictor(model, PredictOptions(engine="torch", device="cpu")).device_arrays is None
