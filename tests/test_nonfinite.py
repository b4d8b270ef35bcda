"""Non-finite values as a whole kind: NaN/inf pixels in every dataset, diverging training, damaged weights.

Expected answers are computed independently of the code under test: the finite-pixel statistics of the
input, the exact 100 % mIoU of a model that is right on every labelled pixel, the tensors of the files.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
import yaml
from click.testing import CliRunner
from rasterio.transform import from_origin
from safetensors.torch import load_file, save_file

from fastunet_core.cli import cli
from fastunet_core.models.metadata import InputSpec
from fastunet_core.train.augment import SampleTransform
from fastunet_core.train.datasets import IGNORE_INDEX, DatasetSpec, open_dataset
from fastunet_core.train.evaluate import evaluate_checkpoint

SMALL_UNET = {"architecture": "unet", "args": {"widths": [8, 16], "convs": 1}}
CRS = "EPSG:32616"


def _write(path: Path, data: np.ndarray, **profile: Any) -> Path:
    bands, h, w = data.shape
    base = {"driver": "GTiff", "width": w, "height": h, "count": bands, "dtype": data.dtype.name, "crs": CRS,
            "transform": from_origin(733601.0, 3725139.0, 0.5, 0.5)}
    with rasterio.open(path, "w", **{**base, **profile}) as dst:
        dst.write(data)
    return path


def _spoiled(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A float32 (1, h, w) image in [0, 1] with a NaN block, +inf and -inf pixels; and where they are."""
    image = rng.random((1, h, w), dtype=np.float32)
    bad = np.zeros((h, w), dtype=bool)
    bad[5:15, 20:30] = True  # 10 x 10 NaN block
    bad[40, 3] = bad[41, 60] = True
    image[0, 5:15, 20:30] = np.nan
    image[0, 40, 3] = np.inf
    image[0, 41, 60] = -np.inf
    return image, bad


def _pairs_folder(root: Path, images: list[np.ndarray], masks: list[np.ndarray]) -> Path:
    for i, (img, msk) in enumerate(zip(images, masks, strict=True)):
        (root / "img_dir").mkdir(parents=True, exist_ok=True)
        (root / "ann_dir").mkdir(parents=True, exist_ok=True)
        _write(root / "img_dir" / f"{i}.tif", img)
        _write(root / "ann_dir" / f"{i}.tif", msk[None].astype(np.uint8))
    return root


@pytest.mark.parametrize("train", [False, True])
def test_every_dataset_fills_and_ignores_nonfinite_pixels(tmp_path: Path, train: bool) -> None:
    """Folder pairs and raster+polygons: NaN/inf never reach the tensor; those pixels are ignored in the mask."""
    rng = np.random.default_rng(0)
    image, bad = _spoiled(rng, 64, 64)
    folder = _pairs_folder(tmp_path / "pairs", [image, image], [np.ones((64, 64)), np.ones((64, 64))])
    _write(tmp_path / "ortho.tif", image)
    import geopandas as gpd
    import shapely

    gpd.GeoDataFrame({"c": [1]}, geometry=[shapely.box(733601.0, 3725139.0 - 32, 733601.0 + 32, 3725139.0)],
                     crs=CRS).to_file(tmp_path / "labels.gpkg")
    specs = [DatasetSpec("folder", folder, tile_size=64, class_names=("a", "b"), val_fraction=0.5),
             DatasetSpec("raster_vector", tmp_path, tile_size=64, raster=Path("ortho.tif"),
                         vector=Path("labels.gpkg"), class_names=("background", "field"), val_fraction=0.01)]
    spec = InputSpec(bands=(1,), dtype="float32", value_range=(0.0, 1.0), mean=(0.4,), std=(0.2,))
    from fastunet_core.train.device_augment import DeviceBatchTransform

    for ds_spec in specs:
        ds = open_dataset(ds_spec, "train")
        # the GPU path: workers hand raw pixels on, the batch is augmented and normalised on the device
        raw, mask, params = SampleTransform(spec, train=train, device_side=True).raw(*ds[0])
        xd, yd = DeviceBatchTransform(spec)(raw[None], mask[None], params[None])
        assert torch.isfinite(xd).all() and int((yd == IGNORE_INDEX).sum()) == int(bad[: yd.shape[1]].sum())
        x, y = SampleTransform(spec, train=train)(*ds[0])
        assert torch.isfinite(x).all(), ds_spec.kind
        n_bad = int(bad[: y.shape[0]].sum())
        assert int((y == IGNORE_INDEX).sum()) == n_bad, ds_spec.kind  # exactly the spoiled pixels are ignored
        if not train:  # without augmentation the pixels stay in place: filled with the neutral input 0
            assert torch.equal(x[0][torch.from_numpy(bad[: y.shape[0]])], torch.zeros(n_bad))
            good = ~bad[: y.shape[0]]
            expected = (image[0, : y.shape[0]][good] - 0.4) / 0.2
            np.testing.assert_allclose(x[0].numpy()[good], expected, rtol=1e-5, atol=1e-5)


def test_float_nodata_value_is_filled_like_nan(tmp_path: Path) -> None:
    """A float raster with a nodata tag (-9999): those pixels are ignored and reach the model as 0, not -9999."""
    image = np.full((1, 32, 32), 0.5, dtype=np.float32)
    image[0, :4, :] = -9999.0
    folder = tmp_path / "pairs"
    (folder / "img_dir").mkdir(parents=True)
    (folder / "ann_dir").mkdir(parents=True)
    _write(folder / "img_dir" / "0.tif", image, nodata=-9999.0)
    _write(folder / "ann_dir" / "0.tif", np.ones((1, 32, 32), dtype=np.uint8))
    ds = open_dataset(DatasetSpec("folder", folder, tile_size=32, class_names=("a", "b"), val_fraction=0.0), "train")
    x, y = SampleTransform(InputSpec(bands=(1,), dtype="float32", value_range=(0.0, 1.0)), train=False)(*ds[0])
    assert int((y == IGNORE_INDEX).sum()) == 4 * 32
    assert float(x[0, :4].abs().max()) == 0.0 and float(x[0, 4:].min()) == 0.5


def test_evaluate_ignores_a_nan_block_exactly(tmp_path: Path, make_checkpoint: Any) -> None:
    """Issue 14: evaluate --data on float pairs with a 10 x 10 NaN block (ignored in the mask) is 100 % mIoU.

    The masks are the stand-in model's classes computed here from the pixel values (nearest grey level), so
    a model that sees every finite pixel as it is gets each labelled pixel right: the exact answer is 1.
    """
    from fastunet_core.models.pixel_colour import grey_prototypes

    ckpt = make_checkpoint("test_pixel_colour", classes="dark,mid,bright", bands=(1,), dtype="float32", tile=32,
                           overlap=0)
    g = grey_prototypes(3).numpy()
    rng = np.random.default_rng(1)
    images, masks = [], []
    for _ in range(2):
        image, bad = _spoiled(rng, 64, 64)
        mask = np.abs(np.nan_to_num(image[0])[..., None] - g).argmin(-1)
        assert len(np.unique(mask[~bad])) == 3  # every class present: the answer varies from place to place
        mask[bad] = IGNORE_INDEX
        images.append(image)
        masks.append(mask)
    root = _pairs_folder(tmp_path / "pairs", images, masks)
    result = evaluate_checkpoint(ckpt, None, [], "train", 4, "cpu", root)
    assert result.report.miou == 1.0 and result.report.pixel_accuracy == 1.0
    assert math.isfinite(result.loss)
    r = CliRunner().invoke(cli, ["evaluate", "-m", str(ckpt), "--data", str(root), "--split", "train",
                                 "--device", "cpu"])
    assert r.exit_code == 0, r.output
    row = next(line for line in r.output.splitlines() if line.startswith("mIoU"))
    assert row.split()[1] == "100.00", r.output


def test_evaluate_fills_nan_before_a_spatial_model(tmp_path: Path, make_checkpoint: Any) -> None:
    """A UNet sees across pixels: NaN must be filled (with the neutral input 0) before it, or it spreads.

    Expected classes: the model run here directly on the image with its NaN pixels set to the normalised
    value 0 by hand; evaluate must agree on every labelled pixel (exactly 100 %).
    """
    from fastunet_core.models.checkpoint import load_checkpoint, save_checkpoint

    loaded = load_checkpoint(make_checkpoint("unet_tiny", classes="a,b,c", bands=(1,), dtype="float32", tile=64,
                                             overlap=0))
    model = loaded.model.eval()
    torch.manual_seed(0)
    with torch.no_grad():  # untrained weights give one class everywhere: draw livelier ones
        for p in model.parameters():
            p.normal_(0.0, 0.7)
    ckpt = save_checkpoint(tmp_path / "lively.safetensors", model, loaded.meta)
    image, bad = _spoiled(np.random.default_rng(6), 64, 64)
    x = torch.from_numpy(np.where(np.isfinite(image), image, 0.0).astype(np.float32))[None]
    with torch.no_grad():
        mask = model(x).argmax(1)[0].numpy()
    assert len(np.unique(mask[~bad])) > 1
    mask[bad] = IGNORE_INDEX
    root = _pairs_folder(tmp_path / "pairs", [image], [mask])
    result = evaluate_checkpoint(ckpt, None, [], "train", 1, "cpu", root)
    assert result.report.pixel_accuracy == 1.0 and math.isfinite(result.loss)


def _rv_config(tmp_path: Path, raster: Path, **optim: Any) -> Path:
    cfg = {"data": {"kind": "raster_vector", "root": str(raster.parent), "raster": raster.name,
                    "vector": "labels.gpkg", "class_names": ["background", "field"], "tile_size": 32,
                    "val_fraction": 0.25},
           "model": SMALL_UNET, "device": "cpu", "output": str(tmp_path / "run"),
           "optim": {"epochs": 2, "batch_size": 4, "micro_batch": 4, "lr": 0.01, "num_workers": 0, **optim}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _nan_ortho(tmp_path: Path, all_nan: bool = False) -> Path:
    """Issue 14's case: a float32 raster with NaN as nodata (no nodata tag) and polygon labels."""
    import geopandas as gpd
    import shapely

    rng = np.random.default_rng(2)
    image = rng.random((1, 96, 96), dtype=np.float32)
    image[0, :, :12] = np.nan  # a clipped edge, as after warping
    image[0, 50:60, 40:70] = np.nan
    if all_nan:
        image[:] = np.nan
    raster = _write(tmp_path / "ortho.tif", image)
    x0, y0 = 733601.0, 3725139.0
    fields = [shapely.box(x0 + 5, y0 - 40, x0 + 30, y0 - 5), shapely.box(x0 + 10, y0 - 45, x0 + 25, y0 - 36)]
    gpd.GeoDataFrame({"c": [1, 1]}, geometry=fields, crs=CRS).to_file(tmp_path / "labels.gpkg")
    return raster


def test_training_on_nan_nodata_raster_stays_finite(tmp_path: Path) -> None:
    """Finite losses every epoch and finite checkpoints, whatever NaN the raster holds."""
    cfg = _rv_config(tmp_path, _nan_ortho(tmp_path))
    r = CliRunner().invoke(cli, ["-q", "train", "-c", str(cfg)])
    assert r.exit_code == 0, r.output
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history) == 2
    for h in history:
        assert all(math.isfinite(h[k]) for k in ("train_loss", "val_loss", "val_miou")), h
    for name in ("best.safetensors", "last.safetensors"):
        tensors = load_file(tmp_path / "run" / name)
        assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())


def test_diverging_training_stops_with_one_line_and_exit_1(tmp_path: Path) -> None:
    """optim.lr=1e12 (issue 16): exit 1, one line naming epoch and step; the checkpoint kept is finite."""
    cfg = _rv_config(tmp_path, _nan_ortho(tmp_path), epochs=6, lr=1e12)
    r = CliRunner().invoke(cli, ["train", "-c", str(cfg)])
    assert r.exit_code == 1, r.output
    lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "training diverged at epoch" in lines[0] and ("step" in lines[0] or "validation" in lines[0]), lines[0]
    assert "Lower the learning rate (now 1e+12), e.g. optim.lr=1e+11 and start over with --fresh" in lines[0]
    assert "best epoch" not in r.stderr  # no success line, no checkpoint path that does not exist
    for path in (tmp_path / "run").glob("*.safetensors"):
        assert str(path) in lines[0] or path.name == "best.safetensors"
        tensors = load_file(path)
        assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point()), path


def test_divergence_after_an_epoch_keeps_the_last_finite_checkpoint(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The loss turns NaN in epoch 2 (here by a loss that breaks on cue): epoch 1's checkpoint is named and kept."""
    from fastunet_core.train.loss import JDTLoss

    cfg = _rv_config(tmp_path, _nan_ortho(tmp_path), epochs=3)
    original = JDTLoss.forward
    calls = {"n": 0}

    def breaks_in_epoch_2(self: JDTLoss, logits: torch.Tensor, *args: Any, **kw: Any) -> torch.Tensor:
        calls["n"] += 1
        loss = original(self, logits, *args, **kw)
        return loss * float("nan") if calls["n"] > 4 else loss  # epoch 1: 3 training + 1 validation batches

    monkeypatch.setattr(JDTLoss, "forward", breaks_in_epoch_2)
    r = CliRunner().invoke(cli, ["train", "-c", str(cfg)])
    assert r.exit_code == 1, r.output
    last = tmp_path / "run" / "last.safetensors"
    line = next(line for line in r.stderr.splitlines() if line.startswith("error:"))
    assert "training diverged at epoch 2, step 1 of 3: the training loss became non-finite" in line, line
    assert f"the last finite checkpoint, {last} (epoch 1), is kept" in line
    assert json.loads((tmp_path / "run" / "history.json").read_text())[-1]["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in load_file(last).values() if t.is_floating_point())


def test_all_ignored_training_data_is_refused(tmp_path: Path) -> None:
    """A raster that is all NaN: nothing to learn; not 'loss 0.0000, mIoU nan' with exit 0."""
    cfg = _rv_config(tmp_path, _nan_ortho(tmp_path, all_nan=True))
    r = CliRunner().invoke(cli, ["train", "-c", str(cfg)])
    assert r.exit_code == 1, r.output
    assert "every pixel of the training data is ignored" in r.stderr and "Traceback" not in r.stderr


def test_evaluate_refuses_a_split_without_labels(tmp_path: Path, make_checkpoint: Any) -> None:
    ckpt = make_checkpoint("test_pixel_colour", classes="dark,mid,bright", bands=(1,), dtype="float32", tile=32,
                           overlap=0)
    image = np.random.default_rng(3).random((1, 32, 32), dtype=np.float32)
    root = _pairs_folder(tmp_path / "pairs", [image], [np.full((32, 32), IGNORE_INDEX)])
    r = CliRunner().invoke(cli, ["evaluate", "-m", str(ckpt), "--data", str(root), "--split", "train",
                                 "--device", "cpu"])
    assert r.exit_code == 1 and "is ignored" in r.stderr, r.output


def _poisoned(source: Path, target: Path, scale: float | None = None, nan: bool = False) -> Path:
    """Copy a checkpoint, its weights scaled (overflowing but finite) or with one NaN, its metadata kept."""
    from safetensors import safe_open

    with safe_open(str(source), framework="pt") as f:
        metadata = f.metadata()
    tensors = load_file(source)
    name = next(k for k, v in tensors.items() if v.is_floating_point() and v.ndim > 1)
    if scale is not None:
        tensors = {k: v * scale if v.is_floating_point() else v for k, v in tensors.items()}
    if nan:
        tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, str(target), metadata=metadata)
    return target


def test_nan_weights_are_refused_naming_the_file(tmp_path: Path, make_checkpoint: Any) -> None:
    """Loading (predict, info-free paths) and init --weights refuse NaN weights, naming the file."""
    ckpt = make_checkpoint("unet_tiny", bands=(1, 2, 3), tile=64, overlap=0)
    bad = _poisoned(ckpt, tmp_path / "nan.safetensors", nan=True)
    raster = _write(tmp_path / "in.tif", np.random.default_rng(4).integers(0, 255, (3, 64, 64), dtype=np.uint8))
    r = CliRunner().invoke(cli, ["predict", str(raster), "-m", str(bad), "-o", str(tmp_path / "out.tif")])
    assert r.exit_code == 1 and str(bad) in r.stderr and "NaN" in r.stderr, r.output
    proc = subprocess.run([sys.executable, "-m", "fastunet_core.cli", "predict", str(raster), "-m", str(bad), "-o",
                           str(tmp_path / "out.tif")], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent)))
    assert proc.returncode == 1 and proc.stderr.count("NaN") == 1, proc.stderr  # said once, not also as a warning
    assert "1 tensor (e.g. " in proc.stderr and " holds NaN" in proc.stderr, proc.stderr
    assert not (tmp_path / "out.tif").exists()
    weights = tmp_path / "weights.safetensors"
    save_file({k: v for k, v in load_file(bad).items()}, str(weights))
    r = CliRunner().invoke(cli, ["init", "unet_tiny", "--classes", "background,building,water", "--weights",
                                 str(weights), "-o", str(tmp_path / "new.safetensors")])
    assert r.exit_code == 1 and str(weights) in r.stderr and "NaN" in r.stderr, r.output


def test_info_says_that_nan_weights_are_damaged(tmp_path: Path, make_checkpoint: Any) -> None:
    """info shows the metadata (where the model came from), then one error line and exit 1, like load does."""
    from safetensors import safe_open

    ckpt = make_checkpoint("unet_tiny", bands=(1, 2, 3), tile=64, overlap=0)
    r = CliRunner().invoke(cli, ["info", str(ckpt)])
    assert r.exit_code == 0 and "architecture : unet_tiny" in r.stdout and not r.stderr, r.output
    bad = _poisoned(ckpt, tmp_path / "nan.safetensors", nan=True)
    r = CliRunner().invoke(cli, ["info", str(bad)])
    assert r.exit_code == 1 and "architecture : unet_tiny" in r.stdout, r.output
    [line] = r.stderr.strip().splitlines()
    assert line.startswith(f"error: {bad}: 1 tensor (e.g. ") and "holds NaN or infinite values" in line
    assert "damaged" in line
    r = CliRunner().invoke(cli, ["info", "--json", str(bad)])
    assert r.exit_code == 1 and json.loads(r.stdout)["architecture"] == "unet_tiny"
    with safe_open(str(ckpt), framework="pt") as f:
        metadata = f.metadata()
    # half-precision weights too: +inf in a bfloat16 tensor and NaN in a float16 one; the largest finite values pass
    tensors = load_file(ckpt)
    names = sorted(k for k, v in tensors.items() if v.is_floating_point())
    tensors[names[0]] = torch.full((3,), torch.finfo(torch.bfloat16).max, dtype=torch.bfloat16)
    tensors[names[1]] = torch.full((3,), torch.finfo(torch.float16).max, dtype=torch.float16)
    tensors[names[2]] = torch.full((3,), torch.finfo(torch.float32).max)
    save_file(tensors, str(tmp_path / "half.safetensors"), metadata=metadata)
    assert CliRunner().invoke(cli, ["info", str(tmp_path / "half.safetensors")]).exit_code == 0
    tensors[names[0]][1] = float("inf")
    tensors[names[1]][2] = float("nan")
    save_file(tensors, str(tmp_path / "half_bad.safetensors"), metadata=metadata)
    r = CliRunner().invoke(cli, ["info", str(tmp_path / "half_bad.safetensors")])
    assert r.exit_code == 1 and "2 tensors (e.g. " in r.stderr and " hold NaN" in r.stderr, r.output


@pytest.mark.parametrize("engine", ["torch", "onnx"])
def test_predict_refuses_non_finite_model_outputs(tmp_path: Path, make_checkpoint: Any, engine: str) -> None:
    """Finite weights that overflow (x 5e36, below float32's 3.4e38): bright pixels' logits become inf, softmax NaN;
    predict errors naming the model (not at loading: every weight is finite)."""
    ckpt = make_checkpoint("test_pixel_colour", classes="dark,mid,bright", bands=(1, 2, 3), tile=32, overlap=0)
    huge = _poisoned(ckpt, tmp_path / "huge.safetensors", scale=5e36)
    assert all(torch.isfinite(t).all() for t in load_file(huge).values())
    raster = _write(tmp_path / "in.tif", np.random.default_rng(5).integers(0, 255, (3, 64, 64), dtype=np.uint8))
    r = CliRunner().invoke(cli, ["predict", str(raster), "-m", str(huge), "-o", str(tmp_path / "out.tif"),
                                 "--engine", engine, "--device", "cpu"])
    assert r.exit_code == 1, r.output
    assert str(huge) in r.stderr and "gives NaN or infinite outputs" in r.stderr, r.stderr
    assert not (tmp_path / "out.tif").exists()
