"""``fastunet-geo export``: our models read back the way Deepness reads them, and as smp folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from cli_helpers import run_cli as _cli
from rasterio.windows import Window

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
DEEPNESS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "deepness-testdata"
FOTOMAP = DEEPNESS / "dummy_fotomap_small.tif"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small UNet with a value range and standardisation Deepness's fixed /255 must be rewritten for."""
    out = tmp_path_factory.mktemp("export") / "m.safetensors"
    code, err = _cli("init", "unet", "--arch-args", '{"widths": [8, 16, 32], "convs": 1}', "--seed", "7",
                     "--classes", "soil,maize=#00ff00,mark=#ff0000", "--value-range", "10,240",
                     "--mean", "0.4,0.5,0.3", "--std", "0.2,0.25,0.3", "--tile", "256", "--overlap", "64",
                     "--resolution-m", "0.02", "-o", str(out))
    assert code == 0, err
    return out


def _deepness_run(model: Path, tiles_hwc: np.ndarray) -> np.ndarray:
    """What Deepness does (model_base.py): first C channels, /255, (x - mean) / std from metadata, NCHW, run."""
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    props = sess.get_modelmeta().custom_metadata_map
    mean = np.array([float(v) for v in json.loads(props["standardization_mean"])], np.float32)
    std = np.array([float(v) for v in json.loads(props["standardization_std"])], np.float32)
    channels = sess.get_inputs()[0].shape[-3]
    x = np.float32(tiles_hwc[..., :channels] * 1.0 / 255.0)
    x = (x - mean) / std
    x = np.transpose(x, (0, 3, 1, 2)).astype(np.float32)
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_onnx_export_gives_our_probabilities_the_deepness_way(tmp_path: Path, checkpoint: Path) -> None:
    code, err = _cli("export", str(checkpoint), "-o", str(tmp_path / "m.onnx"))
    assert code == 0, err
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert isinstance(sess.get_inputs()[0].shape[0], str)  # dynamic batch
    props = {k: json.loads(v) for k, v in sess.get_modelmeta().custom_metadata_map.items()}
    assert props["model_type"] == "Segmentor"
    assert props["class_names"] == {"0": "soil", "1": "maize", "2": "mark"}
    assert props["resolution"] == 2 and props["tile_size"] == 256 and props["tiles_overlap"] == 25

    with rasterio.open(FOTOMAP) as src:  # three real 256 px tiles, RGBA as Deepness gets them
        tiles = np.stack([src.read(window=Window(x, y, 256, 256)) for x, y in ((0, 0), (600, 300), (987, 585))])
    got = _deepness_run(tmp_path / "m.onnx", np.transpose(tiles, (0, 2, 3, 1)))

    from fastunet_core.inference.engine import make_engine
    from fastunet_core.models.checkpoint import load_checkpoint
    from fastunet_core.runtime.device import resolve_device

    loaded = load_checkpoint(checkpoint)
    engine, _ = make_engine(loaded, resolve_device("cpu"), (1, 3, 256, 256), "torch")
    ours = engine(np.stack([loaded.meta.input.normalise(t[:3]) for t in tiles]))
    assert got.shape == ours.shape == (3, 3, 256, 256)
    assert np.allclose(got.sum(1), 1.0, atol=1e-5)  # softmax output
    assert ours.std() > 0.01  # probabilities that vary from place to place
    assert np.abs(got - ours).max() < 1e-4


def test_exported_onnx_predicts_like_the_checkpoint(tmp_path: Path, checkpoint: Path) -> None:
    code, err = _cli("export", str(checkpoint), "-o", str(tmp_path / "m.onnx"))
    assert code == 0, err
    code, out = _cli("info", str(tmp_path / "m.onnx"))
    assert "#00ff00  maize" in out and "0.02 m/px" in out and "assumed" not in out
    for model, name in ((checkpoint, "a.tif"), (tmp_path / "m.onnx", "b.tif")):
        code, err = _cli("predict", str(FOTOMAP), "-m", str(model), "-o", str(tmp_path / name), "--probs",
                         str(tmp_path / f"p{name}"))
        assert code == 0, err
    with rasterio.open(tmp_path / "pa.tif") as a, rasterio.open(tmp_path / "pb.tif") as b:
        pa, pb = a.read().astype(int), b.read().astype(int)
    assert np.abs(pa - pb).max() <= 1  # whole percent, rounding apart


def test_smp_format_round_trips(tmp_path: Path) -> None:
    smp = pytest.importorskip("segmentation_models_pytorch")
    code, err = _cli("init", "smp.Unet", "--arch-args", "encoder_name=resnet18,encoder_depth=4",
                     "--arch-args", '{"decoder_channels": [64, 32, 16, 8]}', "--classes", "a,b",
                     "--resolution-m", "0.5", "-o", str(tmp_path / "m.safetensors"))
    assert code == 0, err
    code, err = _cli("export", str(tmp_path / "m.safetensors"), "--format", "smp", "-o", str(tmp_path / "folder"))
    assert code == 0, err
    assert {p.name for p in (tmp_path / "folder").iterdir()} >= {"config.json", "model.safetensors", "fastunet.json"}
    theirs = smp.from_pretrained(str(tmp_path / "folder")).eval()  # smp reads it as its own
    from fastunet_core.models.checkpoint import load_checkpoint, read_metadata

    ours = load_checkpoint(tmp_path / "m.safetensors").torch_model()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(theirs(x), ours(x), atol=1e-5)
    meta = read_metadata(tmp_path / "folder")  # and fastunet-geo reads it back whole
    assert [c.name for c in meta.classes] == ["a", "b"] and meta.resolution_m == 0.5


def test_smp_format_refuses_other_architectures(tmp_path: Path, checkpoint: Path) -> None:
    code, err = _cli("export", str(checkpoint), "--format", "smp", "-o", str(tmp_path / "folder"))
    assert code == 1 and "not a segmentation_models_pytorch architecture" in err
    assert not (tmp_path / "folder").exists()


def _pan_uint16(path: Path) -> Path:
    """A 1-band uint16 raster with values 0..2047 (most above 255), as a 11-bit panchromatic sensor gives."""
    from affine import Affine

    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:200, 0:240]
    pan = (1023 + 900 * np.sin(x / 17.0) * np.cos(y / 23.0) + rng.normal(0, 40, (200, 240))).clip(0, 2047)
    with rasterio.open(path, "w", driver="GTiff", width=240, height=200, count=1, dtype="uint16", crs="EPSG:3857",
                       transform=Affine(0.5, 0, 1000.0, 0, -0.5, 2000.0)) as dst:
        dst.write(pan.astype(np.uint16), 1)
    return path


def test_an_exported_16_bit_model_predicts_without_warnings_like_its_checkpoint(tmp_path: Path) -> None:
    """Deepness's /255 rewrite of a 0..2047 model's scaling is not read as an 8-bit model (FINDINGS5 F5)."""
    ckpt = tmp_path / "pan.safetensors"
    code, err = _cli("init", "unet", "--arch-args", '{"widths": [8, 16], "convs": 1}', "--seed", "3",
                     "--classes", "other,roof", "--bands", "1", "--dtype", "uint16", "--value-range", "0,2047",
                     "--tile", "128", "--overlap", "16", "-o", str(ckpt))
    assert code == 0, err
    code, err = _cli("export", str(ckpt), "-o", str(tmp_path / "pan.onnx"))
    assert code == 0, err
    props = ort.InferenceSession(str(tmp_path / "pan.onnx"), providers=["CPUExecutionProvider"]) \
        .get_modelmeta().custom_metadata_map
    assert json.loads(props["standardization_std"]) == [pytest.approx(2047 / 255)]  # Deepness still gets its /255
    pan = _pan_uint16(tmp_path / "pan.tif")
    for model, name in ((ckpt, "st.tif"), (tmp_path / "pan.onnx", "onnx.tif")):
        code, err = _cli("predict", str(pan), "-m", str(model), "-o", str(tmp_path / name))
        assert code == 0, err
        assert "warning" not in err, err
    with rasterio.open(tmp_path / "st.tif") as a, rasterio.open(tmp_path / "onnx.tif") as b:
        st, onnx_map = a.read(1), b.read(1)
    assert len(np.unique(st)) == 2 and np.mean(st == onnx_map) > 0.999
    code, out = _cli("info", str(tmp_path / "pan.onnx"))
    assert "input        : bands 1, uint16, range (0.0, 2047.0), mean [0.0], std [1.0]" in out, out
    assert "in Deepness  : bands 1, values /255, mean [0.0], std [8.027" in out, out

    eight = tmp_path / "eight.tif"  # a real mismatch is still said: 8-bit pixels into the 16-bit model
    with rasterio.open(pan) as src:
        profile = {**src.profile, "dtype": "uint8"}
        with rasterio.open(eight, "w", **profile) as dst:
            dst.write((src.read(1) // 8).astype(np.uint8), 1)
    code, err = _cli("predict", str(eight), "-m", str(tmp_path / "pan.onnx"), "-o", str(tmp_path / "e.tif"))
    assert code == 0 and "eight.tif is uint8 but the model was trained on uint16 input" in err, err


def test_deepness_fields_edited_after_export_are_read_the_deepness_way(tmp_path: Path, checkpoint: Path) -> None:
    import onnx

    from fastunet_core.models.deepness import read_onnx_model

    code, err = _cli("export", str(checkpoint), "-o", str(tmp_path / "m.onnx"))
    assert code == 0, err
    meta, _ = read_onnx_model(tmp_path / "m.onnx")
    assert meta.input.value_range == (10.0, 240.0) and meta.input.mean == (0.4, 0.5, 0.3)  # as trained
    model = onnx.load(str(tmp_path / "m.onnx"))
    for prop in model.metadata_props:
        if prop.key == "standardization_mean":
            prop.value = json.dumps([0.5, 0.5, 0.5])
    onnx.save(model, str(tmp_path / "edited.onnx"))
    meta, _ = read_onnx_model(tmp_path / "edited.onnx")
    assert meta.input.value_range == (0.0, 255.0) and meta.input.mean == (0.5, 0.5, 0.5)
