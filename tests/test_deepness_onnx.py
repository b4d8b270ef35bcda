"""Deepness-format ONNX models as first-class models: Deepness's own test models on its real orthophoto.

``dummy_fotomap_small.tif`` is a real 2 cm drone orthophoto (RGBA) with red/blue/green marks painted on; the
models are the tiny ONNX graphs Deepness's own tests run (see the data folder's PROVENANCE.md). Every result is
compared with a direct ONNX Runtime run of the same file, preprocessed and thresholded the Deepness way.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from fastunet_core.cli import cli

pytest.importorskip("onnxruntime")
DEEPNESS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "deepness-testdata"
FOTOMAP = DEEPNESS / "dummy_fotomap_small.tif"
MODELS = DEEPNESS / "models"


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stderr


def _rgb01() -> np.ndarray:
    with rasterio.open(FOTOMAP) as src:
        return src.read([1, 2, 3]).astype(np.float32) / 255.0


def _direct(model: Path, rgb: np.ndarray, tile: int = 512) -> list[np.ndarray]:
    """Run ``model`` with ONNX Runtime on non-overlapping tiles of the padded image; return each output."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    _, h, w = rgb.shape
    ph, pw = -(-h // tile) * tile, -(-w // tile) * tile
    padded = np.zeros((3, ph, pw), np.float32)
    padded[:, :h, :w] = rgb
    outs: list[np.ndarray] | None = None
    for y in range(0, ph, tile):
        for x in range(0, pw, tile):
            res = sess.run(None, {sess.get_inputs()[0].name: padded[None, :, y : y + tile, x : x + tile]})
            if outs is None:
                outs = [np.zeros((r.shape[1] if r.ndim == 4 else 1, ph, pw), np.float32) for r in res]
            for o, r in zip(outs, res, strict=True):
                o[:, y : y + tile, x : x + tile] = r[0] if r.ndim == 4 else r
    assert outs is not None
    return [o[:, :h, :w] for o in outs]


def _classes(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        assert (src.width, src.height) == (1243, 841) and src.crs.to_epsg() == 32633
        return src.read(1)


def test_red_detector_marks_what_onnxruntime_marks(tmp_path: Path) -> None:
    out = tmp_path / "red.tif"
    code, err = _cli("predict", str(FOTOMAP), "-m", str(MODELS / "one_output_sigmoid_red_detector.onnx"),
                     "-o", str(out), "--batch-size", "3")
    assert code == 0, err
    assert "assumed class names" in err and "assumed threshold 0.5" in err  # the file has no metadata
    ours = _classes(out)
    direct = _direct(MODELS / "one_output_sigmoid_red_detector.onnx", _rgb01())[0][0] >= 0.5
    assert 0.01 < direct.mean() < 0.99  # the comparison means something: both classes occur
    assert abs(int((ours == 1).sum()) - int(direct.sum())) <= 0.01 * direct.size
    assert np.mean((ours == 1) == direct) > 0.99  # and in the same places


def test_seg_thresh_option_moves_the_boundary(tmp_path: Path) -> None:
    out = tmp_path / "red.tif"
    code, err = _cli("predict", str(FOTOMAP), "-m", str(MODELS / "one_output_sigmoid_red_detector.onnx"),
                     "-o", str(out), "--seg-thresh", "0.6", "--model-classes", "soil,red=#ff0000")
    assert code == 0, err
    direct = _direct(MODELS / "one_output_sigmoid_red_detector.onnx", _rgb01())[0][0] >= 0.6
    assert np.mean((_classes(out) == 1) == direct) > 0.99
    with rasterio.open(out) as src:
        assert [c["name"] for c in json.loads(src.tags()["CLASSES"])] == ["soil", "red"]


def test_two_heads_give_one_raster_each_with_their_names(tmp_path: Path) -> None:
    out = tmp_path / "two.tif"
    code, err = _cli("predict", str(FOTOMAP), "-m", str(MODELS / "two_outputs_softmax_bsx2x512x512.onnx"),
                     "-o", str(out))
    assert code == 0, err
    direct = _direct(MODELS / "two_outputs_softmax_bsx2x512x512.onnx", _rgb01())
    for k, names in enumerate((["Coffee", "Tea"], ["Juice", "Beer"])):
        path = tmp_path / f"two_head{k}.tif"
        with rasterio.open(path) as src:
            assert [c["name"] for c in json.loads(src.tags()["CLASSES"])] == names
        assert np.mean(_classes(path) == direct[k].argmax(0)) > 0.99
    assert not out.exists()
    code, err = _cli("predict", str(FOTOMAP), "-m", str(MODELS / "two_outputs_softmax_bsx2x512x512.onnx"),
                     "-o", str(tmp_path / "one.tif"), "--head", "1")
    assert code == 0, err
    with rasterio.open(tmp_path / "one.tif") as src:
        assert [c["name"] for c in json.loads(src.tags()["CLASSES"])] == ["Juice", "Beer"]


def _spatial_two_head_model(path: Path, crop: int = 0) -> Path:
    """A two-head model whose heads disagree from place to place: softmax(R, G) and sigmoid(B - 0.4).

    ``crop`` > 0 cuts that many pixels off each side of both outputs (a model with valid padding).
    """
    import onnx
    from onnx import TensorProto, helper

    def const(name: str, values: list[int] | list[float], dtype: int = TensorProto.INT64) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, dtype, [len(values)], values))

    nodes = [const("s0", [0]), const("e2", [2]), const("s2", [2]), const("e3", [3]), const("ax", [1]),
             helper.make_node("Slice", ["input", "s0", "e2", "ax"], ["rg"]),
             helper.make_node("Mul", ["rg", "ten"], ["rg10"]),
             helper.make_node("Softmax", ["rg10"], ["soft"], axis=1),
             helper.make_node("Slice", ["input", "s2", "e3", "ax"], ["b"]),
             helper.make_node("Sub", ["b", "off"], ["b0"]),
             helper.make_node("Sigmoid", ["b0"], ["sig"])]
    inits = [helper.make_tensor("ten", TensorProto.FLOAT, [], [10.0]),
             helper.make_tensor("off", TensorProto.FLOAT, [], [0.4])]
    size = 256 - 2 * crop
    if crop:
        nodes += [const("c0", [crop, crop]), const("c1", [256 - crop, 256 - crop]), const("cax", [2, 3]),
                  helper.make_node("Slice", ["soft", "c0", "c1", "cax"], ["out_soft"]),
                  helper.make_node("Slice", ["sig", "c0", "c1", "cax"], ["out_sig"])]
    else:
        nodes += [helper.make_node("Identity", ["soft"], ["out_soft"]),
                  helper.make_node("Identity", ["sig"], ["out_sig"])]
    graph = helper.make_graph(
        nodes, "two_heads", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 256, 256])],
        [helper.make_tensor_value_info("out_soft", TensorProto.FLOAT, ["batch", 2, size, size]),
         helper.make_tensor_value_info("out_sig", TensorProto.FLOAT, ["batch", 1, size, size])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in {"model_type": "Segmentor", "tiles_overlap": 25, "resolution": 2,
                       "class_names": [{"0": "red", "1": "green"}, {"0": "blue"}]}.items():
        model.metadata_props.add(key=key, value=json.dumps(value))
    onnx.save(model, str(path))
    return path


def test_heads_vary_in_space_and_match_a_direct_run(tmp_path: Path) -> None:
    model = _spatial_two_head_model(tmp_path / "heads.onnx")
    code, err = _cli("predict", str(FOTOMAP), "-m", str(model), "-o", str(tmp_path / "c.tif"))
    assert code == 0, err
    rgb = _rgb01()
    soft = _classes(tmp_path / "c_head0.tif")
    sig = _classes(tmp_path / "c_head1.tif")
    want_soft = (rgb[1] > rgb[0]).astype(np.uint8)
    want_sig = (rgb[2] >= 0.4).astype(np.uint8)
    assert 0.01 < want_soft.mean() < 0.99 and 0.01 < want_sig.mean() < 0.99
    assert np.mean(soft == want_soft) > 0.99 and np.mean(sig == want_sig) > 0.99
    with rasterio.open(tmp_path / "c_head1.tif") as src:  # a one-name sigmoid head gets background first
        assert [c["name"] for c in json.loads(src.tags()["CLASSES"])] == ["background", "blue"]


def test_output_smaller_than_input_covers_the_centre(tmp_path: Path) -> None:
    model = _spatial_two_head_model(tmp_path / "valid.onnx", crop=24)
    code, err = _cli("predict", str(FOTOMAP), "-m", str(model), "-o", str(tmp_path / "c.tif"), "--head", "1",
                     "--overlap", "16")
    assert code == 0, err
    assert "overlap raised from 16 to 48 px" in err
    sig = _classes(tmp_path / "c.tif")
    rgb = _rgb01()
    want = (rgb[2] >= 0.4).astype(np.uint8)
    inner = (slice(24, -24), slice(24, -24))
    assert np.mean(sig[inner] == want[inner]) > 0.999  # a misplaced output would be off by 24 px
    assert (sig[:24] == 255).all() and (sig[:, -24:] == 255).all()  # the raster's outer rim: no prediction


@pytest.mark.parametrize("batch", ["1", "3", "5"])
def test_fixed_batch_model_runs_with_any_batch_size(tmp_path: Path, batch: str) -> None:
    model = MODELS / "dummy_model.onnx"  # input [1, 3, 512, 512]: batch fixed at 1
    out = tmp_path / "dummy.tif"
    code, err = _cli("predict", str(FOTOMAP), "-m", str(model), "-o", str(out), "--batch-size", batch)
    assert code == 0, err
    direct = _direct(model, _rgb01())[0].argmax(0)
    ours = _classes(out)
    assert len(np.unique(direct)) == 3
    assert np.mean(ours == direct) > 0.99


def test_info_describes_heads_and_assumptions() -> None:
    code, _ = _cli("info", str(MODELS / "dummy_model.onnx"))
    result = CliRunner().invoke(cli, ["info", str(MODELS / "two_outputs_softmax_bsx2x512x512.onnx")])
    assert code == 0 and result.exit_code == 0
    assert "head 1       : output 'output2', softmax" in result.stdout and "Beer" in result.stdout
    assert "assumed      : tile overlap 15 %" in result.stdout


def test_core_functions_take_onnx_paths_as_the_plugin_calls_them(tmp_path: Path) -> None:
    """The dock and Processing read the model with read_metadata and run predict_raster: both take .onnx."""
    from fastunet_core.inference.predict import PredictOptions, predict_raster
    from fastunet_core.models.checkpoint import read_metadata

    model = MODELS / "one_output_sigmoid_bsx1x512x512.onnx"
    meta = read_metadata(model)
    assert [c.name for c in meta.classes] == ["background", "Coffee"] and meta.tile_size_px == 512
    result = predict_raster(FOTOMAP, model, tmp_path / "c.tif", PredictOptions(tile_size_px=None, batch_size=2))
    assert result.outputs == [tmp_path / "c.tif"] and _classes(tmp_path / "c.tif").max() <= 1


def test_not_an_onnx_file_is_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not a model")
    code, err = _cli("predict", str(FOTOMAP), "-m", str(bad), "-o", str(tmp_path / "o.tif"))
    assert code == 1 and err.strip().splitlines()[-1].startswith("error: ") and "ONNX" in err
    assert not (tmp_path / "o.tif").exists()


def test_batch_writes_every_head_and_skips_finished_ones(tmp_path: Path) -> None:
    import csv
    import shutil

    rasters = tmp_path / "in"
    rasters.mkdir()
    for name in ("a.tif", "b.tif"):
        shutil.copy(FOTOMAP, rasters / name)
    model = str(MODELS / "two_outputs_softmax_bsx2x512x512.onnx")
    code, err = _cli("predict", str(rasters), "-m", model, "--out-dir", str(tmp_path / "out"), "--with-vector")
    assert code == 0, err
    for stem in ("a", "b"):
        for k in (0, 1):
            assert _classes(tmp_path / "out" / f"{stem}_classes_head{k}.tif").shape == (841, 1243)
            assert _polygon_classes(tmp_path / "out" / f"{stem}_classes_head{k}.gpkg") == [("Tea", "Beer")[k]]
    # polygons per head count as done too (NAME_classes.gpkg is never written for such a model)
    code, err = _cli("predict", str(rasters), "-m", model, "--out-dir", str(tmp_path / "out"), "--skip-existing",
                     "--with-vector")
    assert code == 0, err
    with open(tmp_path / "out" / "summary.csv", newline="") as f:
        assert [row["status"] for row in csv.DictReader(f)] == ["skipped", "skipped"]


TWO_HEADS = MODELS / "two_outputs_softmax_bsx2x512x512.onnx"


def _polygon_classes(path: Path) -> list[str]:
    from cli_helpers import read_polygons

    return sorted(set(read_polygons(path)["class_name"]))


def test_two_heads_with_polygons_write_polygons_per_head(tmp_path: Path) -> None:
    """FINDINGS4 H1: ``--vector`` with a two-head model failed with "input raster not found: two.tif" and
    deleted the head rasters; as in Deepness (a layer per head), each head's class raster is vectorised."""
    code, err = _cli("predict", str(FOTOMAP), "-m", str(TWO_HEADS), "-o", str(tmp_path / "two.tif"),
                     "--vector", str(tmp_path / "two.gpkg"))
    assert code == 0, err
    assert "wrote " + str(tmp_path / "two_head1.gpkg") in err
    assert _polygon_classes(tmp_path / "two_head0.gpkg") == ["Tea"]  # the model marks class 1 everywhere
    assert _polygon_classes(tmp_path / "two_head1.gpkg") == ["Beer"]
    assert not (tmp_path / "two.tif").exists() and not (tmp_path / "two.gpkg").exists()


def test_two_heads_through_segment_raster_and_the_plugins_job(tmp_path: Path) -> None:
    """The dock and Processing vectorise by default: the core returns every head's outputs, the job loads them."""
    from fastunet_core.inference.segment import segment_raster
    from fastunet_core.polygons.vectorize import vectorize_raster
    from qgis_plugin.jobs import SegmentJob, SegmentOutcome, run_segment_job

    spatial = _spatial_two_head_model(tmp_path / "heads.onnx")
    done = segment_raster(FOTOMAP, spatial, tmp_path / "s.tif", vector_output=tmp_path / "s.gpkg")
    assert [v.output for v in done.vectorized_heads] == [tmp_path / "s_head0.gpkg", tmp_path / "s_head1.gpkg"]
    assert done.vectorized is done.vectorized_heads[0]
    for k, names in enumerate((["green", "red"], ["blue"])):  # background is not vectorised
        assert _polygon_classes(tmp_path / f"s_head{k}.gpkg") == names
        alone = vectorize_raster(tmp_path / f"s_head{k}.tif", tmp_path / f"alone{k}.gpkg")
        assert alone.features == done.vectorized_heads[k].features > 10  # the head's own map, polygon for polygon
    assert set(done.files) >= {tmp_path / "s_head1.tif", tmp_path / "s_head1.gpkg"}
    assert all(p.exists() for p in done.files)

    class Sink:
        def set_percent(self, percent: float) -> None: ...

        def is_cancelled(self) -> bool:
            return False

        def log(self, text: str) -> None: ...

    (tmp_path / "dock").mkdir()
    for polygons in (tmp_path / "dock" / "p.gpkg", None):  # the dock's default, and polygons off
        out = run_segment_job(SegmentJob(FOTOMAP, TWO_HEADS, tmp_path / "dock" / "c.tif", polygons), Sink())
        out = SegmentOutcome.from_dict(json.loads(json.dumps(out.to_dict())))  # as the engine process sends it
        assert out.class_raster == tmp_path / "dock" / "c_head0.tif" and out.class_raster.exists()
        assert out.more_heads == ((tmp_path / "dock" / "c_head1.tif",
                                   tmp_path / "dock" / "p_head1.gpkg" if polygons else None),)
        assert out.polygons == (tmp_path / "dock" / "p_head0.gpkg" if polygons else None)
        assert out.class_areas[0][1] == "Tea" and out.class_areas[0][4] == 1.0  # head 0: Tea everywhere


def test_two_heads_failing_late_leave_nothing_behind(tmp_path: Path) -> None:
    """The second head's polygons cannot be written: neither head's raster nor the first polygons are kept."""
    from fastunet_core.errors import OutputExistsError
    from fastunet_core.inference.segment import segment_raster

    (tmp_path / "two_head1.gpkg").write_bytes(b"someone else's file")
    with pytest.raises(OutputExistsError):
        segment_raster(FOTOMAP, TWO_HEADS, tmp_path / "two.tif", vector_output=tmp_path / "two.gpkg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two_head1.gpkg"]
    assert (tmp_path / "two_head1.gpkg").read_bytes() == b"someone else's file"


@pytest.mark.parametrize("model", ["checkpoint", "one_output_sigmoid_bsx1x512x512.onnx"])
def test_a_head_the_model_lacks_is_refused(tmp_path: Path, model: str,
                                           make_checkpoint: object) -> None:
    """FINDINGS4 L5: ``--head 1`` on a checkpoint (one head) was silently ignored."""
    path = make_checkpoint() if model == "checkpoint" else MODELS / model  # type: ignore[operator]
    out = tmp_path / "c.tif"
    code, err = _cli("predict", str(FOTOMAP), "-m", str(path), "-o", str(out), "--head", "1")
    assert code == 1 and err.strip().splitlines()[-1].startswith("error: --head 1: "), err
    assert not out.exists()
    code, err = _cli("-q", "predict", str(FOTOMAP), "-m", str(path), "-o", str(out), "--head", "0")
    assert code == 0, err  # the one head there is
