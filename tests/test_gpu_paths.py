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
from fastunet_core.runtime.progress import NullProgress

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
    with pytest.raises(GPUMemoryError,
                       match=r"2 at a time .*; try optim\.micro_batch=1 \(optim\.batch_size stays the same through "
                             r"gradient accumulation\), or data\.tile_size=16$"):
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


# -- training: batch sharing, devices under torchrun, resume, interruption, what the log says --


def _tiny_cfg(shared_data: Path, out: Path, **over: object) -> object:
    from fastunet_core.train.config import config_from_dict

    optim = {"epochs": 1, "batch_size": 2, "micro_batch": 2, "num_workers": 0, "max_batches_per_epoch": 2}
    optim.update(over.pop("optim", {}))  # type: ignore[arg-type]
    return config_from_dict({"data": _landcover_data(shared_data), "output": str(out), "device": "cpu",
                             "model": {"architecture": "unet_tiny"}, "optim": optim, **over})


@pytest.mark.parametrize(("batch", "micro", "world", "expected"),
                         [(8, 8, 4, (2, 1)), (8, 8, 1, (8, 1)), (16, 4, 2, (4, 2)), (6, 4, 2, (3, 1)),
                          (8, 2, 2, (2, 2))])
def test_logical_batch_is_global_under_torchrun(batch: int, micro: int, world: int,
                                                expected: tuple[int, int]) -> None:
    from fastunet_core.train.loop import split_batch

    assert split_batch(batch, micro, world) == expected
    m, accum = split_batch(batch, micro, world)
    assert m * accum * world == batch and m <= micro


def test_logical_batch_that_cannot_be_shared_says_so() -> None:
    from fastunet_core.train.loop import split_batch

    with pytest.raises(ConfigError, match=r"by 3 processes; use a multiple of 3, e\.g\. optim\.batch_size=9$"):
        split_batch(8, 8, 3)


def test_every_rank_gets_its_own_gpu_also_with_an_explicit_index(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.distributed as dist

    from fastunet_core.runtime import distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    selected: list[int] = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: selected.append(int(i)))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend: None)
    ctx = distributed.DistContext(rank=1, world_size=2, local_rank=1, launched=True)
    assert [distributed.rank_device(r, ctx) for r in ("cuda:0", "cuda", "auto", "cpu")] == [
        "cuda:1", "cuda:1", "cuda:1", "cpu"]
    distributed.init(ctx, use_cuda=True)
    assert selected == [1]  # the GPU the rank computes on is the one NCCL binds it to
    alone = distributed.DistContext()
    assert distributed.rank_device("cuda:0", alone) == "cuda:0"


def test_training_log_says_what_runs() -> None:
    from fastunet_core.train.loop import describe_training

    gpu = DeviceChoice("cuda:0", "NVIDIA H200, bf16 autocast, channels_last", "bf16")
    plain = describe_training(gpu, None, channels_last=False)
    assert "bf16" not in plain and "channels_last" not in plain
    assert "fp32" in plain and "NVIDIA H200" in plain
    assert "fp16 autocast with GradScaler" in describe_training(gpu, torch.float16, channels_last=True)
    assert describe_training(DeviceChoice("cpu", "cpu requested"), None, False) == "cpu (cpu requested)"


def test_fp16_run_resumes_from_a_disabled_scaler(shared_data: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from fastunet_core.train.loop import train

    first = train(_tiny_cfg(shared_data, tmp_path / "run"))  # CPU: the GradScaler is disabled and saves {}
    assert len(first.history) == 1
    real = torch.amp.GradScaler
    # the same run continued where the scaler is enabled (fp16 on a GPU without native bf16)
    monkeypatch.setattr(torch.amp, "GradScaler", lambda device="cuda", enabled=True: real("cpu", enabled=True))
    again = train(_tiny_cfg(shared_data, tmp_path / "run", optim={"epochs": 2}))
    assert [h.epoch for h in again.history] == [1, 2]


def test_stored_overlap_follows_the_tile_size(shared_data: Path, tmp_path: Path, small_raster: Path) -> None:
    from fastunet_core.inference.predict import PredictOptions, predict_raster
    from fastunet_core.models.checkpoint import read_metadata
    from fastunet_core.train.loop import train

    res = train(_tiny_cfg(shared_data, tmp_path / "run"))  # 32 px tiles
    assert read_metadata(res.best_checkpoint).overlap_px == 4
    out = predict_raster(small_raster, res.best_checkpoint, tmp_path / "map.tif", PredictOptions(device="cpu"))
    assert out.output.is_file()
    with pytest.raises(ConfigError, match=r"tile_overlap_px \(32\) must be smaller than data.tile_size \(32\)"):
        _tiny_cfg(shared_data, tmp_path / "x", tile_overlap_px=32)


class _CtrlCInEpoch(NullProgress):
    """A progress whose user presses Ctrl-C when epoch ``epoch`` starts its steps."""

    def __init__(self, epoch: int) -> None:
        self.epoch, self.seen = epoch, 0

    def start(self, total: float, label: str) -> None:
        if label == "steps":
            self.seen += 1

    def is_cancelled(self) -> bool:
        if self.seen == self.epoch:
            raise KeyboardInterrupt
        return False


def test_ctrl_c_in_training_says_what_was_kept(shared_data: Path, tmp_path: Path) -> None:
    import os

    from fastunet_core.errors import CancelledError
    from fastunet_core.train.loop import train

    run = tmp_path / "run"
    with pytest.raises(CancelledError) as info:
        train(_tiny_cfg(shared_data, run, optim={"epochs": 3}), _CtrlCInEpoch(2))
    message = str(info.value)
    assert "no output was written" not in message
    assert message.startswith(f"interrupted during epoch 2; epoch 1 is saved in {run}")
    assert "run it again to resume from epoch 2, or start over with --fresh" in message
    umask = os.umask(0)
    os.umask(umask)
    for name in ("best.safetensors", "last.safetensors", "last_state.pt"):
        path = run / name
        assert path.is_file(), name
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, (name, oct(path.stat().st_mode))
    again = train(_tiny_cfg(shared_data, run, optim={"epochs": 2}))
    assert [h.epoch for h in again.history] == [1, 2]
    with pytest.raises(CancelledError, match="before the first epoch finished; nothing was saved"):
        train(_tiny_cfg(shared_data, tmp_path / "other"), _CtrlCInEpoch(1))


def test_evaluate_reports_the_runs_own_loss_with_workers(shared_data: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from torch.utils.data import DataLoader

    from fastunet_core.train import evaluate as evaluate_mod
    from fastunet_core.train.loop import train

    cfg = _tiny_cfg(shared_data, tmp_path / "run", loss={"gamma": 2.0, "log_loss": True})
    res = train(cfg)
    workers: list[int] = []

    class SpyLoader(DataLoader):  # type: ignore[type-arg]
        def __init__(self, *args: object, **kwargs: object) -> None:
            workers.append(int(kwargs.get("num_workers", 0)))  # type: ignore[call-overload]
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(evaluate_mod, "DataLoader", SpyLoader)
    data = _landcover_data(shared_data)
    ev = evaluate_mod.evaluate_checkpoint(res.best_checkpoint, None, [f"data.{k}={v}" for k, v in data.items()],
                                          "val", batch_size=2, device="cpu", num_workers=1)
    assert workers == [1]
    assert ev.loss_settings == "the run's"
    # the loss the run validated with (gamma 2, log loss), on the same images in the same batches
    assert ev.loss == pytest.approx(res.history[-1].val_loss, rel=1e-5)
    plain = evaluate_mod.evaluate_checkpoint(res.best_checkpoint, None, [f"data.{k}={v}" for k, v in data.items()]
                                             + ["loss.gamma=1.0", "loss.alpha=0.5"], "val", batch_size=2,
                                             device="cpu", num_workers=0)
    assert plain.loss_settings == "the config's" and plain.loss != pytest.approx(ev.loss, rel=1e-3)
