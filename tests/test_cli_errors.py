"""Bad input: one clear line on stderr, a non-zero exit code, no traceback, and no file left behind."""

from __future__ import annotations

import os
import pickle
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from fastunet_core.cli import cli


class _Payload:
    """Unpickling this would create a marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, (f"touch {self.marker}",))


def _run(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(cli, args)
    return result.exit_code, result.stderr


def _assert_clean_failure(code: int, stderr: str, out_dir: Path, *needles: str) -> None:
    assert code != 0
    assert "Traceback" not in stderr
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: "), stderr
    for needle in needles:
        assert needle in lines[-1], lines[-1]
    assert sorted(p.name for p in out_dir.iterdir()) == [], "an output or temp file was left behind"


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


def test_missing_raster(out_dir: Path, make_checkpoint: Callable[..., Path]) -> None:
    code, err = _run(["predict", str(out_dir.parent / "nope.tif"), "-m", str(make_checkpoint()),
                      "-o", str(out_dir / "o.tif")])
    _assert_clean_failure(code, err, out_dir, "not found")


def test_not_a_raster(tmp_path: Path, out_dir: Path, make_checkpoint: Callable[..., Path]) -> None:
    bad = tmp_path / "notes.tif"
    bad.write_text("this is not an image\n")
    code, err = _run(["predict", str(bad), "-m", str(make_checkpoint()), "-o", str(out_dir / "o.tif")])
    _assert_clean_failure(code, err, out_dir, "not a raster")


def test_rotated_geotransform(rio_data: Path, out_dir: Path, make_checkpoint: Callable[..., Path],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = make_checkpoint(bands=(1,), tile=32, overlap=4)
    code, err = _run(["predict", str(rio_data / "rotated.tif"), "-m", str(ckpt), "-o", str(out_dir / "o.tif")])
    _assert_clean_failure(code, err, out_dir, "rotated", "gdalwarp")
    # the proposed gdalwarp line, typed where the user is (a relative path with a space), makes a north-up copy
    import rasterio

    folder = out_dir.parent / "my rasters"
    folder.mkdir()
    shutil.copy(rio_data / "rotated.tif", folder / "rotated.tif")
    monkeypatch.chdir(out_dir.parent)
    code, err = _run(["predict", "my rasters/rotated.tif", "-m", str(ckpt), "-o", "out/o.tif"])
    _assert_clean_failure(code, err, out_dir, "rotated")
    found = re.search(r"\(e\.g\. (gdalwarp [^)]+)\)", err)
    assert found, err
    subprocess.run(shlex.split(found.group(1)), check=True, capture_output=True)
    with rasterio.open(folder / "rotated_northup.tif") as src:
        assert src.transform.b == 0 and src.transform.d == 0


def test_jpeg_without_georeferencing(rio_data: Path, out_dir: Path, make_checkpoint: Callable[..., Path]) -> None:
    code, err = _run(["predict", str(rio_data / "389225main_sw_1965_1024.jpg"), "-m", str(make_checkpoint()),
                      "-o", str(out_dir / "o.tif")])
    _assert_clean_failure(code, err, out_dir, "no georeferencing")


def test_a_crs_without_a_geotransform_is_refused(tmp_path: Path, out_dir: Path,
                                                 make_checkpoint: Callable[..., Path]) -> None:
    """A CRS but the identity transform: the class map would sit at the CRS's origin, 1 unit per pixel."""
    import warnings

    import numpy as np
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    raster = tmp_path / "crs_only.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(raster, "w", driver="GTiff", width=64, height=64, count=1, dtype="uint8",
                           crs="EPSG:32633") as dst:
            dst.write(np.zeros((1, 64, 64), np.uint8))
    code, err = _run(["predict", str(raster), "-m", str(make_checkpoint(bands=(1,))), "-o", str(out_dir / "o.tif")])
    _assert_clean_failure(code, err, out_dir, "has a CRS but no geotransform", "gdal_edit.py -a_ullr")


def test_an_engineering_crs_with_the_identity_transform_is_segmented(tmp_path: Path,
                                                                      make_checkpoint: Callable[..., Path]) -> None:
    """A local (pixel) CRS: one unit per pixel from the origin is its real georeferencing, not a missing one.

    The class map keeps the CRS and the grid; rasterio's warning about the identity matrix is not shown.
    """
    import warnings

    import numpy as np
    import rasterio
    from rasterio.crs import CRS
    from rasterio.errors import NotGeoreferencedWarning

    raster, out = tmp_path / "lab.tif", tmp_path / "classes.tif"
    local = CRS.from_wkt('LOCAL_CS["pixels",UNIT["metre",1],AXIS["Easting",EAST],AXIS["Northing",NORTH]]')
    pixels = np.random.default_rng(3).integers(0, 255, (1, 90, 130), dtype=np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(raster, "w", driver="GTiff", width=130, height=90, count=1, dtype="uint8",
                           crs=local) as dst:
            dst.write(pixels)
    run = subprocess.run([sys.executable, "-m", "fastunet_core.cli", "predict", str(raster), "-m",
                          str(make_checkpoint(bands=(1,))), "-o", str(out)], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr
    assert "Warning" not in run.stderr and "site-packages" not in run.stderr, run.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(out) as got:
            assert got.crs == local and got.transform.is_identity and got.shape == (90, 130)
            classes = got.read(1)
    assert len(np.unique(classes)) > 1


def test_band_count_mismatch(rio_data: Path, out_dir: Path, make_checkpoint: Callable[..., Path]) -> None:
    code, err = _run(["predict", str(rio_data / "byte.tif"), "-m", str(make_checkpoint()), "-o",
                      str(out_dir / "o.tif")])
    _assert_clean_failure(code, err, out_dir, "1 band(s)", "needs 3", "--bands 1,1,1")


def test_corrupt_checkpoint(tmp_path: Path, rio_data: Path, out_dir: Path,
                            make_checkpoint: Callable[..., Path]) -> None:
    good = make_checkpoint().read_bytes()
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(good[: len(good) // 2])
    code, err = _run(["predict", str(rio_data / "RGB.byte.tif"), "-m", str(bad), "-o", str(out_dir / "o.tif")])
    _assert_clean_failure(code, err, out_dir, str(bad))


def test_random_bytes_checkpoint(tmp_path: Path, rio_data: Path, out_dir: Path) -> None:
    bad = tmp_path / "random.safetensors"
    bad.write_bytes(os.urandom(4096))
    code, err = _run(["predict", str(rio_data / "RGB.byte.tif"), "-m", str(bad), "-o", str(out_dir / "o.tif")])
    _assert_clean_failure(code, err, out_dir, "not a fastunet-geo checkpoint")


def test_raster_given_as_checkpoint(rio_data: Path, out_dir: Path) -> None:
    code, err = _run(["predict", str(rio_data / "RGB.byte.tif"), "-m", str(rio_data / "cogeo.tif"),
                      "-o", str(out_dir / "o.tif")])
    _assert_clean_failure(code, err, out_dir, "not a fastunet-geo checkpoint")


@pytest.mark.parametrize("fmt", ["pickle", "torch.save"])
def test_pickle_payload_is_refused_unread(tmp_path: Path, rio_data: Path, out_dir: Path, fmt: str) -> None:
    import torch

    marker = tmp_path / "pwned"
    evil = tmp_path / "model.pt"
    if fmt == "pickle":
        evil.write_bytes(pickle.dumps(_Payload(marker)))
    else:
        torch.save({"state_dict": _Payload(marker)}, evil)
    for args in (["predict", str(rio_data / "RGB.byte.tif"), "-m", str(evil), "-o", str(out_dir / "o.tif")],
                 ["info", str(evil)],
                 ["init", "unet_tiny", "--classes", "2", "--weights", str(evil), "-o", str(out_dir / "m.st")]):
        code, err = _run(args)
        _assert_clean_failure(code, err, out_dir)
        assert "pickle" in err or "weights-only" in err
    assert not marker.exists(), "the pickle payload was executed"


def test_a_runs_resume_state_given_as_a_model_points_at_the_runs_model(tmp_path: Path, out_dir: Path,
                                                                       make_checkpoint: Callable[..., Path]) -> None:
    import torch

    run = tmp_path / "run"
    run.mkdir()
    torch.save({"epoch": 1}, run / "last_state.pt")
    (run / "best.safetensors").write_bytes(make_checkpoint().read_bytes())
    code, err = _run(["info", str(run / "last_state.pt")])
    _assert_clean_failure(code, err, out_dir, f"The model of this run is {run / 'best.safetensors'}")
    assert "init" not in err  # not the advice to wrap plain weights


def test_unknown_architecture_lists_valid_names(out_dir: Path) -> None:
    code, err = _run(["init", "resnet_magic", "--classes", "2", "-o", str(out_dir / "m.safetensors")])
    _assert_clean_failure(code, err, out_dir, "unknown architecture", "unet_skinny", "unet_tiny")
    assert "test_pixel_colour" not in err  # the tests' stand-in model is not offered to users


def test_tile_not_multiple_of_model_divisor(rio_data: Path, out_dir: Path,
                                            make_checkpoint: Callable[..., Path]) -> None:
    ckpt = make_checkpoint(architecture="unet_tiny")  # sizes must be multiples of 4
    code, err = _run(["predict", str(rio_data / "RGB.byte.tif"), "-m", str(ckpt), "--tile", "130",
                      "-o", str(out_dir / "o.tif")])
    _assert_clean_failure(code, err, out_dir, "multiple of 4")


def test_cuda_requested_without_gpu_says_why(rio_data: Path, out_dir: Path,
                                             make_checkpoint: Callable[..., Path]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; the no-GPU message cannot be produced here")
    code, err = _run(["predict", str(rio_data / "RGB.byte.tif"), "-m", str(make_checkpoint()), "--device", "cuda",
                      "-o", str(out_dir / "o.tif")])
    _assert_clean_failure(code, err, out_dir, "no CUDA", "--device cpu")


def test_real_process_prints_one_line_and_exit_code(rio_data: Path, out_dir: Path,
                                                    make_checkpoint: Callable[..., Path]) -> None:
    exe = Path(sys.executable).with_name("fastunet-geo")
    proc = subprocess.run([str(exe), "predict", str(rio_data / "rotated.tif"), "-m", str(make_checkpoint()),
                           "-o", str(out_dir / "o.tif")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error: ")
    assert list(out_dir.iterdir()) == []


def test_damaged_raster_fails_mid_run_with_a_clear_line(tmp_path: Path, out_dir: Path,
                                                        make_checkpoint: Callable[..., Path]) -> None:
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    damaged = tmp_path / "damaged.tif"
    with rasterio.open(damaged, "w", driver="GTiff", width=512, height=512, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000, 5000000, 1, 1), tiled=True,
                       blockxsize=128, blockysize=128, compress="deflate") as dst:
        dst.write(np.random.default_rng(0).integers(0, 255, (3, 512, 512), dtype=np.uint8))
    with damaged.open("r+b") as f:
        f.truncate(damaged.stat().st_size // 2)
    code, err = _run(["predict", str(damaged), "-m", str(make_checkpoint()), "-o", str(out_dir / "o.tif")])
    _assert_clean_failure(code, err, out_dir, "damaged")


@pytest.mark.parametrize(("extra", "expected"), [
    (["--out-dir", "OUT", "--probs", "OUT/p.tif"], "--out-dir writes NAME_classes.tif (and NAME_probs.tif with "
     "--with-probs, NAME_classes.gpkg with --with-vector), not --probs; for one input either drop --out-dir"),
    (["--out-dir", "OUT", "-o", "OUT/c.tif", "--vector", "OUT/v.gpkg"], "not -o/--vector; for one input"),
    (["SECOND", "-o", "OUT/c.tif"], "with several inputs use --out-dir DIR (with --with-probs, --with-vector) "
     "instead of -o"),
])
def test_output_flags_that_do_not_fit_the_inputs_say_which(extra: list[str], expected: str, out_dir: Path,
                                                             rio_data: Path,
                                                             make_checkpoint: Callable[..., Path]) -> None:
    args = [a.replace("OUT", str(out_dir)).replace("SECOND", str(rio_data / "rgb2.tif")) for a in extra]
    code, err = _run(["predict", str(rio_data / "rgb1.tif"), "-m", str(make_checkpoint()), *args])
    assert code == 1
    _assert_clean_failure(code, err, out_dir, expected)
    assert "several inputs" not in err or "SECOND" in extra


@pytest.mark.parametrize("command", ["info", "models"])
def test_output_to_a_closed_pipe_ends_quietly(command: str, make_checkpoint: Callable[..., Path]) -> None:
    """FINDINGS4 L1: ``fastunet-geo info m.safetensors | head -2`` said "internal error: BrokenPipeError", exit 3.

    The pipe's reading end is closed before the command starts, so every write meets a broken pipe (no race
    with a reader that stops early).
    """
    read_end, write_end = os.pipe()
    os.close(read_end)
    args = [str(make_checkpoint())] if command == "info" else []
    env = {k: v for k, v in os.environ.items() if k not in ("PROJ_DATA", "PROJ_LIB")}
    try:
        proc = subprocess.run([sys.executable, "-m", "fastunet_core.cli", command, *args], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, env=env, timeout=300)
    finally:
        os.close(write_end)
    assert proc.stderr == "" and proc.returncode == 1  # like a Unix tool stopped by SIGPIPE: no message
