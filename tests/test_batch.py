"""Batch prediction: many inputs, failures recorded not fatal, resume, VRT mosaics, torchrun sharding."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
from cli_helpers import read_polygons
from click.testing import CliRunner

from fastunet_core.cli import cli
from fastunet_core.cli.predict_cmd import EXIT_SOME_FAILED
from fastunet_core.errors import InputRasterError
from fastunet_core.inference.batch import expand_inputs, shard

QUADRANTS = ["rgb1.tif", "rgb2.tif", "rgb3.tif", "rgb4.tif"]


@pytest.fixture
def sheets(tmp_path: Path, rio_data: Path) -> Path:
    folder = tmp_path / "sheets"
    folder.mkdir()
    for name in QUADRANTS:
        shutil.copy(rio_data / name, folder / name)
    (folder / "broken.tif").write_bytes(b"II*\x00 this is not really a tiff")
    return folder


def _read_summary(path: Path) -> dict[str, dict[str, str]]:
    with path.open() as f:
        return {Path(r["input"]).name: r for r in csv.DictReader(f)}


def test_folder_with_a_broken_file(tmp_path: Path, sheets: Path, make_checkpoint: Callable[..., Path]) -> None:
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["-q", "predict", str(sheets), "-m", str(make_checkpoint()), "--out-dir", str(out),
                                 "--device", "cpu"])
    assert r.exit_code == EXIT_SOME_FAILED, r.stderr
    assert "broken.tif" in r.stderr
    summary = _read_summary(out / "summary.csv")
    assert summary["broken.tif"]["status"] == "failed" and "not a raster" in summary["broken.tif"]["message"]
    for name in QUADRANTS:
        row = summary[name]
        assert row["status"] == "ok" and float(row["megapixels"]) > 0 and row["device"] == "cpu"
        with rasterio.open(sheets / name) as src, rasterio.open(out / f"{Path(name).stem}_classes.tif") as dst:
            assert (dst.crs, dst.transform, dst.shape) == (src.crs, src.transform, src.shape)
    assert not (out / "broken_classes.tif").exists()


def test_skip_existing_resumes_without_redoing(tmp_path: Path, sheets: Path,
                                               make_checkpoint: Callable[..., Path]) -> None:
    (sheets / "broken.tif").unlink()
    out = tmp_path / "out"
    args = ["-q", "predict", str(sheets), "-m", str(make_checkpoint()), "--out-dir", str(out),
            "--summary", str(out / "s.json")]
    CliRunner().invoke(cli, ["-q", "predict", str(sheets / "rgb2.tif"), "-m", str(make_checkpoint()), "--out-dir",
                             str(out)])  # an "interrupted" earlier run finished only rgb2
    before = (out / "rgb2_classes.tif").stat().st_mtime_ns
    r = CliRunner().invoke(cli, [*args, "--skip-existing"])
    assert r.exit_code == 0, r.stderr
    status = {Path(i["input"]).name: i["status"] for i in json.loads((out / "s.json").read_text())}
    assert status == {"rgb1.tif": "ok", "rgb2.tif": "skipped", "rgb3.tif": "ok", "rgb4.tif": "ok"}
    assert (out / "rgb2_classes.tif").stat().st_mtime_ns == before
    r = CliRunner().invoke(cli, args)  # without --skip-existing or --overwrite: every output is refused
    assert r.exit_code == EXIT_SOME_FAILED and "--overwrite" in r.stderr


def test_inputs_from_glob_and_list(tmp_path: Path, sheets: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("# campaign\nsheets/rgb3.tif\n\nsheets/rgb1.tif\n")
    got = expand_inputs([str(sheets / "rgb[12].tif"), listing, sheets / "rgb1.tif"])
    assert [p.name for p in got] == ["rgb1.tif", "rgb2.tif", "rgb3.tif"]
    with pytest.raises(InputRasterError, match="matches no file"):
        expand_inputs([str(sheets / "*.jp2")])


def test_shards_balance_pixels_not_files() -> None:
    files = [Path(f"f{i}") for i in range(5)]
    sizes = [100, 10, 10, 10, 10]
    parts = [shard(files, 2, r, sizes) for r in range(2)]
    assert sorted(p for part in parts for p in part) == sorted(files)
    assert parts[0] == [Path("f0")]  # the big one alone; the four small ones on the other rank


def test_vrt_mosaic_equals_the_single_image(tmp_path: Path, rio_data: Path,
                                            make_checkpoint: Callable[..., Path]) -> None:
    gdalbuildvrt = shutil.which("gdalbuildvrt")
    assert gdalbuildvrt, "gdalbuildvrt comes with Debian's gdal-bin (installed with QGIS by scripts/setup.sh)"
    vrt = tmp_path / "mosaic.vrt"
    subprocess.run([gdalbuildvrt, "-q", str(vrt), *[str(rio_data / q) for q in QUADRANTS]], check=True,
                   env={k: v for k, v in os.environ.items() if k not in ("PROJ_DATA", "PROJ_LIB")})
    ckpt = make_checkpoint()
    runner = CliRunner()
    for src, out in ((vrt, "vrt.tif"), (rio_data / "RGB.byte.tif", "single.tif")):
        r = runner.invoke(cli, ["-q", "predict", str(src), "-m", str(ckpt), "-o", str(tmp_path / out)])
        assert r.exit_code == 0, r.stderr
    with rasterio.open(tmp_path / "vrt.tif") as a, rasterio.open(tmp_path / "single.tif") as b:
        assert a.transform.almost_equals(b.transform) and a.shape == b.shape
        ca, cb = a.read(1), b.read(1)
    # same pixels on the same grid: the class maps agree everywhere (the quadrants' one-pixel overlaps
    # hold identical values)
    assert np.array_equal(ca, cb)


def test_torchrun_two_processes_equal_one(tmp_path: Path, sheets: Path, make_checkpoint: Callable[..., Path]) -> None:
    (sheets / "broken.tif").unlink()
    ckpt = make_checkpoint()
    single, multi = tmp_path / "single", tmp_path / "multi"
    r = CliRunner().invoke(cli, ["-q", "predict", str(sheets), "-m", str(ckpt), "--out-dir", str(single)])
    assert r.exit_code == 0, r.stderr
    env = {k: v for k, v in os.environ.items() if k not in ("PROJ_DATA", "PROJ_LIB")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
         "fastunet_core.cli", "-q", "predict", str(sheets), "-m", str(ckpt), "--out-dir", str(multi),
         "--device", "cpu"],
        capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = _read_summary(multi / "summary.csv")
    assert sorted(summary) == QUADRANTS and all(r["status"] == "ok" for r in summary.values())
    assert {r["rank"] for r in summary.values()} == {"0", "1"}  # both processes took a share
    for name in QUADRANTS:
        stem = Path(name).stem
        with rasterio.open(single / f"{stem}_classes.tif") as a, rasterio.open(multi / f"{stem}_classes.tif") as b:
            assert np.array_equal(a.read(1), b.read(1))


def test_predict_with_vector_output(tmp_path: Path, rio_data: Path, make_checkpoint: Callable[..., Path]) -> None:

    out, gpkg = tmp_path / "classes.tif", tmp_path / "classes.gpkg"
    r = CliRunner().invoke(cli, ["-q", "predict", str(rio_data / "RGB.byte.tif"), "-m", str(make_checkpoint()),
                                 "-o", str(out), "--vector", str(gpkg), "--min-area", "1e6"])
    assert r.exit_code == 0, r.stderr
    polygons = read_polygons(gpkg)
    with rasterio.open(out) as ds:
        assert polygons.crs == ds.crs
    assert len(polygons) > 0 and polygons["area_m2"].min() >= 1e6
    with rasterio.open(out) as ds:
        background_share = (ds.read(1) == 0).mean()
    assert background_share > 0.2  # the stand-in model gives background to a large part of the image...
    assert set(polygons["class_name"]) == {"building", "water"}  # ... which is left out by default


def test_earlier_outputs_in_the_input_folder_are_left_out_with_a_note(
        tmp_path: Path, rio_data: Path, make_checkpoint: Callable[..., Path]) -> None:
    sheets = tmp_path / "sheets"
    sheets.mkdir()
    for name in QUADRANTS[:2]:
        shutil.copy(rio_data / name, sheets / name)
    ckpt = str(make_checkpoint())
    first = CliRunner().invoke(cli, ["predict", str(sheets), "-m", ckpt, "--out-dir", str(sheets), "--with-probs"])
    assert first.exit_code == 0, first.stderr
    shutil.copy(sheets / "rgb1_classes.tif", sheets / "renamed.tif")  # recognised by its tag, not its name
    out = tmp_path / "other"
    r = CliRunner().invoke(cli, ["predict", str(sheets), "-m", ckpt, "--out-dir", str(out), "--with-probs"])
    assert r.exit_code == 0, r.stderr
    left_out = sorted(Path(ln.split(": ")[0].removeprefix("left out ")).name for ln in r.stderr.splitlines()
                      if ln.startswith("left out ") and "fastunet-geo wrote it" in ln)
    assert left_out == ["renamed.tif", "rgb1_classes.tif", "rgb1_probs.tif", "rgb2_classes.tif", "rgb2_probs.tif"]
    summary = _read_summary(out / "summary.csv")
    assert sorted(summary) == QUADRANTS[:2] and {row["status"] for row in summary.values()} == {"ok"}
    for name in ("rgb1_classes.tif", "rgb2_probs.tif"):
        with rasterio.open(sheets / name) as a, rasterio.open(out / name) as b:
            assert np.array_equal(a.read(), b.read())
    only = CliRunner().invoke(cli, ["predict", str(sheets / "rgb1_classes.tif"), str(sheets / "renamed.tif"),
                                    "-m", ckpt, "--out-dir", str(tmp_path / "third")])
    assert only.exit_code == 1 and only.stderr.strip().splitlines()[-1].startswith(
        "error: every input is an output of fastunet-geo"), only.stderr


def test_a_raster_without_georeferencing_in_a_batch_is_one_summary_line_not_a_rasterio_warning(
        tmp_path: Path, rio_data: Path, make_checkpoint: Callable[..., Path]) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(rio_data / "rgb1.tif", folder / "rgb1.tif")
    shutil.copy(rio_data / "389225main_sw_1965_1024.jpg", folder / "plain.jpg")  # no georeferencing at all
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    proc = subprocess.run([sys.executable, "-m", "fastunet_core.cli", "predict", str(folder), "-m",
                           str(make_checkpoint()), "--out-dir", str(tmp_path / "out"), "--device", "cpu"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == EXIT_SOME_FAILED, proc.stderr
    assert "NotGeoreferencedWarning" not in proc.stderr and "site-packages" not in proc.stderr, proc.stderr
    assert _read_summary(tmp_path / "out" / "summary.csv")["plain.jpg"]["status"] == "failed"
