"""Small things a user notices: temp files, shared styles, layout and resume messages, progress in logs."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.transform import from_origin

from fastunet_core.cli import cli
from fastunet_core.cli._common import BarProgress
from fastunet_core.errors import ConfigError, DatasetLayoutError, FastUNetWarning
from fastunet_core.models.checkpoint import read_metadata
from fastunet_core.polygons.vectorize import VectorizeOptions, vectorize_raster
from fastunet_core.train.config import config_from_dict
from fastunet_core.train.datasets import DatasetSpec, open_dataset
from fastunet_core.train.evaluate import data_section_for
from fastunet_core.train.loop import train

REPO = Path(__file__).resolve().parent.parent


def _class_map(path: Path, classes: list[tuple[int, str]]) -> Path:
    """A 40 x 40 class raster with a CLASSES tag: class ids in three vertical stripes."""
    data = np.full((1, 40, 40), classes[-1][0], dtype=np.uint8)
    for i, (cid, _name) in enumerate(classes):
        data[0, :, i * 13 : (i + 1) * 13] = cid
    import json

    tag = json.dumps([{"id": c, "name": n, "color": [40 * c, 80, 200 - 40 * c]} for c, n in classes])
    with rasterio.open(path, "w", driver="GTiff", width=40, height=40, count=1, dtype="uint8", nodata=255,
                       crs="EPSG:32633", transform=from_origin(500000, 6000000, 1, 1)) as dst:
        dst.write(data)
        dst.update_tags(CLASSES=tag)
    return path


def _categories(qml: Path) -> list[str]:
    return [c.get("label", "") for c in ET.parse(qml).getroot().iter("category")]


def test_same_stem_outputs_with_other_styles_do_not_share_one(tmp_path: Path) -> None:
    """X.shp then X.geojson of other classes: X.qml stays X.shp's, X.geojson's goes to X.geojson.qml."""
    roads = _class_map(tmp_path / "roads.tif", [(1, "road"), (2, "rail"), (3, "path")])
    water = _class_map(tmp_path / "water.tif", [(1, "lake"), (2, "river"), (3, "pond")])
    vectorize_raster(roads, tmp_path / "X.shp", VectorizeOptions(workers=1))
    assert _categories(tmp_path / "X.qml") == ["road", "rail", "path"]
    with pytest.warns(FastUNetWarning, match=r"X.qml already holds the style of X.shp .* written as X.geojson.qml"):
        result = vectorize_raster(water, tmp_path / "X.geojson", VectorizeOptions(workers=1))
    assert _categories(tmp_path / "X.qml") == ["road", "rail", "path"]  # the Shapefile keeps its own style
    assert _categories(tmp_path / "X.geojson.qml") == ["lake", "river", "pond"]
    assert tmp_path / "X.geojson.qml" in result.files
    # --overwrite does not take X.qml from the Shapefile beside it either
    with pytest.warns(FastUNetWarning, match="written as X.geojson.qml"):
        vectorize_raster(water, tmp_path / "X.geojson", VectorizeOptions(workers=1, overwrite=True))
    assert _categories(tmp_path / "X.qml") == ["road", "rail", "path"]
    # the GeoJSON rewritten with the Shapefile's classes: X.qml fits it, the superseded own style goes
    vectorize_raster(roads, tmp_path / "X.geojson", VectorizeOptions(workers=1, overwrite=True))
    assert not (tmp_path / "X.geojson.qml").exists()


@pytest.mark.parametrize("raster_first", [True, False])
def test_class_raster_and_polygons_of_one_name_keep_their_styles(tmp_path: Path, make_checkpoint: Any,
                                                                 raster_first: bool) -> None:
    """predict X.tif and vectorize X.gpkg, in either order: X.qml is the raster's, the GeoPackage's is inside."""
    from fastunet_core.inference.predict import predict_raster
    from fastunet_core.io.styles import embedded_style

    source = tmp_path / "in.tif"
    with rasterio.open(source, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8", crs="EPSG:32633",
                       transform=from_origin(500000, 6000000, 1, 1)) as dst:
        dst.write(np.random.default_rng(0).integers(0, 256, (3, 64, 64), dtype=np.uint8))
    ckpt = make_checkpoint(tile=32, overlap=0)
    classes = tmp_path / "classes.tif"
    predict_raster(source, ckpt, classes)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FastUNetWarning)  # nothing to warn about: no style competes for X.qml
        if raster_first:
            predict_raster(source, ckpt, tmp_path / "X.tif")
            vectorize_raster(classes, tmp_path / "X.gpkg", VectorizeOptions(workers=1))
        else:
            vectorize_raster(classes, tmp_path / "X.gpkg", VectorizeOptions(workers=1))
            predict_raster(source, ckpt, tmp_path / "X.tif")
    assert not (tmp_path / "X.tif.qml").exists() and not (tmp_path / "X.gpkg.qml").exists()
    assert ET.parse(tmp_path / "X.qml").getroot().find("pipe") is not None  # a raster renderer
    inside = embedded_style(tmp_path / "X.gpkg", "X")
    assert inside is not None and ET.fromstring(inside).find("renderer-v2") is not None  # a polygon renderer


def test_plugin_loads_the_style_that_belongs_to_the_file(tmp_path: Path) -> None:
    pytest.importorskip("qgis.core")
    from qgis_plugin.results import _style_beside

    for name in ("X.gpkg", "X.geojson", "X.qml", "X.geojson.qml"):
        (tmp_path / name).write_text("")
    assert _style_beside(tmp_path / "X.geojson") == tmp_path / "X.geojson.qml"
    assert _style_beside(tmp_path / "X.gpkg") == tmp_path / "X.qml"


def test_onnx_runtime_leaves_nothing_in_tmpdir(tmp_path: Path, make_checkpoint: Any) -> None:
    """Compared with a bare Python process under the same conditions (some sandboxes add files of their own)."""
    pytest.importorskip("onnxruntime")
    raster = tmp_path / "in.tif"
    with rasterio.open(raster, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8", crs="EPSG:32633",
                       transform=from_origin(500000, 6000000, 1, 1)) as dst:
        dst.write(np.random.default_rng(0).integers(0, 256, (3, 64, 64), dtype=np.uint8))
    listings = []
    for i, args in enumerate((["-c", "pass"],
                              ["-m", "fastunet_core.cli", "-q", "predict", str(raster), "-m",
                               str(make_checkpoint(tile=32, overlap=0)), "-o", str(tmp_path / "o.tif"),
                               "--engine", "onnx", "--device", "cpu"])):
        tmp = tmp_path / f"tmp{i}"
        tmp.mkdir()
        env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(REPO)}
        subprocess.run([sys.executable, *args], check=True, env=env, cwd=tmp_path, timeout=300)
        listings.append(sorted(p.name for p in tmp.iterdir()))
    assert (tmp_path / "o.tif").exists()
    assert listings[1] == listings[0]


def _loveda_urban_only(generated_layouts: dict[str, Path], tmp_path: Path) -> Path:
    root = tmp_path / "LoveDA"
    shutil.copytree(generated_layouts["loveda"], root)
    for split in ("Train", "Val", "Test"):
        shutil.rmtree(root / split / "Rural", ignore_errors=True)
    return root


def test_loveda_without_rural_names_the_setting(generated_layouts: dict[str, Path], tmp_path: Path,
                                                make_checkpoint: Any) -> None:
    root = _loveda_urban_only(generated_layouts, tmp_path)
    with pytest.raises(DatasetLayoutError, match=r"has no Rural/ folder .*set data.loveda_scenes=\[Urban\]"):
        open_dataset(DatasetSpec("loveda", root, tile_size=32), "train")
    # evaluate --data takes the scenes that are there
    ckpt = make_checkpoint(classes="background,building,road,water,barren,forest,agriculture", tile=32, overlap=0)
    assert data_section_for(root, read_metadata(ckpt))["loveda_scenes"] == ["Urban"]


def test_refused_run_folder_names_the_setting_that_differs(tmp_path: Path, generated_layouts: dict[str, Path]) -> None:
    cfg = {"data": {"kind": "folder", "root": str(generated_layouts["folder"]), "tile_size": 32,
                    "class_names": ["a", "b", "c", "d"], "val_fraction": 0.5},
           "model": {"architecture": "unet", "args": {"widths": [4, 8], "convs": 1}},
           "optim": {"epochs": 1, "batch_size": 2, "micro_batch": 2, "lr": 0.01, "num_workers": 0,
                     "max_batches_per_epoch": 1},
           "device": "cpu", "output": str(tmp_path / "run")}
    try:
        train(config_from_dict(cfg))
    except DatasetLayoutError as exc:  # the generated folder layout's codes may differ: say so clearly
        pytest.fail(f"the generated folder layout did not train: {exc}")
    changed = {**cfg, "optim": {**cfg["optim"], "lr": 0.5}, "model": {**cfg["model"], "args": {"widths": [4, 16],
                                                                                               "convs": 1}}}
    with pytest.raises(ConfigError) as err:
        train(config_from_dict(changed))
    assert "model.args.widths: [4, 8] there, [4, 16] now" in str(err.value)
    assert "optim.lr: 0.01 there, 0.5 now" in str(err.value)


def test_progress_in_a_log_is_plain_lines() -> None:
    log = io.StringIO()
    with BarProgress(line_seconds=0, stream=log) as bar:
        bar.start(4, "tiles")
        bar.status("a.tif")
        for _ in range(4):
            bar.advance()
        bar.message("device: cpu")
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and "\x1b" not in log.getvalue()
    assert lines[0].startswith("tiles 1/4 (25 %)") and lines[0].endswith("; a.tif")
    assert lines[3].startswith("tiles 4/4 (100 %)") and lines[4] == "device: cpu"
    quiet = io.StringIO()
    with BarProgress(line_seconds=3600, stream=quiet) as bar:  # a long interval: only the final line
        bar.start(100, "steps")
        for _ in range(100):
            bar.advance()
    assert [line.split(",")[0] for line in quiet.getvalue().splitlines()] == ["steps 100/100 (100 %)"]


def test_progress_only_on_rank_0(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    log = io.StringIO()
    with BarProgress(line_seconds=0, stream=log) as bar:
        bar.start(2, "steps")
        bar.status("epoch 1 loss 0.5")
        bar.advance(2)
    assert log.getvalue() == ""


def test_cli_predict_output_without_a_terminal_has_no_bar(tmp_path: Path, make_checkpoint: Any) -> None:
    raster = tmp_path / "in.tif"
    with rasterio.open(raster, "w", driver="GTiff", width=96, height=64, count=3, dtype="uint8", crs="EPSG:32633",
                       transform=from_origin(500000, 6000000, 1, 1)) as dst:
        dst.write(np.random.default_rng(0).integers(0, 256, (3, 64, 96), dtype=np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = CliRunner().invoke(cli, ["predict", str(raster), "-m", str(make_checkpoint(tile=32, overlap=0)), "-o",
                                     str(tmp_path / "o.tif")])
    assert r.exit_code == 0, r.output
    assert "\r" not in r.stderr
    assert any(line.startswith("tiles 6/6 (100 %)") for line in r.stderr.splitlines()), r.stderr
