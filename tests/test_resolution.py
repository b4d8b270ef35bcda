"""predict --resolution auto|native|METRES and --output-grid: the model runs at its own scale.

Deepness's own case: its 3-class "which colour dominates" model at 3 cm/px on the real 2 cm orthophoto
(1243 x 841): the class map comes back on the 1243 x 841 source grid, or 829 x 561 with --output-grid model
(the grid Deepness itself produces). A stripe model whose output is fixed to its own pixel grid shows the
scale the model really ran at.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.enums import Resampling
from rasterio.windows import Window

from fastunet_core.cli import cli
from fastunet_core.inference.resolution import plan_resolution

pytest.importorskip("onnxruntime")
DEEPNESS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "deepness-testdata"
FOTOMAP = DEEPNESS / "dummy_fotomap_small.tif"
DUMMY = DEEPNESS / "models" / "dummy_model.onnx"  # fixed batch 1, 512 px, outputs RGB ** 8


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stderr


def _stripe_model(path: Path, width: int = 64, resolution_cm: float = 3.0) -> Path:
    """An ONNX model that ignores its input: class 1 in stripes ``width`` model pixels wide (cols 64..127 ...)."""
    import onnx
    from onnx import TensorProto, helper

    cols = (np.arange(512) // width) % 2
    pattern = np.stack([1 - cols, cols]).astype(np.float32)[:, None, :].repeat(512, axis=1)[None]
    nodes = [helper.make_node("Constant", [], ["zero"], value=helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])),
             helper.make_node("Constant", [], ["pattern"], value=onnx.numpy_helper.from_array(pattern, "pattern")),
             helper.make_node("ReduceMean", ["input"], ["m"], axes=[1], keepdims=1),
             helper.make_node("Mul", ["m", "zero"], ["z"]),
             helper.make_node("Add", ["z", "pattern"], ["output"])]
    graph = helper.make_graph(nodes, "stripes",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 512, 512])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 2, 512, 512])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    for key, value in {"model_type": "Segmentor", "resolution": resolution_cm, "tiles_overlap": 0,
                       "class_names": {"0": "a", "1": "b"}}.items():
        model.metadata_props.add(key=key, value=json.dumps(value))
    onnx.save(model, str(path))
    return path


def _crop(tmp: Path, size: int = 768, alpha_hole: bool = False) -> Path:
    out = tmp / "crop.tif"
    with rasterio.open(FOTOMAP) as src:
        w = Window(100, 50, size, size)
        data = src.read(window=w)
        profile = {**src.profile, "width": size, "height": size, "transform": src.window_transform(w),
                   "tiled": False}
        profile.pop("blockysize", None)
        interp = src.colorinterp
    if alpha_hole:
        data[3, 300:500, 200:420] = 0  # no data there (alpha 0)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
        dst.colorinterp = interp
    return out


def _runs(row: np.ndarray) -> list[int]:
    edges = np.flatnonzero(np.diff(row.astype(int))) + 1
    return np.diff(np.concatenate([[0], edges, [len(row)]])).tolist()


def test_model_runs_at_its_own_scale(tmp_path: Path) -> None:
    model = _stripe_model(tmp_path / "stripes.onnx")
    raster = _crop(tmp_path)  # 768 px at 2 cm = 512 px at 3 cm: one model tile, no blending
    code, err = _cli("predict", str(raster), "-m", str(model), "-o", str(tmp_path / "auto.tif"))
    assert code == 0, err
    assert "resolution: the model's 0.03 m (the raster's 0.02 m is 33% finer)" in err
    with rasterio.open(tmp_path / "auto.tif") as dst, rasterio.open(raster) as src:
        assert (dst.width, dst.height, dst.transform, dst.crs) == (src.width, src.height, src.transform, src.crs)
        classes = dst.read(1)
    assert _runs(classes[300]) == [96] * 8  # 64 model pixels of 3 cm = 96 source pixels of 2 cm
    assert (classes == classes[:1]).all()
    code, err = _cli("predict", str(raster), "-m", str(model), "-o", str(tmp_path / "native.tif"),
                     "--resolution", "native")
    assert code == 0, err
    with rasterio.open(tmp_path / "native.tif") as dst:
        assert _runs(dst.read(1)[300])[:5] == [64] * 5
    code, err = _cli("predict", str(raster), "-m", str(model), "-o", str(tmp_path / "m.tif"), "--output-grid", "model")
    assert code == 0, err
    with rasterio.open(tmp_path / "m.tif") as dst:
        assert (dst.width, dst.height) == (512, 512) and dst.transform.a == pytest.approx(0.03, rel=1e-3)
        assert _runs(dst.read(1)[100]) == [64] * 8
    code, err = _cli("predict", str(raster), "-m", str(model), "-o", str(tmp_path / "m4.tif"), "--resolution", "0.04")
    assert code == 0, err
    assert "0.04 m as asked" in err
    with rasterio.open(tmp_path / "m4.tif") as dst:
        assert _runs(dst.read(1)[10])[:3] == [128] * 3  # 64 model pixels of 4 cm


def test_deepness_3cm_case_source_and_model_grids(tmp_path: Path) -> None:
    for grid, shape in (("source", (1243, 841)), ("model", (829, 561))):
        out = tmp_path / f"{grid}.tif"
        code, err = _cli("predict", str(FOTOMAP), "-m", str(DUMMY), "--model-resolution", "0.03", "-o", str(out),
                         "--output-grid", grid, "--batch-size", "3")
        assert code == 0, err
        with rasterio.open(out) as dst, rasterio.open(FOTOMAP) as src:
            assert (dst.width, dst.height) == shape
            assert dst.bounds == pytest.approx(src.bounds)
    with rasterio.open(FOTOMAP) as src:  # the model grid: as a direct run on GDAL's bilinear 3 cm read
        low = src.read([1, 2, 3], out_shape=(3, 561, 829), resampling=Resampling.bilinear).astype(np.float32)
    with rasterio.open(tmp_path / "model.tif") as dst:
        assert np.mean(dst.read(1) == np.argmax((low / 255) ** 8, axis=0)) > 0.999


def test_nodata_is_carried_through_resampling(tmp_path: Path) -> None:
    raster = _crop(tmp_path, alpha_hole=True)
    code, err = _cli("predict", str(raster), "-m", str(DUMMY), "--model-resolution", "0.03",
                     "-o", str(tmp_path / "c.tif"))
    assert code == 0, err
    with rasterio.open(tmp_path / "c.tif") as dst:
        classes = dst.read(1)
    hole = np.zeros(classes.shape, bool)
    hole[300:500, 200:420] = True
    assert (classes[hole] == 255).all() and (classes[~hole] != 255).all()


def test_degrees_use_the_ground_resolution(tmp_path: Path) -> None:
    from rasterio.warp import calculate_default_transform, reproject

    geo = tmp_path / "wgs84.tif"
    with rasterio.open(_crop(tmp_path)) as src:
        transform, width, height = calculate_default_transform(src.crs, "EPSG:4326", src.width, src.height,
                                                               *src.bounds)
        profile = {**src.profile, "crs": "EPSG:4326", "transform": transform, "width": width, "height": height}
        with rasterio.open(geo, "w", **profile) as dst:
            for b in range(1, 5):
                reproject(rasterio.band(src, b), rasterio.band(dst, b), resampling=Resampling.bilinear)
    model = _stripe_model(tmp_path / "stripes.onnx")
    code, err = _cli("predict", str(geo), "-m", str(model), "-o", str(tmp_path / "c.tif"))
    assert code == 0, err
    from fastunet_core.io.raster_input import ground_resolution_m

    with rasterio.open(geo) as src:
        ground = ground_resolution_m(src)  # metres on the ellipsoid (about 0.0216: its pixels are not square)
    assert ground is not None and 0.018 < ground < 0.025
    assert f"the model's 0.03 m (the raster's {ground:.3g} m" in err  # not 2e-7 "metres" from degrees
    with rasterio.open(tmp_path / "c.tif") as dst:
        assert (dst.width, dst.height, dst.crs.to_epsg()) == (width, height, 4326)
        runs = _runs(dst.read(1)[height // 2])
    # a whole stripe left of where the second tile's stripes blend in (the warped footprint's corner is nodata):
    # 64 model pixels of 3 cm in this grid's pixels, not 64 of them (the raster's own scale)
    assert any(abs(r - 64 * 0.03 / ground) < 2 for r in runs[:4]), runs
    assert not any(abs(r - 64) < 3 for r in runs[:4]), runs


def test_plan_resolution_rules() -> None:
    assert not plan_resolution("auto", 0.32, 0.3).resamples  # within 10 %
    assert plan_resolution("auto", 0.5, 0.3).factor == pytest.approx(0.6)
    assert not plan_resolution("auto", 0.5, None).resamples  # unknown model resolution: the raster's own
    assert not plan_resolution("native", 0.02, 0.3).resamples
    assert plan_resolution("0.1", 0.05, None).factor == pytest.approx(2.0)
    code, err = _cli("predict", str(FOTOMAP), "-m", str(DUMMY), "-o", "x.tif", "--resolution", "fine")
    assert code == 1 and "--resolution takes auto, native or metres" in err
