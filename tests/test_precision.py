"""``--precision auto``: bf16 only on CPUs with native bf16 and for models whose recorded agreement allows it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from fastunet_core.inference import precision as prec
from fastunet_core.models.metadata import InputSpec, ModelMeta, default_classes
from fastunet_core.runtime.cpu import Bf16Support, bf16_support
from fastunet_core.runtime.device import DeviceChoice

CPU = DeviceChoice("cpu", "test")


def _meta(agreement: float | None, **record: object) -> ModelMeta:
    metrics = {} if agreement is None else {"bf16_agreement": {"value": agreement, "tiles": 4, "source": "test",
                                                                **record}}
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
    asked = prec.choose_precision("bf16", _meta(1.0), CPU)  # asked for: kept, saying what it costs without native
    assert asked.precision == "bf16" and (prec.EMULATED_BF16 in asked.reason) is (not native), asked
    assert choice.fp32_layers == ()  # recorded before plans existed: all-bf16, what its value measured


@pytest.mark.parametrize(("agreement", "expected"), [(0.9995, "bf16"), (0.9985, "fp32")])
def test_auto_runs_the_recorded_plan_and_says_so(monkeypatch: pytest.MonkeyPatch, agreement: float,
                                                 expected: str) -> None:
    monkeypatch.setattr(prec, "bf16_support", lambda: Bf16Support(avx512_bf16=True, amx_bf16=False))
    meta = _meta(agreement, fp32_layers=["encoder.0.layers.0", "head"], bf16_only=0.998)
    choice = prec.choose_precision("auto", meta, CPU)
    assert choice.precision == expected, choice
    assert "with 2 layers kept in fp32 (encoder.0.layers.0, head)" in choice.reason, choice
    assert choice.fp32_layers == (("encoder.0.layers.0", "head") if expected == "bf16" else ())
    asked = prec.choose_precision("bf16", meta, CPU)  # bf16 asked for runs the model's bf16 form: the plan
    assert asked.fp32_layers == ("encoder.0.layers.0", "head") and "as recorded" in asked.reason
    old = _meta(None)
    old.metrics["bf16_agreement"] = 0.9995  # the oldest form: a bare number
    assert prec.choose_precision("auto", old, CPU) == prec.PrecisionChoice("bf16", prec.choose_precision(
        "auto", old, CPU).reason, ())


class _TwoLayers(torch.nn.Module):
    """``first`` decides the class from input differences finer than bf16 keeps; ``head`` passes it on."""

    def __init__(self, boundary: float) -> None:
        super().__init__()
        self.first, self.head = torch.nn.Conv2d(1, 2, 1), torch.nn.Conv2d(2, 2, 1)
        with torch.no_grad():
            self.first.weight.copy_(torch.tensor([1.0, -1.0]).reshape(2, 1, 1, 1))
            self.first.bias.copy_(torch.tensor([-boundary, boundary]))
            self.head.weight.copy_(torch.eye(2).reshape(2, 2, 1, 1) * 4)
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.first(x)) + 0.5 * self.first(x))


def test_plan_keeps_the_sensitive_layer_in_fp32_and_only_it() -> None:
    """bf16 rounds the input near 1.0 to steps of 1/128: only ``first`` in fp32 gives fp32's classes back."""
    model = _TwoLayers(1.0 + 1 / 512).eval()
    gen = torch.Generator().manual_seed(0)
    tiles = [1.0 + torch.rand(1, 1, 32, 32, generator=gen) / 64 for _ in range(3)]
    plan = prec.plan_bf16(model, tiles)
    assert plan.bf16_only < 0.95, plan  # all-bf16 moves many pixels: the test can see a wrong plan
    assert plan.fp32_layers == ("first",) and plan.agreement == 1.0 and plan.tiles == 3, plan
    assert prec.plan_bf16(model, tiles, target=0.5).fp32_layers == ()  # all-bf16 is enough: nothing kept


def _boundary_raster(path: Path) -> Path:
    """A uint16 band whose grey levels straddle ``test_pixel_colour``'s class boundary within bf16's rounding."""
    from rasterio.transform import Affine

    from fastunet_core.models.pixel_colour import grey_prototypes

    boundary = float(grey_prototypes(2).mean()) * 65535
    rows, cols = np.mgrid[0:256, 0:256]
    band = (np.round(boundary) + (rows * 7 + cols * 13) % 601 - 300).astype(np.uint16)
    with rasterio.open(path, "w", driver="GTiff", width=256, height=256, count=1, dtype="uint16",
                       crs="EPSG:32633", transform=Affine(1, 0, 500000, 0, -1, 4100000)) as ds:
        ds.write(band, 1)
    return path


def test_the_plan_init_records_is_what_predict_runs(tmp_path: Path) -> None:
    """init --agreement-tiles keeps the sensitive layer in fp32; predict runs that plan and its log line says so;
    an older record (no plan) runs all-bf16, as it was measured."""
    import dataclasses

    from cli_helpers import run_cli

    from fastunet_core.inference.predict import PredictOptions, Predictor
    from fastunet_core.models.checkpoint import load_checkpoint, save_checkpoint
    from fastunet_core.models.checkpoint_file import read_metadata

    raster, ckpt = _boundary_raster(tmp_path / "grey.tif"), tmp_path / "m.safetensors"
    code, out = run_cli("init", "test_pixel_colour", "--classes", "2", "--bands", "1", "--dtype", "uint16",
                        "--tile", "128", "--overlap", "16", "--agreement-tiles", str(raster), "-o", str(ckpt))
    assert code == 0, out
    record = read_metadata(ckpt).metrics["bf16_agreement"]
    assert record["fp32_layers"] == ["head"] and record["value"] == 1.0 and record["bf16_only"] < 0.99, record
    assert "100.000% with 1 layer kept in fp32 (head) (all-bf16:" in out, out
    maps = {}
    for name, precision in (("fp32", "fp32"), ("plan", "bf16")):
        predictor = Predictor(ckpt, PredictOptions(precision=precision, device="cpu"))
        assert predictor.engine_name == {"fp32": "onnxruntime (CPU, fp32, exported to the cache)",
                                         "plan": "pytorch (bfloat16, 1 layer in fp32)"}[name]
        predictor.run(raster, tmp_path / f"{name}.tif")
        with rasterio.open(tmp_path / f"{name}.tif") as ds:
            maps[name] = ds.read(1)
    assert len(np.unique(maps["fp32"])) == 2
    assert np.array_equal(maps["plan"], maps["fp32"])
    code, out = run_cli("predict", "-m", str(ckpt), str(raster), "-o", str(tmp_path / "log.tif"), "--precision", "bf16",
                        "--device", "cpu")
    assert code == 0, out
    assert "engine: pytorch (bfloat16, 1 layer in fp32); precision bf16: requested; with 1 layer kept in fp32 " \
           "(head), as recorded" in " ".join(out.split()), out
    if bf16_support().native:
        auto = Predictor(ckpt, PredictOptions(device="cpu")).precision
        assert auto.precision == "bf16" and auto.fp32_layers == ("head",), auto
        assert "class agreement, with 1 layer kept in fp32 (head), is 100.000%" in auto.reason, auto
    # a record from before plans: all-bf16, which on these grey levels moves many pixels
    loaded = load_checkpoint(ckpt)
    old = dataclasses.replace(loaded.meta, metrics={"bf16_agreement": {"value": 0.9995, "tiles": 4, "source": "x"}})
    save_checkpoint(tmp_path / "old.safetensors", loaded.torch_model(), old)
    predictor = Predictor(tmp_path / "old.safetensors", PredictOptions(precision="bf16", device="cpu"))
    assert predictor.engine_name == "pytorch (bfloat16)" and predictor.precision.fp32_layers == ()
    predictor.run(raster, tmp_path / "old.tif")
    with rasterio.open(tmp_path / "old.tif") as ds:
        assert (ds.read(1) == maps["fp32"]).mean() < 0.99


def test_a_plan_naming_a_layer_the_model_lacks_is_refused() -> None:
    from fastunet_core.errors import CheckpointError
    from fastunet_core.inference.optimize import bf16_model
    from fastunet_core.models.registry import build_model

    with pytest.raises(CheckpointError, match=r"encoder\.9\.nothing.*measure it again"):
        bf16_model(build_model("unet_tiny", 3, 2), ("encoder.9.nothing",))


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
    """No layer of the CPU bf16 path falls back to PyTorch's reference kernels (``aten::_slow_conv2d_forward``),
    neither the bf16 layers nor those a plan keeps in fp32 (the first and the last)."""
    from torch.profiler import ProfilerActivity, profile

    from fastunet_core.inference.optimize import bf16_model, weighted_layers
    from fastunet_core.models.registry import build_model

    built = build_model(arch, bands, 5).eval()
    layers = weighted_layers(built)
    model = bf16_model(built, {layers[0], layers[-1]})
    x = torch.randn(2, bands, 128, 128).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        model(x)
    ops = {e.key for e in prof.key_averages()}
    slow = {op for op in ops if "slow_conv" in op or "thnn_conv" in op}
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        assert not slow, sorted(ops)
        assert any("mkldnn" in op or "onednn" in op for op in ops), sorted(ops)  # the fast path did run
        return
    # oneDNN has no bf16 kernels for this CPU (no AVX512): PyTorch's reference kernels are all there is, so the
    # product must not take this path by itself, and says what it costs when it is asked for
    assert not bf16_support().native
    meta = _meta(1.0)
    assert prec.choose_precision("auto", meta, CPU).precision == "fp32"
    for asked in (meta, _meta(1.0, fp32_layers=[layers[0]], bf16_only=0.99)):
        choice = prec.choose_precision("bf16", asked, CPU)
        assert choice.precision == "bf16" and choice.reason.endswith(prec.EMULATED_BF16), choice


def test_the_hint_for_a_model_without_agreement_runs_as_printed(tmp_path: Path, small_raster: Path,
                                                               make_checkpoint: object,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """predict says which command measures the agreement; that command, with the model and raster filled in, works."""
    import re
    import shlex

    from cli_helpers import run_cli

    monkeypatch.setattr(prec, "bf16_support", lambda: Bf16Support(avx512_bf16=True, amx_bf16=False))
    model = make_checkpoint()  # type: ignore[operator]
    code, out = run_cli("predict", str(small_raster), "-m", str(model), "-o", str(tmp_path / "a.tif"))
    assert code == 0, out
    said = re.search(r"\('fastunet-geo (.+?)' measures it\)", out)
    assert said, out
    measured = tmp_path / "measured.safetensors"
    filled = {"MODEL": str(model), "OUT.safetensors": str(measured), "RASTER": str(small_raster)}
    code, text = run_cli(*(filled.get(word, word) for word in shlex.split(said.group(1))))
    assert code == 0, text
    assert "bf16 class agreement with fp32: 100.000%" in text
    code, out = run_cli("predict", str(small_raster), "-m", str(measured), "-o", str(tmp_path / "b.tif"))
    assert code == 0 and "measures it" not in out and "precision bf16: CPU has AVX512-BF16 and the model" in out, out
