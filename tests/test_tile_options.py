"""predict's --tile and --overlap: refused up front when they cannot run, in the numbers the user typed.

The overlap is counted in the model's pixels, like the tile: when the raster is read resampled (the model's
0.3 m on a 0.47 m raster), an overlap of the tile size or more is refused as it is with the raster's own
pixels, not converted and clamped into a stride of one raster pixel (743,044 tiles on a 1024 x 1024 raster).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
from cli_helpers import run_cli

from fastunet_core.errors import ConfigError
from fastunet_core.hints import speaking
from fastunet_core.inference import predict as predict_module
from fastunet_core.inference import tile_checks
from fastunet_core.inference.predict import PredictOptions, Predictor
from qgis_plugin.words import QGIS

MODEL_M = 0.3  # small_raster (cogeo.tif) has 0.47 m pixels: resolution auto reads it resampled 0.635x


def _one_line_error(code: int, out: str, folder: Path, *needles: str) -> str:
    assert code == 1, out
    lines = [ln for ln in out.splitlines() if ln.startswith(("error", "internal error", "Traceback"))]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in out, out
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert [p.name for p in folder.iterdir()] == [], "an output was left behind"
    return lines[0]


@pytest.mark.parametrize("overlap", [300, 128, -5])
def test_overlap_is_checked_against_the_model_tile_also_when_resampled(
        overlap: int, make_checkpoint: Callable[..., Path], small_raster: Path, tmp_path: Path) -> None:
    ckpt = make_checkpoint(tile=128, overlap=16, resolution_m=MODEL_M)
    with pytest.raises(ConfigError, match=rf"smaller than the tile size \(128 px\), got {overlap}$"):
        Predictor(ckpt, PredictOptions(device="cpu", overlap_px=overlap))
    with speaking(QGIS), pytest.raises(ConfigError) as err:  # the dock and Processing: the control, no flag
        Predictor(ckpt, PredictOptions(device="cpu", overlap_px=overlap))
    assert str(err.value).startswith("'Overlap' must be >= 0") and "--" not in str(err.value)
    out = tmp_path / "out"
    out.mkdir()
    code, text = run_cli("predict", str(small_raster), "-m", str(ckpt), "-o", str(out / "c.tif"),
                         "--overlap", str(overlap))
    _one_line_error(code, text, out, f"--overlap must be >= 0 and smaller than the tile size (128 px), got {overlap}")


def test_a_valid_overlap_runs_resampled(make_checkpoint: Callable[..., Path], small_raster: Path,
                                        tmp_path: Path) -> None:
    ckpt = make_checkpoint(tile=128, overlap=16, resolution_m=MODEL_M)
    code, text = run_cli("predict", str(small_raster), "-m", str(ckpt), "-o", str(tmp_path / "c.tif"),
                         "--overlap", "64")
    assert code == 0, text
    assert "read resampled (bilinear) 0.635x: 81 px of the raster per 128 px model tile" in text, text


def test_the_models_own_overlap_too_large_for_the_tile_says_so(make_checkpoint: Callable[..., Path]) -> None:
    ckpt = make_checkpoint(tile=128, overlap=64)
    with pytest.raises(ConfigError, match=r"the model's overlap \(64 px\) is not smaller than the tile size "
                                          r"\(64 px\); give a smaller --overlap or a larger --tile"):
        Predictor(ckpt, PredictOptions(device="cpu", tile_size_px=64))


def test_tile_zero_is_refused_like_batch_size_zero(make_checkpoint: Callable[..., Path], small_raster: Path,
                                                   tmp_path: Path) -> None:
    code, text = run_cli("predict", str(small_raster), "-m", str(make_checkpoint()), "-o", str(tmp_path / "c.tif"),
                         "--tile", "0")
    _one_line_error(code, text, tmp_path, "--tile must be at least 1 px, got 0")


def _wide_raster(path: Path, width: int) -> Path:
    """A ``width`` x 8 px RGB strip: tiles up to ``width`` px long stay as given (one does not cover it)."""
    from affine import Affine

    with rasterio.open(path, "w", driver="GTiff", width=width, height=8, count=3, dtype="uint8", crs="EPSG:3857",
                       transform=Affine(0.5, 0, 0.0, 0, -0.5, 4.0)) as dst:
        dst.write(np.full((3, 8, width), 90, np.uint8))
    return path


def test_a_tile_too_large_for_the_memory_is_refused_before_anything_is_allocated(
        make_checkpoint: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tile_checks, "physical_memory", lambda: 2**30)  # a 1 GiB machine
    wide = _wide_raster(tmp_path / "wide.tif", 16400)  # 3 tiles of 8192 px, 5 of 4096 px
    out = tmp_path / "out"
    out.mkdir()
    code, text = run_cli("predict", str(wide), "-m", str(make_checkpoint()), "-o", str(out / "c.tif"),
                         "--tile", "8192", "--resolution", "native")
    # 8192^2 px x (3 bands + 3 classes) x 4 bytes = 1.5 GiB
    _one_line_error(code, text, out, "one 8192 px tile needs at least 1.5 GiB", "1 GiB of memory",
                    "use a smaller --tile (the model's is 128 px)")
    code, text = run_cli("predict", str(wide), "-m", str(make_checkpoint()), "-o", str(out / "c.tif"),
                         "--tile", "4096", "--batch-size", "4", "--resolution", "native")
    _one_line_error(code, text, out, "a batch of 4 4096 px tiles needs at least 1.5 GiB", "or --batch-size 1")


def test_the_memory_check_counts_the_reduced_tile_and_the_tiles_the_raster_has(
        make_checkpoint: Callable[..., Path], small_raster: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """--tile 4096 on a 256 x 200 raster runs one 256 px tile: a batch of 64 is one tile (FINDINGS5 F11)."""
    monkeypatch.setattr(tile_checks, "physical_memory", lambda: 2**30)  # 64 x 4096^2 x 6 x 4 bytes: 24 GiB
    code, text = run_cli("predict", str(small_raster), "-m", str(make_checkpoint()), "-o", str(tmp_path / "c.tif"),
                         "--tile", "4096", "--batch-size", "64", "--resolution", "native")
    assert code == 0, text
    assert "ran with 256 px tiles, one of which covers it" in text and "1 tile, 0 without data" in text, text
    code, text = run_cli("predict", str(small_raster), "-m", str(make_checkpoint()), "-o", str(tmp_path / "d.tif"),
                         "--tile", "128", "--batch-size", "100000", "--resolution", "native")
    assert code == 0 and "(0.1 Mpx, 6 tiles" in text, text  # 100000 x 128^2 x 6 x 4 bytes would be 37 GiB


class _OutOfMemory:
    """An engine whose every call fails the way the engines say that the machine's memory ran out."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        raise self.exc


@pytest.mark.parametrize("exc", [
    MemoryError("Unable to allocate 48.0 GiB for an array with shape (3, 65536, 65536) and data type float32"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                 "you tried to allocate 17592186044416 bytes. Error code 12 (Cannot allocate memory)"),
    type("RuntimeException", (Exception,), {})("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status "
                                               "code returned while running Conv node. Failed to allocate memory "
                                               "for requested buffer of size 68719476736"),
], ids=["numpy", "torch", "onnxruntime"])
def test_running_out_of_memory_is_one_line_naming_the_tile(
        exc: Exception, make_checkpoint: Callable[..., Path], small_raster: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(predict_module, "make_engine", lambda *a, **k: (_OutOfMemory(exc), "test engine"))
    code, text = run_cli("predict", str(small_raster), "-m", str(make_checkpoint()), "-o", str(tmp_path / "c.tif"),
                         "--resolution", "native", "--no-resume", "--batch-size", "2")
    _one_line_error(code, text, tmp_path, "out of memory with 128 px tiles, 2 at a time",
                    "use a smaller --tile (the model's is 128 px) or --batch-size 1")


@pytest.mark.parametrize(("resolution_m", "fit", "how"), [
    (None, 256, "tiles as they are"),  # 256 x 200 raster: one 256 px tile covers it
    (MODEL_M, 404, "257 px of the raster per 404 px model tile"),  # 256 px at 0.635x: 404 model px
])
def test_a_tile_larger_than_the_raster_needs_is_reduced_to_one_that_covers_it(
        resolution_m: float | None, fit: int, how: str, make_checkpoint: Callable[..., Path], small_raster: Path,
        tmp_path: Path) -> None:
    ckpt = str(make_checkpoint(tile=128, overlap=16, resolution_m=resolution_m))
    code, text = run_cli("predict", str(small_raster), "-m", ckpt, "-o", str(tmp_path / "big.tif"), "--tile", "4096")
    assert code == 0, text
    assert f"note: --tile 4096 is larger than {small_raster.name} needs: ran with {fit} px tiles" in text, text
    assert how in text and "(0.1 Mpx, 1 tile, 0 without data)" in text, text  # one tile, not "1 tiles"
    code, text = run_cli("predict", str(small_raster), "-m", ckpt, "-o", str(tmp_path / "fit.tif"), "--tile", str(fit))
    assert code == 0 and "note: --tile" not in text, text
    with rasterio.open(tmp_path / "big.tif") as big, rasterio.open(tmp_path / "fit.tif") as same:
        assert np.array_equal(big.read(1), same.read(1))
    code, text = run_cli("predict", str(small_raster), "-m", ckpt, "-o", str(tmp_path / "small.tif"), "--tile", "64")
    assert code == 0 and "note: --tile" not in text, text  # smaller than the raster: as given


def test_a_heavy_run_is_announced_before_its_first_tile(make_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    """An overlap near the tile size (or a resolution far finer than the raster's) turns seconds into hours: allowed,
    but said, with the cause, before the tiles run; a usual run says nothing of it."""
    from rasterio.transform import from_origin

    raster = tmp_path / "r.tif"
    data = np.random.default_rng(0).integers(0, 255, (3, 128, 128), dtype=np.uint8)
    with rasterio.open(raster, "w", driver="GTiff", width=128, height=128, count=3, dtype="uint8", crs="EPSG:32633",
                       transform=from_origin(500000, 6000000, 0.5, 0.5)) as dst:
        dst.write(data)
    ckpt = make_checkpoint(tile=32, overlap=0)
    code, text = run_cli("predict", str(raster), "-m", str(ckpt), "-o", str(tmp_path / "a.tif"), "--overlap", "28",
                         "--resolution", "native")
    assert code == 0, text
    [line] = [ln for ln in text.splitlines() if ln.startswith("heavy run")]
    assert "625 tiles" in line and "--overlap 28 leaves a step of 4 px between 32 px tiles" in line, line
    assert text.index("heavy run") < text.index("wrote "), text  # said before the work, not in the summary
    code, text = run_cli("predict", str(raster), "-m", str(ckpt), "-o", str(tmp_path / "b.tif"), "--overlap", "8",
                         "--resolution", "native")
    assert code == 0 and "heavy run" not in text, text
    finer = tile_checks.heavy_run_note(4096, 256, 32, 1024 * 1024, factor=0.02)
    assert finer is not None and "read 50x finer than the raster (--resolution)" in finer, finer
    with speaking(QGIS):
        assert "'Overlap' 200 leaves" in (tile_checks.heavy_run_note(4096, 256, 200, 1024 * 1024, 1.0) or "")
