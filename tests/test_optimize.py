"""The CPU fast path (BatchNorm folded, channels_last) gives the eager model's results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window

from fastunet_core.inference.optimize import fold_batchnorm, optimize_for_cpu
from fastunet_core.models.registry import build_model


def _trained_like(arch: str) -> torch.nn.Module:
    """A model with non-trivial BatchNorm statistics, as after training."""
    torch.manual_seed(0)
    model = build_model(arch, 3, 5).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model


@pytest.mark.parametrize("arch", ["unet_skinny", "unet_lessconv", "deeplabv3plus"])
def test_folded_model_matches_eager_on_real_imagery(rio_data: Path, arch: str) -> None:
    model = _trained_like(arch)
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    _folded, count = fold_batchnorm(model)
    assert count > 0
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == n_bn  # original untouched
    if arch.startswith("unet_"):
        assert count == n_bn  # every BatchNorm of the paper's UNets follows a convolution in a Sequential
    with rasterio.open(rio_data / "cogeo.tif") as src:
        img = src.read(window=Window(256, 256, 128, 128)).astype(np.float32) / 255.0
    x = torch.from_numpy(img)[None]
    fast = optimize_for_cpu(model)
    with torch.inference_mode():
        eager = model(x)
        got = fast(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(eager, got, atol=1e-4, rtol=1e-4)
    assert torch.equal(eager.argmax(1), got.argmax(1))


def test_bf16_precision_opt_in_agrees_with_fp32(tmp_path: Path, rio_data: Path, make_checkpoint) -> None:  # type: ignore[no-untyped-def]
    from fastunet_core.inference.predict import PredictOptions, predict_raster

    ckpt = make_checkpoint()
    maps = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / f"{precision}.tif"
        predict_raster(rio_data / "RGB.byte.tif", ckpt, out, PredictOptions(precision=precision, device="cpu"))
        with rasterio.open(out) as ds:
            maps[precision] = ds.read(1)
    assert np.array_equal(maps["fp32"] == 255, maps["bf16"] == 255)
    assert (maps["fp32"] == maps["bf16"]).mean() > 0.98


def test_unknown_precision_is_refused() -> None:
    from fastunet_core.errors import ConfigError
    from fastunet_core.inference.engine import TorchEngine
    from fastunet_core.runtime.device import resolve_device

    with pytest.raises(ConfigError, match="bf16"):
        TorchEngine(build_model("unet_tiny", 3, 2), resolve_device("cpu"), precision="int4")


def test_onnx_engine_matches_pytorch_on_real_imagery(rio_data: Path) -> None:
    from fastunet_core.inference.engine import TorchEngine, make_engine
    from fastunet_core.runtime.device import resolve_device

    model = _trained_like("unet_skinny")
    with rasterio.open(rio_data / "cogeo.tif") as src:
        batch = (src.read(window=Window(0, 0, 128, 128)).astype(np.float32) / 255.0)[None]
    cpu = resolve_device("cpu")
    engine, name = make_engine(model, cpu, (1, 3, 128, 128), engine="onnx")
    assert name.startswith("onnxruntime")
    got = engine(np.concatenate([batch, batch[:, :, ::-1].copy()]))  # batch size other than the export's
    expected = TorchEngine(model, cpu, fast_cpu=False)(np.concatenate([batch, batch[:, :, ::-1].copy()]))
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-4
    assert np.array_equal(got.argmax(1), expected.argmax(1))
    _, auto_name = make_engine(model, cpu, (1, 3, 128, 128))
    assert auto_name.startswith("onnxruntime")  # the default on CPUs when installed
    _, bf16_name = make_engine(model, cpu, (1, 3, 128, 128), precision="bf16")
    assert bf16_name == "pytorch (bfloat16)"
