"""Output names a new user may get wrong, run as the user runs them (the ``fastunet-geo`` command).

A folder option naming a file, a raster output named like another format, and GDAL's raw warnings
printed between the command's own lines (tester findings F7, F8, F13).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest


def _cli(*args: str | Path) -> tuple[int, str]:
    """Run the command in a fresh process, as a user does (its logging set up by the command itself)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PROJ_DATA", "PROJ_LIB")}
    r = subprocess.run([sys.executable, "-m", "fastunet_core.cli", *map(str, args)], capture_output=True, text=True,
                       env=env, timeout=300)
    return r.returncode, r.stderr


def _one_error_line(code: int, err: str, *needles: str) -> None:
    assert code == 1, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    f = tmp_path / "rgb1.tif"
    f.write_bytes(b"keep me")
    return f


def test_out_dir_that_is_a_file(rio_data: Path, make_checkpoint: Callable[..., Path], a_file: Path) -> None:
    code, err = _cli("predict", rio_data / "RGB.byte.tif", "-m", make_checkpoint(), "--out-dir", a_file)
    _one_error_line(code, err, str(a_file), "is a file, not a folder")
    assert a_file.read_bytes() == b"keep me"


def test_out_dir_under_a_file(rio_data: Path, make_checkpoint: Callable[..., Path], a_file: Path) -> None:
    code, err = _cli("predict", rio_data / "RGB.byte.tif", "-m", make_checkpoint(), "--out-dir", a_file / "sub")
    _one_error_line(code, err, f"lies under {a_file}, which is a file")


def test_train_run_folder_that_is_a_file(tmp_path: Path, a_file: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(f"data: {{kind: folder, root: {tmp_path}}}\n")
    code, err = _cli("train", "-c", config, "--output", a_file)
    _one_error_line(code, err, "run folder", "is a file, not a folder")
    assert a_file.read_bytes() == b"keep me"


@pytest.mark.parametrize(("option", "name"), [("-o", "classes.png"), ("--probs", "probs.jpg"), ("-o", "classes")])
def test_raster_output_named_like_another_format(rio_data: Path, make_checkpoint: Callable[..., Path],
                                                 tmp_path: Path, option: str, name: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    args = ["-o", out / "c.tif"] if option == "--probs" else []
    code, err = _cli("predict", rio_data / "RGB.byte.tif", "-m", make_checkpoint(), *args, option, out / name)
    _one_error_line(code, err, str(out / name), "GeoTIFF", ".tif")
    assert list(out.iterdir()) == [], "nothing may be written"


def test_gdal_warnings_are_debug_lines(shared_data: Path, make_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    # this file has no RowsPerStrip tag: GDAL warns "RowsPerStrip not defined ... assuming all one strip" and
    # reads it correctly; the warning is not the user's business, except with -vv
    fotomap = shared_data / "deepness-testdata" / "dummy_fotomap_small.tif"
    ckpt = make_checkpoint(bands=(1,))
    code, err = _cli("predict", fotomap, "-m", ckpt, "--bands", "1", "-o", tmp_path / "a.TIFF")
    assert code == 0, err
    assert "CPLE_" not in err and "RowsPerStrip" not in err, err
    assert (tmp_path / "a.TIFF").exists()  # .TIFF is a GeoTIFF name too
    code, err = _cli("-vv", "predict", fotomap, "-m", ckpt, "--bands", "1", "-o", tmp_path / "b.tif")
    assert code == 0, err
    assert "DEBUG: CPLE_AppDefined in RowsPerStrip not defined" in err, err


def test_gdal_errors_are_not_hidden() -> None:
    from fastunet_core.io.gdal_log import GdalWarningsToDebug

    def record(name: str, level: int) -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, "CPLE_AppDefined in something", None, None)

    quiet = GdalWarningsToDebug(show_debug=False)
    assert quiet.filter(record("rasterio._env", logging.ERROR))  # a GDAL error still reaches the user
    assert quiet.filter(record("fastunet_core.inference.engine", logging.WARNING))  # ours too
    assert quiet.filter(record("py.warnings", logging.WARNING))
    demoted = record("rasterio._env", logging.WARNING)
    assert not quiet.filter(demoted) and demoted.levelname == "DEBUG"


def colour_distance(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    """The "redmean" weighted RGB distance; written out here so the test does not trust the code under test."""
    rmean = (a[0] + b[0]) / 2
    dr, dg, db = a[0] - b[0], a[1] - b[1], a[2] - b[2]
    return float(((2 + rmean / 256) * dr * dr + 4 * dg * dg + (2 + (255 - rmean) / 256) * db * db) ** 0.5)


def _colours(info: str) -> dict[str, tuple[int, int, int]]:
    found = re.findall(r"^\s+\d+\s+#([0-9a-f]{6})\s+(\S+)$", info, flags=re.MULTILINE)
    return {name: (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)) for h, name in found}


@pytest.mark.parametrize("spec", ["background,building=#e31a1c,woodland,water,road",
                                  "a,b=#e6194b,c,d=#3cb44b,e,f=#ffe119,g,h=#0082c8,i"])
def test_automatic_colours_keep_away_from_the_given_ones(tmp_path: Path, spec: str) -> None:
    model = tmp_path / "m.safetensors"
    code, err = _cli("init", "unet_skinny", "--classes", spec, "-o", model)
    assert code == 0, err
    r = subprocess.run([sys.executable, "-m", "fastunet_core.cli", "info", str(model)], capture_output=True,
                       text=True, check=True)
    colours = _colours(r.stdout)
    given = {i.split("=")[0]: i.split("=")[1] for i in spec.split(",") if "=" in i}
    assert len(colours) == len(spec.split(",")), r.stdout
    for name, hexcol in given.items():
        assert colours[name] == tuple(int(hexcol[k : k + 2], 16) for k in (1, 3, 5))  # the user's, unchanged
    auto = {n: c for n, c in colours.items() if n not in given}
    for name, colour in auto.items():
        for other in given:
            assert colour_distance(colour, colours[other]) >= 150, (name, other, r.stdout)
    assert len(set(auto.values())) == len(auto), r.stdout  # and differ from each other


def test_summary_that_is_a_folder_is_refused_before_the_work(rio_data: Path, make_checkpoint: Callable[..., Path],
                                                              tmp_path: Path) -> None:
    out, summary = tmp_path / "out", tmp_path / "summary"
    summary.mkdir()
    code, err = _cli("predict", rio_data / "RGB.byte.tif", "-m", make_checkpoint(), "--out-dir", out,
                     "--summary", summary)
    _one_error_line(code, err, f"summary {summary} is a folder")
    assert list(out.iterdir()) == [], "refused before any raster is segmented"
