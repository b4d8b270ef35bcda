"""A PyTorch engine built from a checkpoint file holds the model's weights once: in the form it runs them.

The bf16 path (``--precision auto`` on a trained model, on CPUs with native bf16) loads the checkpoint's
fp32 weights, folds BatchNorm and casts to bf16; the fp32 weights it started from must not stay in memory
beside the bf16 ones (unet_skinny: 80 MB, a tenth of issue #15's 0.8 GB budget).
"""

from __future__ import annotations

import dataclasses
import gc
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from fastunet_core.inference.precision import Bf16Plan, with_plan
from fastunet_core.models.checkpoint import load_checkpoint, save_checkpoint
from fastunet_core.models.model_init import InitRequest, init_checkpoint

# widths no other test's model has: every tensor of these shapes alive in the process is this model's
WIDTHS = [12, 20, 28]


def _checkpoint(tmp_path: Path) -> tuple[Path, str]:
    """A 3-band UNet of unusual widths whose recorded bf16 plan keeps its first layer in fp32; and that layer."""
    from fastunet_core.inference.optimize import weighted_layers

    path = init_checkpoint(InitRequest(architecture="unet", classes="3", tile_size_px=64, overlap_px=8,
                                       mean=(127.0,) * 3, std=(40.0,) * 3,  # inputs of about -3..3
                                       arch_args={"widths": WIDTHS, "convs": 1}), tmp_path / "m.safetensors")
    loaded = load_checkpoint(path)
    model = loaded.torch_model()
    torch.manual_seed(1)
    with torch.no_grad():  # BatchNorm statistics as after training, so folding them changes the weights
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)  # type: ignore[union-attr]
                m.running_var.uniform_(0.5, 2.0)  # type: ignore[union-attr]
    first = weighted_layers(model)[0]
    meta = with_plan(loaded.meta, Bf16Plan((first,), 1.0, 4, 0.999), "test")
    save_checkpoint(path, model, meta, overwrite=True)
    return path, first


def _float32_alive(shapes: set[tuple[int, ...]]) -> Counter[tuple[int, ...]]:
    """Count the float32 tensors of ``shapes`` that are alive in this process (any owner)."""
    gc.collect()
    found: Counter[tuple[int, ...]] = Counter()
    for obj in gc.get_objects():
        if issubclass(type(obj), torch.Tensor) and obj.dtype == torch.float32 and tuple(obj.shape) in shapes:
            found[tuple(obj.shape)] += 1
    return found


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_the_engine_keeps_no_fp32_copy_of_the_checkpoint_weights(tmp_path: Path, precision: str) -> None:
    """bf16: the only float32 weights alive are those of the plan's fp32 layer; fp32 (PyTorch engine): each
    folded weight once. The checkpoint's own fp32 weights are let go once the engine's are built."""
    from fastunet_core.inference.predict import PredictOptions, Predictor

    path, first = _checkpoint(tmp_path)
    predictor = Predictor(path, PredictOptions(precision=precision, engine="torch", device="cpu"))
    assert predictor.engine_name == {"bf16": "pytorch (bfloat16, 1 layer in fp32)", "fp32": "pytorch (float32)"}[
        precision]
    assert predictor.loaded.model is None  # the Predictor did not keep the model it loaded for its engine
    model = predictor.engine.model  # type: ignore[attr-defined]
    weights = {name: p for name, p in model.named_parameters() if p.dim() > 1}  # convolutions' kernels
    assert len({tuple(p.shape) for p in weights.values()}) >= 5, weights.keys()  # enough to tell them apart
    held = Counter(tuple(p.shape) for p in weights.values() if p.dtype == torch.float32)
    if precision == "bf16":
        assert {n for n, p in weights.items() if p.dtype == torch.float32} == {f"{first}.weight"}
        assert sum(p.dtype == torch.bfloat16 for p in weights.values()) == len(weights) - 1
    else:
        assert sum(held.values()) == len(weights)
    shapes = {tuple(p.shape) for p in weights.values()}
    assert _float32_alive(shapes) == held
    del predictor, model, weights
    assert _float32_alive(shapes) == Counter(), "weights were kept after their engine was gone"


def test_an_engine_built_in_place_gives_the_same_probabilities(tmp_path: Path) -> None:
    """The bf16 engine rewritten in place (checkpoint loaded for it alone) answers bit for bit as the one built
    from a copy of a model given in memory, which stays untouched."""
    from fastunet_core.inference.predict import PredictOptions, Predictor
    from fastunet_core.models.checkpoint_file import open_model

    path, _ = _checkpoint(tmp_path)
    given = load_checkpoint(path)
    before = {k: v.clone() for k, v in given.torch_model().state_dict().items()}
    opts = PredictOptions(precision="bf16", engine="torch", device="cpu")
    owned, copied = Predictor(open_model(path), opts), Predictor(dataclasses.replace(given), opts)
    assert copied.loaded.model is given.model  # given in memory: kept, and not rewritten
    after = given.torch_model().state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    x = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)
    a, b = owned.engine(x), copied.engine(x)
    assert np.array_equal(a, b)
    assert len(np.unique(a.argmax(1))) > 1  # a map that varies: the comparison can fail
    raster, maps = _raster(tmp_path / "in.tif"), []
    for name, predictor in (("owned", owned), ("copied", copied)):
        predictor.run(raster, tmp_path / f"{name}.tif")
        with rasterio.open(tmp_path / f"{name}.tif") as ds:
            maps.append(ds.read(1))
    assert np.array_equal(maps[0], maps[1]) and len(np.unique(maps[0])) > 1
    assert owned.loaded.model is None  # resuming's fingerprint read the weights' digest from the file


def _raster(path: Path) -> Path:
    """A small 3-band uint8 GeoTIFF of varied pixels."""
    from rasterio.transform import Affine

    data = np.random.default_rng(3).integers(0, 256, size=(3, 150, 130), dtype=np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=130, height=150, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=Affine(0.5, 0, 500_000.0, 0, -0.5, 5_800_000.0)) as dst:
        dst.write(data)
    return path
