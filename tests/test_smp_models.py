"""segmentation_models_pytorch models: smp.NAME architectures with their arguments, save_pretrained folders as
model paths, conversion once with ``init --from``; nothing is ever downloaded (network calls fail here)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from cli_helpers import run_cli as _cli
from rasterio.windows import Window

smp = pytest.importorskip("segmentation_models_pytorch")
DEEPNESS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "deepness-testdata"
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any download attempt (smp's encoder weights, the hub) fails loudly."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network access attempted in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def raster(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 256 x 256 RGB corner of the real 2 cm orthophoto with its painted marks."""
    out = tmp_path_factory.mktemp("smp") / "patch.tif"
    with rasterio.open(DEEPNESS / "dummy_fotomap_small.tif") as src:
        w = Window(500, 300, 256, 256)
        profile = {"driver": "GTiff", "width": 256, "height": 256, "count": 3, "dtype": "uint8", "crs": src.crs,
                   "transform": src.window_transform(w)}
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(src.read([1, 2, 3], window=w))
    return out


def _smp_model(raster: Path, seed: int = 3) -> torch.nn.Module:
    """A random smp.Unet(resnet18) whose classes vary in space: BatchNorm statistics taken from the raster.

    (Fresh BatchNorm layers in eval mode leave a random net's output almost constant; with statistics
    from real input, about a third of the pixels fall in each class and a wrong input scaling shows.)
    """
    torch.manual_seed(seed)
    model = smp.Unet(encoder_name="resnet18", encoder_weights=None, in_channels=3, classes=3)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative: the statistics of the one batch below
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(_normalised(raster))[None])
    return model.eval()


def _normalised(raster: Path) -> np.ndarray:
    with rasterio.open(raster) as src:
        return (src.read().astype(np.float32) / 255 - IMAGENET_MEAN) / IMAGENET_STD


def _direct(model: torch.nn.Module, raster: Path) -> np.ndarray:
    with torch.no_grad():
        direct = model(torch.from_numpy(_normalised(raster))[None]).argmax(1)[0].numpy()
    assert np.bincount(direct.ravel(), minlength=3).min() > 0.05 * direct.size  # every class covers some ground
    return direct


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def test_save_pretrained_folder_predicts_directly(tmp_path: Path, raster: Path) -> None:
    model = _smp_model(raster)
    model.save_pretrained(str(tmp_path / "smp_unet"))
    direct = _direct(model, raster)
    code, err = _cli("predict", str(raster), "-m", str(tmp_path / "smp_unet"), "-o", str(tmp_path / "c.tif"),
                     "--tile", "256", "--overlap", "0")
    assert code == 0, err
    assert "assumed RGB uint8 /255 with ImageNet mean/std" in err
    assert np.mean(_read(tmp_path / "c.tif") == direct) > 0.99


def test_init_smp_architecture_with_arguments_and_weights(tmp_path: Path, raster: Path) -> None:
    model = _smp_model(raster, seed=5)
    torch.save({"model_state_dict": model.state_dict(), "epoch": 9}, tmp_path / "best_model.pth")  # GeoAI-style
    code, err = _cli("init", "smp.Unet", "--arch-args", "encoder_name=resnet18", "--classes", "a,b,c",
                     "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225", "--tile", "256",
                     "--weights", str(tmp_path / "best_model.pth"), "-o", str(tmp_path / "m.safetensors"))
    assert code == 0, err
    code, err = _cli("predict", str(raster), "-m", str(tmp_path / "m.safetensors"), "-o", str(tmp_path / "c.tif"),
                     "--overlap", "0")
    assert code == 0, err
    assert np.mean(_read(tmp_path / "c.tif") == _direct(model, raster)) > 0.99
    code, err = _cli("init", "smp.Unet", "--arch-args", "encoder_name=resnet34", "--classes", "3",
                     "--weights", str(tmp_path / "best_model.pth"), "-o", str(tmp_path / "bad.safetensors"))
    assert code == 1 and ("with other shapes" in err or "missing" in err), err  # resnet18 weights, resnet34 asked


def test_encoder_weights_never_stored_and_never_downloaded(tmp_path: Path) -> None:
    code, err = _cli("init", "smp.FPN", "--arch-args", "encoder_name=resnet18,encoder_weights=imagenet",
                     "--classes", "2", "-o", str(tmp_path / "fpn.safetensors"))
    assert code == 0, err  # no download happened: the network is closed in this test
    from fastunet_core.models.checkpoint import load_checkpoint, read_metadata

    meta = read_metadata(tmp_path / "fpn.safetensors")
    assert meta.architecture == "smp.FPN" and "encoder_weights" not in meta.arch_args
    assert meta.arch_args["encoder_name"] == "resnet18"
    # an older checkpoint that stored encoder_weights still loads without trying the network
    from fastunet_core.models.checkpoint import save_checkpoint

    loaded = load_checkpoint(tmp_path / "fpn.safetensors")
    old = type(meta)(**{**meta.__dict__, "arch_args": {**meta.arch_args, "encoder_weights": "imagenet"}})
    save_checkpoint(tmp_path / "old.safetensors", loaded.torch_model(), old)
    assert load_checkpoint(tmp_path / "old.safetensors").model is not None


def test_unknown_smp_name_lists_them(tmp_path: Path) -> None:
    code, err = _cli("init", "smp.Unet3000", "--classes", "2", "-o", str(tmp_path / "m.safetensors"))
    assert code == 1 and "smp.UnetPlusPlus" in err and "smp.DeepLabV3Plus" in err


def test_init_from_folder_converts_once(tmp_path: Path, raster: Path) -> None:
    model = _smp_model(raster)
    model.save_pretrained(str(tmp_path / "smp_unet"))
    code, err = _cli("init", "--from", str(tmp_path / "smp_unet"), "--classes", "soil,maize=#00ff00,red=#ff0000",
                     "--resolution-m", "0.02", "--tile", "256", "--overlap", "0", "-o", str(tmp_path / "m.safetensors"))
    assert code == 0, err
    code, out = _cli("info", str(tmp_path / "m.safetensors"))
    assert "smp.Unet" in out and "maize" in out and "#00ff00" in out and "0.02 m/px" in out and "256 px" in out
    code, err = _cli("predict", str(raster), "-m", str(tmp_path / "m.safetensors"), "-o", str(tmp_path / "c.tif"))
    assert code == 0, err
    assert "assumed" not in err  # everything the folder lacked was given once
    assert np.mean(_read(tmp_path / "c.tif") == _direct(model, raster)) > 0.99
    with rasterio.open(tmp_path / "c.tif") as src:
        assert [c["name"] for c in json.loads(src.tags()["CLASSES"])] == ["soil", "maize", "red"]


def test_init_from_onnx_completes_its_metadata(tmp_path: Path) -> None:
    src = DEEPNESS / "models" / "one_output_sigmoid_red_detector.onnx"
    code, err = _cli("init", "--from", str(src), "--classes", "soil,red=#ff0000", "--resolution-m", "0.03",
                     "--overlap", "128", "--seg-thresh", "0.6", "-o", str(tmp_path / "red.onnx"))
    assert code == 0, err
    from fastunet_core.models.deepness import read_onnx_model

    meta, spec = read_onnx_model(tmp_path / "red.onnx")
    assert [c.name for c in meta.classes] == ["soil", "red"]
    assert meta.resolution_m == pytest.approx(0.03) and spec.seg_thresh == pytest.approx(0.6)
    assert meta.overlap_px == 128 and not [a for a in spec.assumed if "class names" in a or "resolution" in a]
    import onnxruntime as ort

    props = ort.InferenceSession(str(tmp_path / "red.onnx")).get_modelmeta().custom_metadata_map
    assert json.loads(props["class_names"]) == {"0": "soil", "1": "red"} and json.loads(props["resolution"]) == 3


def test_the_weights_file_of_a_folder_says_give_the_folder(tmp_path: Path) -> None:
    """The tester picked 'smp dir/model.safetensors': the answer names the folder, not a conversion."""
    torch.manual_seed(0)
    smp.Unet(encoder_name="resnet18", encoder_depth=3, decoder_channels=(16, 8, 4), encoder_weights=None,
             classes=2).save_pretrained(str(tmp_path / "smp dir"))
    weights = tmp_path / "smp dir" / "model.safetensors"
    code, err = _cli("info", str(weights))
    assert code == 1
    assert f"{weights} holds only the weights of the smp model in the folder {tmp_path / 'smp dir'}: give the " \
        "folder instead" in err
    loose = tmp_path / "weights.safetensors"  # the same weights alone: no folder to give
    loose.write_bytes(weights.read_bytes())
    code, err = _cli("info", str(loose))
    assert code == 1 and "smp save_pretrained folder" in err
    assert "init ARCH --classes NAMES --weights FILE -o OUT.safetensors" in err


def test_init_from_an_exported_folder_keeps_its_scaling_and_tiles(tmp_path: Path, raster: Path) -> None:
    """FINDINGS4 M6: ``init --from`` a folder written by ``export --format smp`` replaced the scaling and tiles
    its fastunet.json records with smp's ImageNet defaults, silently: the converted model saw other input."""
    from fastunet_core.models.checkpoint import read_metadata

    torch.save(_smp_model(raster).state_dict(), tmp_path / "w.pth")
    code, err = _cli("init", "smp.Unet", "--arch-args", "encoder_name=resnet18", "--classes", "a,b,c", "--mean",
                     "0,0,0", "--std", "1,1,1", "--tile", "256", "--overlap", "32", "--weights",
                     str(tmp_path / "w.pth"), "-o", str(tmp_path / "orig.safetensors"))
    assert code == 0, err
    code, err = _cli("export", str(tmp_path / "orig.safetensors"), "--format", "smp", "-o", str(tmp_path / "smp dir"))
    assert code == 0, err
    code, err = _cli("init", "--from", str(tmp_path / "smp dir"), "--classes", "soil,maize,red", "-o",
                     str(tmp_path / "conv.safetensors"))
    assert code == 0 and "assumed" not in err, err
    meta = read_metadata(tmp_path / "conv.safetensors")
    assert meta.input.mean == (0, 0, 0) and meta.input.std == (1, 1, 1)
    assert (meta.tile_size_px, meta.overlap_px) == (256, 32)
    assert [c.name for c in meta.classes] == ["soil", "maize", "red"]
    for name in ("orig", "conv"):
        code, err = _cli("predict", str(raster), "-m", str(tmp_path / f"{name}.safetensors"), "-o",
                         str(tmp_path / f"{name}.tif"))
        assert code == 0, err
    maps = _read(tmp_path / "orig.tif"), _read(tmp_path / "conv.tif")
    assert np.array_equal(*maps) and np.bincount(maps[0].ravel()).min() > 0.05 * maps[0].size  # the same map, varied
    # a plain save_pretrained folder records none of it: each default is named
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in ("config.json", "model.safetensors"):
        (plain / name).write_bytes((tmp_path / "smp dir" / name).read_bytes())
    code, err = _cli("init", "--from", str(plain), "--classes", "a,b,c", "--tile", "256", "-o",
                     str(tmp_path / "p.safetensors"))
    assert code == 0, err
    assert "note: assumed RGB uint8 /255 with ImageNet mean/std" in err
    assert "note: assumed tiles 512 px, overlap 64 px (smp records none)" in err  # --overlap was not given
    assert "note: assumed no model resolution (give it with --resolution-m)" in err
