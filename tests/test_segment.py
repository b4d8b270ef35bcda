"""``segment_raster``: crop to an area, predict, vectorise; nothing of a failed or cancelled call is left."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
import torch
from cli_helpers import read_polygons
from make_test_data import GeneratedRaster

from fastunet_core.errors import CancelledError, FastUNetError
from fastunet_core.inference.predict import PredictOptions
from fastunet_core.inference.segment import segment_raster
from fastunet_core.io.area import AreaSpec
from fastunet_core.models.checkpoint import load_checkpoint
from fastunet_core.models.metadata import OUTPUT_NODATA
from fastunet_core.polygons.vectorize import VectorizeOptions
from fastunet_core.runtime.progress import NullProgress, Progress


def _triangle(path: Path) -> shapely.Polygon:
    with rasterio.open(path) as src:
        b = src.bounds
    x0, y0, w, h = b.left + 10, b.bottom + 8, (b.right - b.left) * 0.6, (b.top - b.bottom) * 0.7
    return shapely.Polygon([(x0, y0), (x0 + w, y0), (x0, y0 + h)])


def test_polygon_area_segmented_and_vectorised(generated_rasters: dict[str, GeneratedRaster],
                                               make_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    raster = generated_rasters["utm_nodata"]
    ckpt = make_checkpoint(tile=64, overlap=8)
    triangle = _triangle(raster.path)
    out, gpkg = tmp_path / "classes.tif", tmp_path / "classes.gpkg"
    done = segment_raster(raster.path, ckpt, out, PredictOptions(device="cpu"), vector_output=gpkg,
                          vectorize=VectorizeOptions(classes=["background", "building", "water"]),
                          area=AreaSpec("polygons", polygons_wkb=(shapely.to_wkb(triangle),)))
    assert done.files[0] == out and gpkg in done.files and all(p.exists() for p in done.files)
    loaded = load_checkpoint(ckpt)
    with rasterio.open(raster.path) as src, rasterio.open(out) as dst:
        window = rasterio.windows.from_bounds(*dst.bounds, transform=src.transform)
        assert dst.transform.a == src.transform.a and (dst.bounds.left - src.bounds.left) % src.transform.a == 0
        x = loaded.meta.input.normalise(src.read([1, 2, 3], window=window.round_offsets().round_lengths()))
        classes = dst.read(1)
        rows, cols = np.mgrid[:dst.height, :dst.width]
        xs, ys = rasterio.transform.xy(dst.transform, rows.ravel(), cols.ravel())
        valid_src = raster.valid[int(window.row_off):int(window.row_off) + dst.height,
                                 int(window.col_off):int(window.col_off) + dst.width]
    inside = shapely.contains_xy(triangle, np.asarray(xs), np.asarray(ys)).reshape(classes.shape) & valid_src
    with torch.no_grad():
        expected = loaded.torch_model()(torch.from_numpy(x)[None]).argmax(1)[0].numpy()
    assert np.array_equal(classes != OUTPUT_NODATA, inside)  # the polygon and the raster's own nodata
    assert np.array_equal(classes[inside], expected[inside])
    polygons = read_polygons(gpkg)
    assert set(polygons["class_name"]) == {"background", "building", "water"}
    assert polygons.union_all().difference(triangle.buffer(1.0)).area < 1e-6  # nothing outside the area


def test_a_failing_stage_leaves_no_output(generated_rasters: dict[str, GeneratedRaster],
                                          make_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    out = tmp_path / "classes.tif"
    with pytest.raises(FastUNetError, match="classes"):  # the class raster is written, then polygons fail
        segment_raster(generated_rasters["webmerc_mask"].path, make_checkpoint(tile=64, overlap=8), out,
                       vector_output=tmp_path / "classes.gpkg", vectorize=VectorizeOptions(classes=["roads"]))
    assert list(tmp_path.iterdir()) == []


class _CancelIn:
    def __init__(self, stage: str) -> None:
        self.stage, self.seen = stage, []

    def __call__(self, name: str) -> Progress:
        self.seen.append(name)
        cancel = name == self.stage

        class P(NullProgress):
            def is_cancelled(self) -> bool:
                return cancel

        return P()


@pytest.mark.parametrize("stage", ["crop", "predict", "vectorize"])
def test_cancel_in_any_stage_leaves_nothing(stage: str, generated_rasters: dict[str, GeneratedRaster],
                                            make_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    raster = generated_rasters["alpha"]
    progress = _CancelIn(stage)
    with rasterio.open(raster.path) as src:
        b = src.bounds
    area = AreaSpec("extent", (b.left + 5, b.bottom + 5, b.right - 5, b.top - 5))
    with pytest.raises(CancelledError):
        segment_raster(raster.path, make_checkpoint(tile=64, overlap=8), tmp_path / "c.tif",
                       vector_output=tmp_path / "c.gpkg", area=area, work_dir=tmp_path, progress=progress)
    assert progress.seen[-1] == stage
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("stage", ["predict", "vectorize"])
def test_a_cancelled_run_puts_back_the_files_it_replaced(stage: str, generated_rasters: dict[str, GeneratedRaster],
                                                        make_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    """Yes to replacing, then Cancel while the polygons are made: the class raster already renamed into place
    is not lost with the new one; every old file is back as it was, and nothing else is left."""
    raster, ckpt = generated_rasters["alpha"], make_checkpoint(tile=64, overlap=8)
    out, gpkg = tmp_path / "c.tif", tmp_path / "c.gpkg"
    segment_raster(raster.path, ckpt, out, PredictOptions(device="cpu"), vector_output=gpkg)
    (tmp_path / "c.qml").write_text("<qgis>the user's own style</qgis>")  # edited since: must survive too
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert {"c.tif", "c.gpkg", "c.qml"} <= set(before)
    with pytest.raises(CancelledError):
        segment_raster(raster.path, ckpt, out, PredictOptions(device="cpu", overwrite=True), vector_output=gpkg,
                       vectorize=VectorizeOptions(overwrite=True), progress=_CancelIn(stage))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    done = segment_raster(raster.path, ckpt, out, PredictOptions(device="cpu", overwrite=True), vector_output=gpkg,
                          vectorize=VectorizeOptions(overwrite=True))  # a finished run replaces them, leaves no copy
    assert not list(tmp_path.glob(".*")) and out in done.files


def test_every_caller_goes_through_segment_raster(generated_rasters: dict[str, GeneratedRaster],
                                                  make_checkpoint: Callable[..., Path], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from fastunet_core.cli import cli
    from fastunet_core.inference import batch, segment
    from qgis_plugin.jobs import SegmentJob, run_segment_job

    calls: list[str] = []
    real = segment.segment_raster

    def spy(raster, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(Path(raster).name)
        return real(raster, *args, **kwargs)

    monkeypatch.setattr(segment, "segment_raster", spy)
    monkeypatch.setattr(batch, "segment_raster", spy)
    ckpt = make_checkpoint(tile=64, overlap=8)
    one, two = generated_rasters["utm_nodata"].path, generated_rasters["alpha"].path
    r = CliRunner().invoke(cli, ["-q", "predict", str(one), "-m", str(ckpt), "-o", str(tmp_path / "a.tif"),
                                 "--vector", str(tmp_path / "a.gpkg")])
    assert r.exit_code == 0, r.stderr
    r = CliRunner().invoke(cli, ["-q", "predict", str(one), str(two), "-m", str(ckpt), "--out-dir",
                                 str(tmp_path / "many")])
    assert r.exit_code == 0, r.stderr

    class Sink:
        def set_percent(self, percent: float) -> None: ...

        def is_cancelled(self) -> bool:
            return False

        def log(self, text: str) -> None: ...

    run_segment_job(SegmentJob(one, ckpt, tmp_path / "p.tif", tmp_path / "p.gpkg"), Sink())
    assert calls == [one.name, one.name, two.name, one.name]  # CLI, the batch's two sheets, the plugin
