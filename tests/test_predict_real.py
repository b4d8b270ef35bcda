"""Predict on real rasters: georeferencing kept, nodata exactly where the input has none."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from fastunet_core.errors import DtypeMismatchWarning, EmptyInputWarning, ResolutionMismatchWarning
from fastunet_core.inference.predict import PredictOptions, predict_raster
from fastunet_core.models.checkpoint import load_checkpoint
from fastunet_core.models.metadata import OUTPUT_NODATA

CASES = {
    # file: (checkpoint bands, dtype)
    "RGB.byte.tif": ((1, 2, 3), "uint8"),  # nodata value 0
    "rgb_lzw.tif": ((1, 2, 3), "uint8"),  # tiled, LZW
    "cogeo.tif": ((1, 2, 3), "uint8"),  # 0.6 m aerial, internal mask, JPEG
    "alpha.tif": ((1, 2, 3), "uint8"),  # alpha band
    "RGBA.uint16.tif": ((3, 2, 1), "uint16"),  # 16-bit, B,G,R,alpha
    "world.rgb.tif": ((1, 2, 3), "uint8"),  # EPSG:4326
    "RGB2.byte.tif": ((1, 2, 3), "uint8"),  # external .msk
}


@pytest.mark.parametrize("name", list(CASES))
def test_output_on_input_grid_with_nodata_where_input_has_none(
    tmp_path: Path, rio_data: Path, make_checkpoint: Callable[..., Path], name: str
) -> None:
    bands, dtype = CASES[name]
    ckpt = make_checkpoint(bands=bands, dtype=dtype, tile=128, overlap=16)
    out = tmp_path / "classes.tif"
    result = predict_raster(rio_data / name, ckpt, out, PredictOptions(batch_size=8, device="cpu"))
    assert result.warnings == []
    loaded = load_checkpoint(ckpt)
    with rasterio.open(rio_data / name) as src, rasterio.open(out) as dst:
        assert dst.crs == src.crs
        assert dst.transform == src.transform
        assert (dst.width, dst.height) == (src.width, src.height)
        assert dst.dtypes[0] == "uint8" and dst.nodata == OUTPUT_NODATA
        by, bx = dst.block_shapes[0]
        assert by == bx and bx % 16 == 0 and dst.compression is not None  # tiled and compressed
        classes = dst.read(1)
        in_valid = src.dataset_mask() > 0
        assert in_valid.sum() > 0, "fixture should hold data"
        assert np.array_equal(classes == OUTPUT_NODATA, ~in_valid)
        x = np.nan_to_num(loaded.meta.input.normalise(src.read(list(bands))))
    with torch.no_grad():  # the stand-in model is per pixel: tiling must not change a single class
        expected = loaded.torch_model()(torch.from_numpy(x)[None]).argmax(1)[0].numpy()
    assert np.array_equal(classes[in_valid], expected[in_valid])
    with rasterio.open(out) as dst:
        cmap = dst.colormap(1)
        assert cmap[1][:3] == (60, 180, 75)  # default colour of class 1


def test_all_nodata_gives_all_nodata_output_and_a_warning(
    tmp_path: Path, rio_data: Path, make_checkpoint: Callable[..., Path]
) -> None:
    ckpt = make_checkpoint(bands=(1, 2, 3, 4), dtype="uint16", tile=128, overlap=16)
    out = tmp_path / "empty.tif"
    with pytest.warns(EmptyInputWarning):
        result = predict_raster(rio_data / "all-nodata.tif", ckpt, out)
    assert result.tiles_skipped == result.tiles_total
    assert any("no valid pixel" in w for w in result.warnings)
    with rasterio.open(out) as dst:
        assert (dst.read(1) == OUTPUT_NODATA).all()


def test_nan_pixels_of_a_float_raster_are_nodata(tmp_path: Path, rio_data: Path,
                                                 make_checkpoint: Callable[..., Path]) -> None:
    ckpt = make_checkpoint(bands=(1,), dtype="float32", tile=32, overlap=4)
    out = tmp_path / "f.tif"
    # rasterio's float_nan.tif has a geotransform but no CRS: allowed here, the NaN pixels are what is tested
    predict_raster(rio_data / "float_nan.tif", ckpt, out, PredictOptions(allow_no_crs=True))
    with rasterio.open(rio_data / "float_nan.tif") as src, rasterio.open(out) as dst:
        assert np.array_equal(dst.read(1) == OUTPUT_NODATA, ~np.isfinite(src.read(1)) | (src.dataset_mask() == 0))


def test_dtype_mismatch_warns(tmp_path: Path, rio_data: Path, make_checkpoint: Callable[..., Path]) -> None:
    ckpt = make_checkpoint(tile=128, overlap=16)  # uint8 model
    with pytest.warns(DtypeMismatchWarning) as caught:  # a class of its own: callers filter by class, not text
        result = predict_raster(rio_data / "RGBA.uint16.tif", ckpt, tmp_path / "o.tif")
    assert [str(w.message) for w in caught if w.category is DtypeMismatchWarning] == [
        w for w in result.warnings if "uint16" in w and "uint8" in w]


def test_ground_resolution_in_metres(rio_data: Path) -> None:
    from pyproj import Geod

    from fastunet_core.io.raster_input import ground_resolution_m, open_raster

    with open_raster(rio_data / "RGB.byte.tif") as src:  # UTM, 300 m pixels (less 0.04 %: UTM's scale)
        assert ground_resolution_m(src) == pytest.approx(300.0, rel=1e-3)
    with open_raster(rio_data / "cogeo.tif") as src:  # Web Mercator's nominal 0.597 m shrink by cos(latitude)
        lon, lat = src.lnglat()
        assert ground_resolution_m(src) == pytest.approx(src.res[0] * np.cos(np.radians(lat)), rel=2e-3)
    with open_raster(rio_data / "world.rgb.tif") as src:  # degrees: metres on the ellipsoid
        lon, lat = src.lnglat()
        dx = Geod(ellps="WGS84").inv(lon, lat, lon + src.res[0], lat)[2]
        dy = Geod(ellps="WGS84").inv(lon, lat, lon, lat + src.res[1])[2]
        assert ground_resolution_m(src) == pytest.approx((dx + dy) / 2, rel=1e-2)


@pytest.mark.parametrize(("model_m", "warned"), [(0.5, True), (300.0, False), (None, False)])
def test_resolution_mismatch_warns(tmp_path: Path, rio_data: Path, make_checkpoint: Callable[..., Path],
                                   model_m: float | None, warned: bool) -> None:
    ckpt = make_checkpoint(tile=128, overlap=16, resolution_m=model_m)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = predict_raster(rio_data / "RGB.byte.tif", ckpt, tmp_path / "o.tif")
    found = [str(w.message) for w in caught if w.category is ResolutionMismatchWarning]
    assert found == [w for w in result.warnings if "trained on" in w and "m pixels" in w]
    assert bool(found) is warned, result.warnings
    if warned:
        assert "coarser" in found[0] and "Resample" in found[0]


def test_existing_output_is_kept_without_overwrite(tmp_path: Path, rio_data: Path,
                                                   make_checkpoint: Callable[..., Path]) -> None:
    from fastunet_core.errors import OutputExistsError

    out = tmp_path / "o.tif"
    out.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match=r"exists$"):  # neutral: each caller adds its hint
        predict_raster(rio_data / "RGB.byte.tif", make_checkpoint(), out)
    assert out.read_bytes() == b"precious"
    predict_raster(rio_data / "RGB.byte.tif", make_checkpoint(), out, PredictOptions(overwrite=True))
    with rasterio.open(out) as dst:
        assert dst.width == 791
