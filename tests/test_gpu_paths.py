"""The GPU code paths that a CPU can exercise: AMP dtype choice, out-of-memory handling, torchrun contexts.

A real CUDA out-of-memory is forced in tests/test_cuda.py (run by make gpu-check); here ``torch.OutOfMemoryError``
is raised by a stand-in engine or model, which is what PyTorch raises on a GPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner

from fastunet_core.cli import cli
from fastunet_core.errors import ConfigError, GPUMemoryError
from fastunet_core.inference.engine import TorchEngine
from fastunet_core.inference.predict import PredictOptions, Predictor
from fastunet_core.runtime import device as device_mod
from fastunet_core.runtime.device import DeviceChoice

CLASSES = "background,building,water"


def _oom_above(limit: int, calls: list[int]) -> object:
    """Return an engine call that raises CUDA's out-of-memory error for batches larger than ``limit``."""
    real = TorchEngine.__call__

    def call(self: TorchEngine, batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        if len(batch) > limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (stand-in)")
        return real(self, batch)

    return call


def test_auto_amp_counts_only_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    # a T4: torch says bf16 is "supported" (emulated) unless asked for native support
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    monkeypatch.setattr(device_mod, "cuda_unavailable_reason", lambda: None)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda dev=None: "Tesla T4")
    choice = device_mod.resolve_device("cuda")
    assert choice.autocast_dtype is torch.float16
    assert "fp16" in choice.reason
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # an A100
    assert device_mod.resolve_device("cuda").autocast_dtype is torch.bfloat16


def test_training_auto_amp_follows_native_support(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastunet_core.train.loop import _Trainer

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    trainer = object.__new__(_Trainer)
    trainer.cfg = type("C", (), {"optim": type("O", (), {"amp": "auto"})()})()  # type: ignore[assignment]
    trainer.device = DeviceChoice("cuda:0", "stand-in", None)
    assert trainer._amp_dtype() is torch.float16
    trainer.cfg.optim.amp = "bf16"
    assert trainer._amp_dtype() is torch.bfloat16


def test_fp16_precision_is_refused_on_cpu(make_checkpoint) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="fp16 precision needs a CUDA GPU"):
        Predictor(make_checkpoint(classes=CLASSES), PredictOptions(device="cpu", precision="fp16", engine="torch"))


def test_predict_halves_the_batch_on_gpu_oom(make_checkpoint, small_raster: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = make_checkpoint(classes=CLASSES, tile=64, overlap=8)
    ref = Predictor(ckpt, PredictOptions(device="cpu", engine="torch", batch_size=2)).run(small_raster,
                                                                                         tmp_path / "ref.tif")
    calls: list[int] = []
    monkeypatch.setattr(TorchEngine, "__call__", _oom_above(2, calls))
    predictor = Predictor(ckpt, PredictOptions(device="cpu", engine="torch", batch_size=8))
    with pytest.warns(UserWarning, match="ran out of memory with batches of 8 tiles; continuing with 4"):
        res = predictor.run(small_raster, tmp_path / "backoff.tif")
    assert predictor.run_batch == 2
    assert calls[:3] == [8, 4, 2]
    assert max(calls[3:]) <= 2  # later batches start at the size that fitted
    with rasterio.open(ref.output) as a, rasterio.open(res.output) as b:
        assert np.array_equal(a.read(1), b.read(1))
    assert any("ran out of memory" in w for w in res.warnings)


def test_predict_oom_at_one_tile_is_a_one_line_error(make_checkpoint, small_raster: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TorchEngine, "__call__", _oom_above(0, []))
    out = tmp_path / "out"
    out.mkdir()
    result = CliRunner().invoke(cli, ["predict", str(small_raster), "-m", str(make_checkpoint(classes=CLASSES)),
                                      "-o", str(out / "classes.tif"), "--engine", "torch", "--batch-size", "4"])
    assert result.exit_code == 1, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert last.startswith("error: the GPU ran out of memory even with one 128 px tile"), last
    assert "--tile" in last
    assert sorted(p.name for p in out.iterdir()) == []


def test_batch_records_an_oom_raster_as_failed(make_checkpoint, small_raster: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from fastunet_core.inference.batch import STATUS_FAILED, predict_many

    monkeypatch.setattr(TorchEngine, "__call__", _oom_above(0, []))
    predictor = Predictor(make_checkpoint(classes=CLASSES), PredictOptions(device="cpu", engine="torch"))
    out = tmp_path / "out"
    out.mkdir()
    result = predict_many([small_raster], predictor, out)
    assert [i.status for i in result.items] == [STATUS_FAILED]
    assert "ran out of memory" in result.items[0].message


def test_training_oom_names_the_setting(shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastunet_core.models.unet import UNet
    from fastunet_core.train.config import config_from_dict
    from fastunet_core.train.loop import train

    def forward(self: UNet, x: torch.Tensor) -> torch.Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB (stand-in)")

    monkeypatch.setattr(UNet, "forward", forward)
    cfg = config_from_dict({"data": _landcover_data(shared_data), "output": str(tmp_path / "run"), "device": "cpu",
                            "model": {"architecture": "unet_tiny"},
                            "optim": {"epochs": 1, "batch_size": 4, "micro_batch": 2, "num_workers": 0}})
    with pytest.raises(GPUMemoryError, match=r"optim.micro_batch=2 .*lower optim.micro_batch"):
        train(cfg)


def _landcover_data(shared_data: Path) -> dict[str, object]:
    return {"kind": "landcoverai", "root": str(shared_data / "torchgeo-fixtures" / "landcoverai"), "tile_size": 32}


def test_torchrun_with_one_process_is_distributed(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastunet_core.runtime import distributed

    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert not distributed.context_from_env().enabled
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert distributed.context_from_env().enabled
