"""No output ever replaces an input or another output, and two runs never write the same target at once.

Every case runs the CLI as a user would; each refusal is one line, exit 1, and leaves the inputs untouched.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from fastunet_core.cli import cli
from fastunet_core.io.resume import partial_path
from fastunet_core.io.targets import lock_path

REPO = Path(__file__).resolve().parent.parent


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _invoke(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["-q", *args])
    return result.exit_code, result.stderr


def _assert_refused(code: int, stderr: str, *needles: str) -> None:
    assert code == 1, stderr
    assert "Traceback" not in stderr
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture()
def ortho(tmp_path: Path, rio_data: Path) -> Path:
    """A copy of cogeo.tif (1024 x 1024 RGB) in its own folder."""
    folder = tmp_path / "in"
    folder.mkdir()
    return Path(shutil.copy(rio_data / "cogeo.tif", folder / "o.tif"))


@pytest.fixture()
def model(make_checkpoint: Callable[..., Path]) -> Path:
    return make_checkpoint()


def test_output_equal_to_input_is_refused(ortho: Path, model: Path) -> None:
    before = _digest(ortho)
    code, err = _invoke(["predict", str(ortho), "-m", str(model), "-o", str(ortho), "--overwrite"])
    _assert_refused(code, err, "same file as the input raster", str(ortho))
    assert _digest(ortho) == before
    assert sorted(p.name for p in ortho.parent.iterdir()) == ["o.tif"]


def test_probs_equal_to_input_is_refused(ortho: Path, model: Path, tmp_path: Path) -> None:
    before = _digest(ortho)
    code, err = _invoke(["predict", str(ortho), "-m", str(model), "-o", str(tmp_path / "c.tif"), "--probs",
                         str(ortho), "--overwrite"])
    _assert_refused(code, err, "--probs output", "same file as the input raster")
    assert _digest(ortho) == before
    assert not (tmp_path / "c.tif").exists()


def test_class_map_and_probs_on_one_name_are_refused(ortho: Path, model: Path, tmp_path: Path) -> None:
    both = tmp_path / "both.tif"
    code, err = _invoke(["predict", str(ortho), "-m", str(model), "-o", str(both), "--probs", str(both)])
    _assert_refused(code, err, "are the same file")
    assert not both.exists()


def test_dot_slash_spelling_of_the_input_is_refused(ortho: Path, model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ortho.parent)
    before = _digest(ortho)
    code, err = _invoke(["predict", "o.tif", "-m", str(model), "-o", "./sub/../o.tif", "--overwrite"])
    _assert_refused(code, err, "same file as the input raster")
    assert _digest(ortho) == before


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_output_linked_to_the_input_is_refused(ortho: Path, model: Path, tmp_path: Path, link: str) -> None:
    alias = tmp_path / "alias.tif"
    (os.symlink if link == "symlink" else os.link)(ortho, alias)
    code, err = _invoke(["predict", str(ortho), "-m", str(model), "-o", str(alias), "--overwrite"])
    _assert_refused(code, err, "same file as the input raster")
    assert alias.exists() and os.path.samefile(alias, ortho)


def test_output_over_the_model_is_refused(ortho: Path, model: Path, tmp_path: Path) -> None:
    kept = Path(shutil.copy(model, tmp_path / "m.safetensors"))
    before = _digest(kept)
    code, err = _invoke(["predict", str(ortho), "-m", str(kept), "-o", str(kept), "--overwrite"])
    _assert_refused(code, err, "same file as the model")
    assert _digest(kept) == before


def test_vector_style_on_the_probs_name_is_refused(ortho: Path, model: Path, tmp_path: Path) -> None:
    # --vector c.gpkg writes its QGIS style as c.qml: a --probs c.qml would be replaced by it (or block it)
    code, err = _invoke(["predict", str(ortho), "-m", str(model), "-o", str(tmp_path / "c.tif"), "--probs",
                         str(tmp_path / "c.qml"), "--vector", str(tmp_path / "c.gpkg")])
    _assert_refused(code, err, "style", "are the same file")
    assert not list(tmp_path.glob("c.*"))


def test_vectorize_output_sidecar_on_the_mask_is_refused(tmp_path: Path, ortho: Path, model: Path) -> None:
    classes = tmp_path / "c.tif"
    assert _invoke(["predict", str(ortho), "-m", str(model), "-o", str(classes)])[0] == 0
    mask = classes.rename(tmp_path / "c.dbf")  # a raster whose name is the Shapefile's .dbf sidecar
    before = _digest(mask)
    code, err = _invoke(["vectorize", str(mask), "-o", str(tmp_path / "c.shp"), "--overwrite"])
    _assert_refused(code, err, ".dbf sidecar", "same file as the class raster")
    assert _digest(mask) == before


def _batch(args: list[str]) -> tuple[int, str]:
    return _invoke(["predict", *args])


def test_out_dir_is_input_folder_rerun_skips_its_own_outputs(tmp_path: Path, rio_data: Path, model: Path) -> None:
    folder = tmp_path / "sheets"
    folder.mkdir()
    for name in ("a.tif", "b.tif"):
        shutil.copy(rio_data / "cogeo.tif", folder / name)
    args = [str(folder), "-m", str(model), "--out-dir", str(folder), "--with-probs", "--skip-existing"]
    code, err = _batch(args)
    assert code == 0, err
    first = sorted(p.name for p in folder.iterdir())
    rasters = [n for n in first if n.endswith(".tif")]
    assert rasters == ["a.tif", "a_classes.tif", "a_probs.tif", "b.tif", "b_classes.tif", "b_probs.tif"], first
    code, err = _batch(args)
    assert code == 0, err
    assert sorted(p.name for p in folder.iterdir()) == first  # no a_classes_classes.tif
    rows = (folder / "summary.csv").read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == [str(folder / "a.tif"), str(folder / "b.tif")]
    assert all(",skipped," in r for r in rows), rows


def test_batch_output_over_a_user_raster_is_refused(tmp_path: Path, rio_data: Path, model: Path) -> None:
    folder = tmp_path / "sheets"
    folder.mkdir()
    shutil.copy(rio_data / "cogeo.tif", folder / "a.tif")
    user = Path(shutil.copy(rio_data / "cogeo.tif", folder / "a_classes.tif"))  # the user's own orthophoto
    before = _digest(user)
    code, err = _batch([str(folder), "-m", str(model), "--out-dir", str(folder), "--overwrite"])
    _assert_refused(code, err, "a_classes.tif", "same file as the input raster")
    assert _digest(user) == before


# -- one run per target --

def _start_predict(raster: Path, model: Path, out: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "fastunet_core.cli", "-q", "predict", str(raster), "-m",
                             str(model), "-o", str(out), "--batch-size", "1", "--no-prefetch"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"predict ended before taking its lock: {proc.stderr.read().decode() if proc.stderr else ''}")
        if time.monotonic() > end:
            proc.kill()
            pytest.fail("predict did not take its lock in time")
        time.sleep(0.02)


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


def test_second_predict_on_the_same_target_refuses(tmp_path: Path, ortho: Path, model: Path) -> None:
    out = tmp_path / "c.tif"
    assert _invoke(["predict", str(ortho), "-m", str(model), "-o", str(tmp_path / "ref.tif")])[0] == 0
    first = _start_predict(ortho, model, out)
    try:
        _wait_for(partial_path(out), first)  # written only once the run holds its lock
        first.send_signal(signal.SIGSTOP)  # hold the first run mid-way, deterministically
        code, err = _invoke(["predict", str(ortho), "-m", str(model), "-o", str(out), "--overwrite"])
        _assert_refused(code, err, str(out), "being written by another run")
    finally:
        first.send_signal(signal.SIGCONT)
    _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err.decode()
    assert np.array_equal(_read(out), _read(tmp_path / "ref.tif"))
    assert not lock_path(out).exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_lock_of_a_killed_run_is_taken_over(tmp_path: Path, ortho: Path, model: Path) -> None:
    out = tmp_path / "c.tif"
    first = _start_predict(ortho, model, out)
    _wait_for(lock_path(out), first)
    first.kill()
    first.wait()
    assert lock_path(out).exists()  # a stale lock file: its process is gone
    code, err = _invoke(["predict", str(ortho), "-m", str(model), "-o", str(out)])
    assert code == 0, err
    assert out.exists() and not lock_path(out).exists()
