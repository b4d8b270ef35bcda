"""Tests that need a CUDA GPU (marker ``cuda``): deselected by default, run by ``make gpu-check`` (-m cuda).

They generate their own data (the shared test data does not travel to a lent GPU machine) and import only
what the GPU check carries (rasterio, albumentations; no geopandas, no QGIS). Selected without a GPU they
fail rather than skip: a GPU check that ran nothing is no pass.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fastunet_core.runtime.progress import NullProgress

pytestmark = pytest.mark.cuda

CLASSES = "background,building,woodland,water,road"


@pytest.fixture(autouse=True)
def _need_cuda() -> None:
    if not torch.cuda.is_available():
        pytest.fail("these tests need a CUDA GPU (they are selected with -m cuda; run them via make gpu-check)")


def _texture(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    cell = 16
    low = rng.integers(0, 5, (h // cell + 1, w // cell + 1), dtype=np.uint8)
    mask = np.repeat(np.repeat(low, cell, axis=0), cell, axis=1)[:h, :w]
    palette = np.array([[200, 200, 190], [180, 60, 50], [40, 110, 40], [40, 70, 160], [120, 120, 120]], np.int16)
    image = palette.T[:, mask] + rng.integers(-30, 31, (3, h, w), dtype=np.int16)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def _write(path: Path, data: np.ndarray) -> Path:
    import rasterio
    from rasterio.transform import from_origin

    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype="uint8", crs="EPSG:2180", transform=from_origin(500_000, 300_000, 0.25, 0.25)) as dst:
        dst.write(data)
    return path


@pytest.fixture(scope="module")
def landcover(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small LandCover.ai layout: two 320 x 320 sheets, 64 px tiles (25 per sheet)."""
    root = tmp_path_factory.mktemp("landcover")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for name in ("A", "B"):
        image, mask = _texture(rng, 320, 320)
        _write(root / "images" / f"{name}.tif", image)
        _write(root / "masks" / f"{name}.tif", mask[None])
    (root / "train.txt").write_text("\n".join(f"A_{k}" for k in range(25)) + "\n")
    (root / "val.txt").write_text("\n".join(f"B_{k}" for k in range(10)) + "\n")
    (root / "test.txt").write_text("B_0\n")
    return root


@pytest.fixture(scope="module")
def raster(tmp_path_factory: pytest.TempPathFactory) -> Path:
    image, _ = _texture(np.random.default_rng(1), 700, 600)
    return _write(tmp_path_factory.mktemp("raster") / "scene.tif", image)


def _cfg(landcover: Path, out: Path, **optim: object) -> object:
    from fastunet_core.train.config import config_from_dict

    return config_from_dict({
        "data": {"kind": "landcoverai", "root": str(landcover), "tile_size": 64},
        "output": str(out), "device": "cuda",
        "model": {"architecture": "unet_tiny"},
        "optim": {"epochs": 1, "batch_size": 8, "micro_batch": 8, "num_workers": 0, **optim},
    })


def test_auto_autocast_is_native_bf16_or_fp16() -> None:
    from fastunet_core.runtime.device import resolve_device

    native = torch.cuda.is_bf16_supported(including_emulation=False)
    choice = resolve_device("cuda")
    assert choice.autocast_dtype is (torch.bfloat16 if native else torch.float16)
    # the chosen dtype runs a cuDNN convolution here
    conv = torch.nn.Conv2d(3, 8, 3).cuda()
    with torch.autocast("cuda", dtype=choice.autocast_dtype):
        y = conv(torch.randn(2, 3, 32, 32, device="cuda"))
    assert y.dtype is choice.autocast_dtype


@pytest.mark.parametrize("amp", ["bf16", "fp16", "none"])
def test_train_on_cuda_learns(landcover: Path, tmp_path: Path, amp: str) -> None:
    from fastunet_core.train.loop import train

    res = train(_cfg(landcover, tmp_path / amp, amp=amp, epochs=3, lr=1e-2), None, fresh=True)
    assert res.device.is_cuda
    losses = [h.train_loss for h in res.history]
    assert all(np.isfinite(losses)), losses
    assert losses[-1] < losses[0], losses  # colour-coded classes: three epochs are enough to learn something
    assert res.best_checkpoint.is_file()


def test_predict_cuda_fp32_matches_cpu(make_checkpoint, raster: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import rasterio

    from fastunet_core.inference.predict import PredictOptions, predict_raster

    ckpt = make_checkpoint(classes=CLASSES, tile=128, overlap=16)
    maps = {}
    for device in ("cpu", "cuda"):
        res = predict_raster(raster, ckpt, tmp_path / f"{device}.tif",
                             PredictOptions(device=device, precision="fp32", engine="torch", batch_size=3))
        assert res.device.device.type == device
        with rasterio.open(res.output) as src:
            maps[device] = src.read(1)
    # an untrained model has near-ties; fp32 on both sides leaves only those
    assert np.mean(maps["cpu"] == maps["cuda"]) > 0.995


def test_predict_on_cuda_blends_on_the_gpu_as_the_host_does(make_checkpoint, raster: Path,  # type: ignore[no-untyped-def]
                                                            tmp_path: Path) -> None:
    import rasterio

    from fastunet_core.inference.predict import PredictOptions, Predictor

    ckpt = make_checkpoint(classes=CLASSES, tile=128, overlap=32)
    out = {}
    for stitch in ("auto", "host"):
        predictor = Predictor(ckpt, PredictOptions(device="cuda", precision="fp32", engine="torch", stitch=stitch))
        assert (predictor.device_arrays is not None) == (stitch == "auto")  # auto: on the GPU with CUDA
        predictor.run(raster, tmp_path / f"{stitch}.tif", tmp_path / f"{stitch}_probs.tif")
        with rasterio.open(tmp_path / f"{stitch}.tif") as a, rasterio.open(tmp_path / f"{stitch}_probs.tif") as b:
            out[stitch] = (a.read(), b.read())
    assert len(np.unique(out["host"][0])) >= 3
    np.testing.assert_array_equal(out["auto"][0], out["host"][0])  # the same probabilities in, the same map out
    np.testing.assert_array_equal(out["auto"][1], out["host"][1])


@pytest.fixture
def gpu_nearly_full() -> object:
    """Take all but about 1 GiB of the GPU's free memory for the duration of a test."""
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info()
    blocker = torch.empty(max(0, free - 2**30), dtype=torch.uint8, device="cuda")
    yield blocker
    del blocker
    torch.cuda.empty_cache()


def test_predict_backs_off_on_a_real_gpu_oom(make_checkpoint, tmp_path: Path,  # type: ignore[no-untyped-def]
                                             gpu_nearly_full: object) -> None:
    import rasterio

    from fastunet_core.inference.predict import PredictOptions, Predictor

    image, _ = _texture(np.random.default_rng(2), 2048, 2048)
    raster = _write(tmp_path / "big.tif", image)
    ckpt = make_checkpoint(architecture="unet_base", classes=CLASSES, tile=256, overlap=32)
    predictor = Predictor(ckpt, PredictOptions(device="cuda", batch_size=64))
    with pytest.warns(UserWarning, match="ran out of memory with batches of 64 tiles"):
        res = predictor.run(raster, tmp_path / "backoff.tif")
    assert 1 <= predictor.run_batch < 64
    ref = Predictor(ckpt, PredictOptions(device="cuda", batch_size=predictor.run_batch)).run(raster,
                                                                                          tmp_path / "ref.tif")
    with rasterio.open(ref.output) as a, rasterio.open(res.output) as b:
        assert np.mean(a.read(1) == b.read(1)) > 0.999


def test_training_oom_on_a_real_gpu_names_the_setting(tmp_path: Path, gpu_nearly_full: object) -> None:
    from fastunet_core.errors import GPUMemoryError
    from fastunet_core.train.config import config_from_dict
    from fastunet_core.train.loop import train

    root = tmp_path / "lc"  # one 1024 x 1024 sheet: four 512 px tiles, UNet_Base's activations far above 1 GiB
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    image, mask = _texture(np.random.default_rng(3), 1024, 1024)
    _write(root / "images" / "S.tif", image)
    _write(root / "masks" / "S.tif", mask[None])
    (root / "train.txt").write_text("S_0\nS_1\nS_2\nS_3\n")
    (root / "val.txt").write_text("S_0\n")
    cfg = config_from_dict({
        "data": {"kind": "landcoverai", "root": str(root), "tile_size": 512},
        "output": str(tmp_path / "run"), "device": "cuda", "model": {"architecture": "unet_base"},
        "optim": {"epochs": 1, "batch_size": 4, "micro_batch": 4, "num_workers": 0},
    })
    with pytest.raises(GPUMemoryError, match=r"4 at a time .*; try optim\.micro_batch=2 .*, or data\.tile_size=256$"):
        train(cfg, None, fresh=True)


def test_fp16_run_resumes_on_cuda_from_a_cpu_run(landcover: Path, tmp_path: Path) -> None:
    from fastunet_core.train.config import config_from_dict
    from fastunet_core.train.loop import train

    def cfg(device: str, epochs: int) -> object:
        return config_from_dict({
            "data": {"kind": "landcoverai", "root": str(landcover), "tile_size": 64},
            "output": str(tmp_path / "run"), "device": device, "model": {"architecture": "unet_tiny"},
            "optim": {"epochs": epochs, "batch_size": 8, "micro_batch": 8, "num_workers": 0, "amp": "fp16"},
        })

    train(cfg("cpu", 1))  # CPU: no autocast, the GradScaler is disabled and saves an empty state
    res = train(cfg("cuda", 2))  # fp16 on the GPU: an enabled GradScaler resumes from it
    assert [h.epoch for h in res.history] == [1, 2] and res.device.is_cuda


class _Log(NullProgress):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def device(self, text: str) -> None:
        self.lines.append(f"device: {text}")


@pytest.mark.parametrize(("amp", "says", "never"), [("none", "fp32 (no autocast)", "bf16"),
                                                   ("fp16", "fp16 autocast with GradScaler", "bf16"),
                                                   ("bf16", "bf16 autocast", "fp16")])
def test_training_log_on_cuda_says_what_runs(landcover: Path, tmp_path: Path, amp: str, says: str,
                                             never: str) -> None:
    from fastunet_core.train.loop import train

    log = _Log()
    train(_cfg(landcover, tmp_path / amp, amp=amp, max_batches_per_epoch=1), log, fresh=True)
    device_line = next(ln for ln in log.lines if ln.startswith("device: "))
    assert says in device_line and never not in device_line.split(";")[1], device_line
    assert "channels_last" in device_line


def test_evaluate_on_cuda_matches_cpu(landcover: Path, tmp_path: Path) -> None:
    from fastunet_core.train.evaluate import evaluate_checkpoint
    from fastunet_core.train.loop import train

    res = train(_cfg(landcover, tmp_path / "run", amp="bf16", epochs=2, lr=1e-2), None, fresh=True)
    data = ["data.kind=landcoverai", f"data.root={landcover}", "data.tile_size=64"]
    gpu = evaluate_checkpoint(res.best_checkpoint, None, data, "val", batch_size=4, device="cuda", num_workers=2)
    cpu = evaluate_checkpoint(res.best_checkpoint, None, data, "val", batch_size=4, device="cpu", num_workers=0)
    assert gpu.device.startswith("cuda") and gpu.images == cpu.images == 10
    assert gpu.loss == pytest.approx(cpu.loss, rel=0.02)  # bf16 autocast on the GPU, fp32 on the CPU
    assert gpu.report.miou == pytest.approx(cpu.report.miou, abs=0.02)


def test_device_augmentation_on_cuda_matches_the_cpu() -> None:
    from fastunet_core.models.metadata import InputSpec
    from fastunet_core.train.device_augment import DeviceBatchTransform, draw_params

    spec = InputSpec(bands=(1, 2, 3), dtype="uint8", value_range=(0.0, 255.0), mean=(0.4, 0.5, 0.6),
                     std=(0.2, 0.25, 0.3))
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 256, (16, 3, 64, 64), dtype=np.uint8))
    y = torch.from_numpy(rng.integers(0, 6, (16, 64, 64), dtype=np.uint8))
    p = torch.from_numpy(np.stack([draw_params(np.random.default_rng(s), train=True, photometric=True, square=True,
                                               rgb=True) for s in range(16)]))
    tf = DeviceBatchTransform(spec)
    cx, cy = tf(x, y, p)
    gx, gy = tf(x.cuda(), y.cuda(), p.cuda())
    assert gx.is_cuda and torch.allclose(gx.cpu(), cx, atol=1e-4)
    assert torch.equal(gy.cpu(), cy)
