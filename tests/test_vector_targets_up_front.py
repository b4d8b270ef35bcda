"""An existing polygon file is refused before any tile is run, as an existing class raster is (FINDINGS5 F15).

It used to be found only when the vectoriser started: the whole prediction ran, then failed, and its class
map was removed with it. In a batch, each sheet whose ``NAME_classes.gpkg`` is left over fails at once.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from fastunet_core.cli import cli
from fastunet_core.cli.predict_cmd import EXIT_SOME_FAILED
from fastunet_core.inference.predict import Predictor


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The rasters a prediction was started on (Predictor.run is where tiles are run)."""
    started: list[str] = []
    real = Predictor.run

    def spy(self, raster, *args, **kwargs):  # type: ignore[no-untyped-def]
        started.append(Path(raster).name)
        return real(self, raster, *args, **kwargs)

    monkeypatch.setattr(Predictor, "run", spy)
    return started


@pytest.mark.parametrize("suffix", [".gpkg", ".shp"])
def test_an_existing_vector_output_is_refused_before_the_prediction(
        rio_data: Path, tmp_path: Path, make_checkpoint: Callable[..., Path], runs: list[str], suffix: str) -> None:
    existing = tmp_path / f"old{suffix}"
    part = existing.with_suffix(".dbf") if suffix == ".shp" else existing  # a Shapefile's sidecar counts too
    part.write_bytes(b"an earlier run's polygons")
    r = CliRunner().invoke(cli, ["predict", str(rio_data / "RGB.byte.tif"), "-m", str(make_checkpoint()),
                                 "-o", str(tmp_path / "new.tif"), "--vector", str(existing)])
    assert r.exit_code == 1 and r.stderr.strip().splitlines()[-1] == \
        f"error: {part} exists; pass --overwrite to replace it", r.stderr
    assert runs == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [part.name]
    assert part.read_bytes() == b"an earlier run's polygons"


def test_a_batch_refuses_a_sheet_with_leftover_polygons_before_running_it(
        rio_data: Path, tmp_path: Path, make_checkpoint: Callable[..., Path], runs: list[str]) -> None:
    sheets, out = tmp_path / "sheets", tmp_path / "out"
    sheets.mkdir()
    out.mkdir()
    for name in ("rgb1.tif", "rgb2.tif"):
        shutil.copy(rio_data / name, sheets / name)
    (out / "rgb1_classes.gpkg").write_bytes(b"left over")
    r = CliRunner().invoke(cli, ["-q", "predict", str(sheets), "-m", str(make_checkpoint()), "--out-dir", str(out),
                                 "--with-vector"])
    assert r.exit_code == EXIT_SOME_FAILED, r.stderr
    assert runs == ["rgb2.tif"]
    with (out / "summary.csv").open() as f:
        rows = {Path(row["input"]).name: row for row in csv.DictReader(f)}
    assert rows["rgb1.tif"]["status"] == "failed"
    assert rows["rgb1.tif"]["message"] == f"{out / 'rgb1_classes.gpkg'} exists", rows["rgb1.tif"]
    assert rows["rgb2.tif"]["status"] == "ok" and (out / "rgb2_classes.gpkg").exists()
    assert not (out / "rgb1_classes.tif").exists()
