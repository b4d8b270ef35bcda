"""The tests' stand-in model gives maps that vary from place to place on every raster the tests use."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from fastunet_core.inference.predict import PredictOptions, predict_raster
from fastunet_core.models import build_model
from fastunet_core.models.checkpoint import load_checkpoint

RASTERS = ["rasterio-testdata/RGB.byte.tif", "rasterio-testdata/cogeo.tif", "rasterio-testdata/rgb1.tif",
           "rasterio-testdata/rgb3.tif", "deepness-testdata/dummy_fotomap_small.tif"]


def _shares(path: Path, n_classes: int) -> np.ndarray:
    with rasterio.open(path) as src:
        classes, nodata = src.read(1), src.nodata
    valid = classes[classes != nodata]
    return np.bincount(valid.ravel(), minlength=n_classes)[:n_classes] / valid.size


@pytest.mark.parametrize("name", RASTERS)
def test_every_class_covers_a_real_share(name: str, shared_data: Path, tmp_path: Path,
                                         make_checkpoint: Callable[..., Path]) -> None:
    out = tmp_path / "classes.tif"
    predict_raster(shared_data / name, make_checkpoint(), out)
    shares = _shares(out, 3)
    assert (shares >= 0.05).all(), f"{name}: class shares {shares.round(3)}"


def test_plugin_tests_raster_and_model(small_raster: Path, qgis_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "classes.tif"
    predict_raster(small_raster, qgis_model, out)
    shares = _shares(out, 3)
    assert (shares >= 0.05).all(), f"class shares {shares.round(3)}"


def test_classes_follow_brightness_and_the_checkpoint_keeps_them(make_checkpoint: Callable[..., Path]) -> None:
    grey = torch.tensor([0.0, 0.3, 1.0]).reshape(1, 1, 1, 3).expand(1, 3, 1, 3)
    fresh = build_model("test_pixel_colour", 3, 3).eval()
    loaded = load_checkpoint(make_checkpoint()).model
    with torch.no_grad():
        assert fresh(grey).argmax(1).flatten().tolist() == [0, 1, 2]
        assert torch.equal(fresh(grey), loaded(grey))


@pytest.mark.parametrize(("name", "tile", "overlap", "engine"), [("rasterio-testdata/cogeo.tif", 128, 16, "onnx"),
                                                                 ("rasterio-testdata/RGB.byte.tif", 96, 20, "torch")])
def test_tiled_prediction_equals_the_model_on_the_whole_image(name: str, tile: int, overlap: int, engine: str,
                                                                shared_data: Path, tmp_path: Path,
                                                                make_checkpoint: Callable[..., Path]) -> None:
    """A per-pixel model gives the same class wherever a pixel falls in a tile: any misplaced tile shows."""
    ckpt = make_checkpoint(tile=tile, overlap=overlap)
    out = tmp_path / "classes.tif"
    predict_raster(shared_data / name, ckpt, out, PredictOptions(engine=engine))
    loaded = load_checkpoint(ckpt)
    with rasterio.open(shared_data / name) as src:
        x = loaded.meta.input.normalise(src.read([1, 2, 3]))
        valid = src.dataset_mask() > 0
    with torch.no_grad():
        expected = loaded.model(torch.from_numpy(x)[None]).argmax(1)[0].numpy()
    with rasterio.open(out) as dst:
        got, nodata = dst.read(1), dst.nodata
    assert np.array_equal(got == nodata, ~valid)
    assert np.array_equal(got[valid], expected[valid])
    assert len(np.unique(expected[valid])) == 3
