"""An interrupted prediction keeps its finished rows; the next run continues there and gives the same maps."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner, Result
from run_helpers import CountingCancel

from fastunet_core.cli import cli
from fastunet_core.errors import CancelledError
from fastunet_core.inference.predict import PredictOptions, predict_raster
from fastunet_core.io.raster_input import TileReader
from fastunet_core.io.resume import partial_path, state_path
from fastunet_core.tiling.grid import TileGrid

# cogeo.tif is 1024 x 1024: with 128 px tiles and 16 px overlap that is 9 x 9 tiles, and the outputs'
# 512-row blocks make row 512 the first point a run can be continued from
TILES_PER_ROW = 9


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


@pytest.fixture()
def source(rio_data: Path) -> Path:
    return rio_data / "cogeo.tif"


@pytest.fixture()
def reference_files(tmp_path_factory: pytest.TempPathFactory, source: Path,
                    make_checkpoint: Callable[..., Path]) -> tuple[Path, Path]:
    """The class and probability rasters of an uninterrupted run."""
    folder = tmp_path_factory.mktemp("reference")
    predict_raster(source, make_checkpoint(), folder / "c.tif", PredictOptions(probs_path=folder / "p.tif"))
    return folder / "c.tif", folder / "p.tif"


@pytest.fixture()
def reference(reference_files: tuple[Path, Path]) -> tuple[np.ndarray, np.ndarray]:
    return _read(reference_files[0]), _read(reference_files[1])


def test_grid_row_to_restart_from() -> None:
    grid = TileGrid.for_raster(1024, 1024, 128, 16)
    assert grid.first_row_reaching(0) == 0
    starts = grid.rows.starts
    k = grid.first_row_reaching(512)
    assert starts[k] + 128 > 512 and starts[k - 1] + 128 <= 512  # every tile reaching below 512 is redone


@pytest.mark.parametrize("stop_after_rows", [6, 2])
def test_cancelled_run_continues_to_byte_identical_outputs(tmp_path: Path, source: Path,
                                                           make_checkpoint: Callable[..., Path],
                                                           reference_files: tuple[Path, Path],
                                                           stop_after_rows: int) -> None:
    out, probs = tmp_path / "c.tif", tmp_path / "p.tif"
    opts = PredictOptions(probs_path=probs, resume=True, batch_size=3)
    with pytest.raises(CancelledError, match="run the same command again"):
        predict_raster(source, make_checkpoint(), out, opts, CountingCancel(limit=stop_after_rows * TILES_PER_ROW))
    assert not out.exists() and not probs.exists()
    for target in (out, probs):
        assert partial_path(target).exists() and state_path(target).exists()
    # every finished row is kept, also below the last full 512-row block: cells end where tile row
    # ``stop_after_rows`` starts (tiles every 112 px), so a resume redoes only the overlap band
    kept = json.loads(state_path(out).read_text())["rows_done"]
    assert kept == stop_after_rows * 112 and kept % 512
    grid = TileGrid.for_raster(1024, 1024, 128, 16)

    second = CountingCancel()
    result = predict_raster(source, make_checkpoint(), out, opts, second)
    assert any(f"{kept} of 1024 rows" in m for m in second.messages)
    assert second.done == (9 - grid.first_row_reaching(kept)) * TILES_PER_ROW
    assert (result.tiles_total, result.tiles_resumed) == (TILES_PER_ROW**2, TILES_PER_ROW**2 - second.done)
    # the README's promise: the same bytes as an uninterrupted run (a new file written in the same order)
    assert out.read_bytes() == reference_files[0].read_bytes()
    assert probs.read_bytes() == reference_files[1].read_bytes()
    # partial and state files gone; the class raster's sidecars (class names for GDAL and QGIS) written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.qml", "c.tif", "c.tif.aux.xml", "p.tif"]


def test_partial_from_other_settings_is_not_continued(tmp_path: Path, source: Path,
                                                      make_checkpoint: Callable[..., Path]) -> None:
    out = tmp_path / "c.tif"
    with pytest.raises(CancelledError):
        predict_raster(source, make_checkpoint(), out, PredictOptions(resume=True), CountingCancel(limit=60))
    assert state_path(out).exists()
    # another overlap changes every row: the partial file must not be reused
    run = CountingCancel()
    predict_raster(source, make_checkpoint(), out, PredictOptions(resume=True, overlap_px=32), run)
    fresh = tmp_path / "fresh.tif"
    predict_raster(source, make_checkpoint(), fresh, PredictOptions(overlap_px=32))
    assert run.done == run.total and not any("resuming" in m for m in run.messages)
    assert np.array_equal(_read(out), _read(fresh))
    assert not partial_path(out).exists() and not state_path(out).exists()


def test_partial_without_state_starts_over(tmp_path: Path, source: Path, make_checkpoint: Callable[..., Path],
                                           reference: tuple[np.ndarray, np.ndarray]) -> None:
    """A run killed outright leaves a partial file but no state: it cannot be trusted, so start over."""
    out = tmp_path / "c.tif"
    with pytest.raises(CancelledError):
        predict_raster(source, make_checkpoint(), out, PredictOptions(resume=True), CountingCancel(limit=60))
    state_path(out).unlink()
    partial_path(out).write_bytes(b"half a tiff")
    run = CountingCancel()
    predict_raster(source, make_checkpoint(), out, PredictOptions(resume=True), run)
    assert run.done == TILES_PER_ROW**2
    assert np.array_equal(_read(out), reference[0])


def test_without_resume_nothing_is_kept(tmp_path: Path, source: Path, make_checkpoint: Callable[..., Path]) -> None:
    with pytest.raises(CancelledError, match="no output was written"):
        predict_raster(source, make_checkpoint(), tmp_path / "c.tif", PredictOptions(), CountingCancel(limit=60))
    assert list(tmp_path.iterdir()) == []


def _invoke_stopped_by_sigterm(monkeypatch: pytest.MonkeyPatch, args: list[str], at_read: int) -> Result:
    """Run the CLI with a SIGTERM (a scheduler's time limit) arriving at the ``at_read``-th tile read; it exits 130."""
    original = TileReader.read
    calls = {"n": 0}

    def read_then_terminate(self: TileReader, *read_args: object) -> object:
        calls["n"] += 1
        if calls["n"] == at_read:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, *read_args)  # type: ignore[arg-type]

    monkeypatch.setattr(TileReader, "read", read_then_terminate)
    try:
        stopped = CliRunner().invoke(cli, args)
    finally:
        monkeypatch.setattr(TileReader, "read", original)
    assert stopped.exit_code == 130, stopped.output
    return stopped


def test_cli_sigterm_keeps_rows_and_the_same_command_finishes(tmp_path: Path, source: Path,
                                                              make_checkpoint: Callable[..., Path],
                                                              reference: tuple[np.ndarray, np.ndarray],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "c.tif"
    args = ["-q", "predict", str(source), "-m", str(make_checkpoint()), "-o", str(out), "--no-prefetch"]
    previous = signal.getsignal(signal.SIGTERM)
    try:
        stopped = _invoke_stopped_by_sigterm(monkeypatch, args, at_read=60)  # mid-run
        assert "run the same command again" in stopped.output
        assert not out.exists() and partial_path(out).exists()
        finished = CliRunner().invoke(cli, args[1:])  # not quiet: its last line counts this run's tiles
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert finished.exit_code == 0, finished.output
    # FINDINGS5 F17: "81 tiles in 19.2 s" read as all of them run in the resumed run's time
    wrote = [line for line in finished.stderr.splitlines() if line.startswith(f"wrote {out} ")]
    run_now = re.fullmatch(rf"wrote {re.escape(str(out))} \(1\.0 Mpx, 81 tiles \((\d+) in this run\), .*", wrote[0])
    assert run_now and 0 < int(run_now[1]) < 81, finished.stderr
    assert np.array_equal(_read(out), reference[0])
    reference_map = tmp_path / "reference.tif"
    assert CliRunner().invoke(cli, [*args[:-2], str(reference_map), "--no-prefetch"]).exit_code == 0
    assert out.read_bytes() == reference_map.read_bytes()
    assert not partial_path(out).exists() and not state_path(out).exists()


def _halves(source: Path, folder: Path) -> tuple[Path, Path]:
    """Write the top and bottom halves of ``source`` as two GeoTIFFs (a mosaic's sheets)."""
    from rasterio.windows import Window

    paths = folder / "top.tif", folder / "bottom.tif"
    with rasterio.open(source) as src:
        half = src.height // 2
        for path, row in zip(paths, (0, half), strict=True):
            window = Window(0, row, src.width, half)
            profile = {"driver": "GTiff", "width": src.width, "height": half, "count": src.count,
                       "dtype": src.dtypes[0], "crs": src.crs, "transform": src.window_transform(window)}
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(src.read(window=window))
    return paths


def _changed(path: Path, edit: Callable[[np.ndarray], np.ndarray]) -> None:
    """Rewrite ``path``'s pixels in place (same size), as an editor saving a corrected sheet does."""
    before = path.stat().st_mtime_ns
    with rasterio.open(path, "r+") as ds:
        ds.write(edit(ds.read()))
    if path.stat().st_mtime_ns == before:  # a file system with coarse times: make the change visible
        os.utime(path, ns=(before + 10**9, before + 10**9))


def test_vrt_whose_sheet_changed_starts_over(tmp_path: Path, source: Path,
                                             make_checkpoint: Callable[..., Path]) -> None:
    """FINDINGS4 H2: a mosaic's .vrt stays the same when one of its sheets changes; the rows computed from
    the old pixels must not be kept."""
    import shutil
    import subprocess

    gdalbuildvrt = shutil.which("gdalbuildvrt")
    assert gdalbuildvrt, "gdalbuildvrt comes with Debian's gdal-bin (installed with QGIS by scripts/setup.sh)"
    top, bottom = _halves(source, tmp_path)
    vrt = tmp_path / "mosaic.vrt"
    subprocess.run([gdalbuildvrt, "-q", str(vrt), str(top), str(bottom)], check=True,
                   env={k: v for k, v in os.environ.items() if k not in ("PROJ_DATA", "PROJ_LIB")})
    out, fresh = tmp_path / "c.tif", tmp_path / "fresh.tif"
    opts = PredictOptions(resume=True)
    with pytest.raises(CancelledError):
        predict_raster(vrt, make_checkpoint(), out, opts, CountingCancel(limit=6 * TILES_PER_ROW))
    assert json.loads(state_path(out).read_text())["rows_done"] > 512  # the kept rows reach into the top sheet
    vrt_bytes = vrt.read_bytes()
    _changed(top, lambda a: 255 - a)
    assert vrt.read_bytes() == vrt_bytes
    run = CountingCancel()
    predict_raster(vrt, make_checkpoint(), out, opts, run)
    assert run.done == run.total == TILES_PER_ROW**2 and not any("resuming" in m for m in run.messages)
    predict_raster(vrt, make_checkpoint(), fresh, PredictOptions())
    new = _read(fresh)
    assert np.array_equal(_read(out), new)
    # the change matters: the old pixels' map differs from the new one in the top sheet's rows
    old = tmp_path / "old.tif"
    _changed(top, lambda a: 255 - a)
    predict_raster(vrt, make_checkpoint(), old, PredictOptions())
    assert (_read(old)[:, :512] != new[:, :512]).mean() > 0.2
    # unchanged sheets: an interrupted run over the mosaic is still continued
    out.unlink()
    with pytest.raises(CancelledError):
        predict_raster(vrt, make_checkpoint(), out, opts, CountingCancel(limit=6 * TILES_PER_ROW))
    again = CountingCancel()
    predict_raster(vrt, make_checkpoint(), out, opts, again)
    assert any("resuming" in m for m in again.messages) and again.done < TILES_PER_ROW**2
    assert out.read_bytes() == old.read_bytes()


def test_tiff_whose_mask_file_changed_starts_over(tmp_path: Path, rio_data: Path,
                                                  make_checkpoint: Callable[..., Path]) -> None:
    """A sidecar GDAL reads (here the external .msk) is part of the source: changing it starts over."""
    import shutil

    tif = Path(shutil.copy(rio_data / "RGB2.byte.tif", tmp_path / "sheet.tif"))
    mask = Path(shutil.copy(rio_data / "RGB2.byte.tif.msk", tmp_path / "sheet.tif.msk"))
    out, fresh = tmp_path / "c.tif", tmp_path / "fresh.tif"
    opts = PredictOptions(resume=True)
    with pytest.raises(CancelledError):
        predict_raster(tif, make_checkpoint(), out, opts, CountingCancel(limit=30))
    assert state_path(out).exists()
    _changed(mask, lambda a: np.where(np.arange(a.shape[1])[None, :, None] < 300, 0, a).astype(a.dtype))
    run = CountingCancel()
    predict_raster(tif, make_checkpoint(), out, opts, run)
    assert run.done == run.total and not any("resuming" in m for m in run.messages)
    predict_raster(tif, make_checkpoint(), fresh, PredictOptions())
    assert np.array_equal(_read(out), _read(fresh))
    assert (_read(fresh)[0, :300] == 255).all()  # the new mask's nodata rows


def test_a_stopped_batch_writes_its_summary_and_the_same_command_finishes(
        tmp_path: Path, source: Path, make_checkpoint: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import csv
    import shutil

    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    for name in ("a.tif", "b.tif", "c.tif"):
        shutil.copy(source, folder / name)
    def summary() -> dict[str, str]:
        with (out / "summary.csv").open() as f:
            return {Path(r["input"]).name: r["status"] for r in csv.DictReader(f)}

    args = ["-q", "predict", str(folder), "-m", str(make_checkpoint()), "--out-dir", str(out), "--no-prefetch"]
    previous = signal.getsignal(signal.SIGTERM)
    try:
        stopped = _invoke_stopped_by_sigterm(monkeypatch, args, at_read=TILES_PER_ROW**2 + 40)  # during b.tif
        assert "summary.csv lists the rasters done, cancelled and not started" in stopped.output
        assert "run the same command again with --skip-existing" in stopped.output
        # a scheduler's log of the stopped run, written whole (no temporary file left beside it)
        assert summary() == {"a.tif": "ok", "b.tif": "cancelled", "c.tif": "not started"}
        assert sorted(p.name for p in out.iterdir() if "summary" in p.name) == ["summary.csv"]
        finished = CliRunner().invoke(cli, [*args, "--skip-existing"])  # as the message says
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert finished.exit_code == 0, finished.output
    assert summary() == {"a.tif": "skipped", "b.tif": "ok", "c.tif": "ok"}
    assert not partial_path(out / "b_classes.tif").exists()  # b.tif continued from its kept rows and finished
