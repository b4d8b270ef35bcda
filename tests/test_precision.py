"""``--precision auto``: bf16 only on CPUs with native bf16 and for models whose recorded agreement allows it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from fastunet_core.inference import precision as prec
from fastunet_core.models.metadata import InputSpec, ModelMeta, default_classes
from fastunet_core.runtime.cpu import Bf16Support, bf16_support
from fastunet_core.runtime.device import DeviceChoice

CPU = DeviceChoice("cpu", "test")


def _meta(agreement: float | None) -> ModelMeta:
    metrics = {} if agreement is None else {"bf16_agreement": {"value": agreement, "tiles": 4, "source": "test"}}
    return ModelMeta("unet_tiny", {}, InputSpec((1, 2, 3)), default_classes(["a", "b"]), metrics=metrics)


@pytest.mark.parametrize(("native", "agreement", "expected", "why"), [
    (True, 0.9995, "bf16", "AVX512-BF16"),
    (True, 0.9985, "fp32", "below 99.9%"),
    (True, None, "fp32", "no recorded bf16 agreement"),
    (False, 1.0, "fp32", "no native bf16"),
])
def test_auto_needs_native_bf16_and_the_recorded_agreement(monkeypatch: pytest.MonkeyPatch, native: bool,
                                                          agreement: float | None, expected: str, why: str) -> None:
    monkeypatch.setattr(prec, "bf16_support", lambda: Bf16Support(avx512_bf16=native, amx_bf16=False))
    choice = prec.choose_precision("auto", _meta(agreement), CPU)
    assert choice.precision == expected and why in choice.reason, choice
    assert prec.choose_precision("fp32", _meta(1.0), CPU).precision == "fp32"  # asked for: kept


def test_init_records_the_agreement_and_predict_follows_it(tmp_path: Path, rio_data: Path) -> None:
    """init --agreement-tiles measures on real imagery; predict's auto then picks bf16 on this CPU if it can."""
    from fastunet_core.inference.predict import PredictOptions, Predictor
    from fastunet_core.models.checkpoint_file import read_metadata

    ckpt = tmp_path / "m.safetensors"
    proc = subprocess.run([sys.executable, "-m", "fastunet_core.cli", "init", "test_pixel_colour", "--classes", "4",
                           "--tile", "128", "--overlap", "16", "--agreement-tiles", str(rio_data / "RGB.byte.tif"),
                           "-o", str(ckpt)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    record = read_metadata(ckpt).metrics["bf16_agreement"]
    assert record["source"] == "user tiles" and record["tiles"] >= 4 and record["value"] >= 0.999
    maps = {}
    for precision in ("auto", "fp32"):
        predictor = Predictor(ckpt, PredictOptions(precision=precision, device="cpu"))
        if precision == "auto":
            native = bf16_support().native
            assert predictor.precision.precision == ("bf16" if native else "fp32"), predictor.precision
            assert predictor.engine_name == ("pytorch (bfloat16)" if native else
                                             "onnxruntime (CPU, fp32, exported to the cache)")
        predictor.run(rio_data / "RGB.byte.tif", tmp_path / f"{precision}.tif")
        with rasterio.open(tmp_path / f"{precision}.tif") as ds:
            maps[precision] = ds.read(1)
    valid = maps["fp32"] != 255
    assert len(np.unique(maps["fp32"][valid])) > 1
    assert (maps["auto"][valid] == maps["fp32"][valid]).mean() >= 0.999


@pytest.mark.parametrize("arch", ["unet_tiny", "unet_skinny", "test_pixel_colour"])
@pytest.mark.parametrize("bands", [1, 3, 4])
def test_bf16_convolutions_all_run_in_onednn(arch: str, bands: int) -> None:
    """No layer of the CPU bf16 path falls back to PyTorch's reference kernels (``aten::_slow_conv2d_forward``)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from fastunet_core.inference.optimize import optimize_for_cpu
    from fastunet_core.models.registry import build_model

    model = optimize_for_cpu(build_model(arch, bands, 5).eval()).to(torch.bfloat16)
    x = torch.randn(2, bands, 128, 128).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        model(x)
    ops = {e.key for e in prof.key_averages()}
    assert not {op for op in ops if "slow_conv" in op or "thnn_conv" in op}, sorted(ops)
    assert any("mkldnn" in op or "onednn" in op for op in ops), sorted(ops)  # the fast path did run
