"""Predict and read datasets on the seeded awkward rasters and tiny layouts of tests/data/make_test_data.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner
from make_test_data import LANDCOVERAI_SHEETS, GeneratedRaster
from PIL import Image
from rasterio.windows import Window

from fastunet_core.cli import cli
from fastunet_core.errors import EmptyInputWarning
from fastunet_core.inference.predict import PredictOptions, predict_raster
from fastunet_core.models.checkpoint import load_checkpoint
from fastunet_core.models.metadata import OUTPUT_NODATA, InputSpec, ModelMeta, default_classes
from fastunet_core.train.datasets import IGNORE_INDEX, DatasetSpec, open_dataset
from fastunet_core.train.evaluate import data_section_for

READABLE = ["utm_nodata", "webmerc_mask", "alpha", "uint16_rgba", "float_nan"]


@pytest.mark.parametrize("name", READABLE)
def test_prediction_follows_the_pixels_and_the_written_validity(
        name: str, generated_rasters: dict[str, GeneratedRaster], make_checkpoint: Callable[..., Path],
        tmp_path: Path) -> None:
    raster = generated_rasters[name]
    ckpt = make_checkpoint(bands=raster.bands, dtype=raster.dtype, tile=64, overlap=8)
    out = tmp_path / "classes.tif"
    result = predict_raster(raster.path, ckpt, out, PredictOptions(device="cpu"))
    assert result.warnings == []
    loaded = load_checkpoint(ckpt)
    with rasterio.open(raster.path) as src, rasterio.open(out) as dst:
        assert (dst.crs, dst.transform, dst.shape) == (src.crs, src.transform, src.shape)
        x = np.nan_to_num(loaded.meta.input.normalise(src.read(list(raster.bands))))
        got = dst.read(1)
    with torch.no_grad():
        expected = loaded.model(torch.from_numpy(x)[None]).argmax(1)[0].numpy()
    assert np.array_equal(got == OUTPUT_NODATA, ~raster.valid)  # the validity the generator wrote
    assert np.array_equal(got[raster.valid], expected[raster.valid])
    shares = np.bincount(got[raster.valid], minlength=3) / raster.valid.sum()
    assert (shares > 0.1).all(), shares  # the map varies from place to place


@pytest.mark.parametrize(("name", "needles"), [("rotated", ("rotated", "gdalwarp")),
                                               ("gcp_only", ("GCPs only", "gdalwarp"))])
def test_unusable_georeferencing_is_one_line_and_exit_1(
        name: str, needles: tuple[str, ...], generated_rasters: dict[str, GeneratedRaster],
        make_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["predict", str(generated_rasters[name].path), "-m", str(make_checkpoint()),
                                 "-o", str(tmp_path / "o.tif")])
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    assert all(n in lines[0] for n in needles), lines[0]
    assert list(tmp_path.iterdir()) == []


def test_all_nodata_gives_all_nodata_and_a_warning(generated_rasters: dict[str, GeneratedRaster],
                                                   make_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    out = tmp_path / "classes.tif"
    with pytest.warns(EmptyInputWarning):
        result = predict_raster(generated_rasters["all_nodata"].path, make_checkpoint(tile=64, overlap=8), out)
    assert result.tiles_skipped == result.tiles_total > 1
    with rasterio.open(out) as dst:
        assert (dst.read(1) == OUTPUT_NODATA).all()


# -- tiny dataset layouts --

def _meta(names: list[str]) -> ModelMeta:
    return ModelMeta("test_pixel_colour", {}, InputSpec(bands=(1, 2, 3)), default_classes(names), tile_size_px=32)


def test_layouts_are_recognised_from_their_folders(generated_layouts: dict[str, Path]) -> None:
    meta = _meta(["background", "building", "water"])
    for kind, root in generated_layouts.items():
        assert data_section_for(root, meta)["kind"] == kind


def _read(path: Path, window: Window) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(window=window)


def test_landcoverai_tiles_follow_the_lists(generated_layouts: dict[str, Path]) -> None:
    root = generated_layouts["landcoverai"]
    train = open_dataset(DatasetSpec("landcoverai", root, tile_size=32), "train")
    assert len(train) == 3
    image, mask = train[2]  # k = 4: 4 steps per row (the incomplete 4th counted), so row 1, column 0
    sheet = f"{LANDCOVERAI_SHEETS[0]}.tif"
    window = Window(0, 32, 32, 32)
    np.testing.assert_array_equal(image, np.moveaxis(_read(root / "images" / sheet, window), 0, -1))
    np.testing.assert_array_equal(mask, _read(root / "masks" / sheet, window)[0])
    test = open_dataset(DatasetSpec("landcoverai", root, tile_size=32), "test")
    image, _ = test[0]  # k = 5: row 1, column 1 of the second sheet
    expected = _read(root / "images" / f"{LANDCOVERAI_SHEETS[1]}.tif", Window(32, 32, 32, 32))
    np.testing.assert_array_equal(image, np.moveaxis(expected, 0, -1))


def test_loveda_pieces_and_nodata_codes(generated_layouts: dict[str, Path]) -> None:
    root = generated_layouts["loveda"]
    train = open_dataset(DatasetSpec("loveda", root, tile_size=32), "train")
    val = open_dataset(DatasetSpec("loveda", root, tile_size=32), "val")
    assert (len(train), len(val)) == (12, 8)  # 3 and 2 images of 64 x 64, four 32 x 32 pieces each
    raw = np.array(Image.open(root / "Val" / "Urban" / "masks_png" / "4.png"))[:32, :32].astype(np.int64)
    image, mask = next((val[i] for i in range(len(val))
                        if np.array_equal(val[i][0], np.array(Image.open(
                            root / "Val" / "Urban" / "images_png" / "4.png"))[:32, :32])), (None, None))
    assert image is not None, "the top-left piece of Val/Urban/4.png is not in the split"
    assert (raw == 0).any() and (raw > 0).any()
    np.testing.assert_array_equal(mask, np.where(raw == 0, IGNORE_INDEX, raw - 1))


def test_folder_pairs_split_by_file(generated_layouts: dict[str, Path]) -> None:
    spec = DatasetSpec("folder", generated_layouts["folder"], tile_size=16, class_names=("a", "b", "c"),
                       val_fraction=0.25)
    train, val = open_dataset(spec, "train"), open_dataset(spec, "val")
    assert len(train) == 3 * len(val) > 0  # four 48 x 40 pairs, one of them for validation
    masks = np.concatenate([train[i][1].ravel() for i in range(len(train))])
    assert set(np.unique(masks)) == {0, 1, 2}
