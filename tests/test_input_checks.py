"""Inputs that used to give garbage without a word: an alpha-tagged band chosen as data, complex pixels,
values far outside the model's scaling. Expected class maps come from the stand-in model run directly."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin

from fastunet_core.cli import cli
from fastunet_core.errors import DatasetLayoutError, FastUNetWarning, InputRangeWarning, InputRasterError
from fastunet_core.inference.predict import predict_raster
from fastunet_core.models.checkpoint import load_checkpoint
from fastunet_core.train.datasets import DatasetSpec, open_dataset


def _write(path: Path, data: np.ndarray, colorinterp: list[ColorInterp] | None = None, **profile: Any) -> Path:
    bands, h, w = data.shape
    base = {"driver": "GTiff", "width": w, "height": h, "count": bands, "dtype": data.dtype.name,
            "crs": "EPSG:32633", "transform": from_origin(500000.0, 6000000.0, 0.5, 0.5)}
    with rasterio.open(path, "w", **{**base, **profile}) as dst:
        dst.write(data)
        if colorinterp:
            dst.colorinterp = colorinterp
    return path


def _expected(ckpt: Path, raw: np.ndarray) -> np.ndarray:
    """The stand-in model's class ids on the whole image at once (no tiling, no nodata handling)."""
    loaded = load_checkpoint(ckpt)
    with torch.no_grad():
        channels = loaded.model(torch.from_numpy(loaded.meta.input.normalise(raw))[None]).argmax(1)[0].numpy()
    return loaded.meta.class_ids[channels]


def _rgbn_tagged_alpha(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """R,G,B,NIR uint8 whose 4th band GDAL reports as alpha (as some NAIP files); NIR is 0 on 800 pixels."""
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (4, 64, 80), dtype=np.uint8)
    data[3] = np.maximum(data[3], 1)
    data[3, :10, :] = 0  # 10 rows x 80 = 800 pixels of dark NIR (water, shadow): data, not "no data"
    path = _write(tmp_path / "naip.tif", data, photometric="RGB", alpha="YES")
    with rasterio.open(path) as src:
        assert src.colorinterp[3] == ColorInterp.alpha and (src.dataset_mask() == 0).sum() == 800
    return path, data


def test_alpha_tagged_band_chosen_as_input_is_data(tmp_path: Path, make_checkpoint: Any) -> None:
    raster, data = _rgbn_tagged_alpha(tmp_path)
    ckpt = make_checkpoint(bands=(1, 2, 3, 4), tile=32, overlap=0)
    runner = CliRunner()
    r = runner.invoke(cli, ["predict", str(raster), "-m", str(ckpt), "-o", str(tmp_path / "a.tif")])
    assert r.exit_code == 1, r.output
    assert "band 4 is tagged alpha" in r.stderr and "--bands 1,2,3,4" in r.stderr, r.stderr
    assert "no longer marks any pixel as nodata" in r.stderr
    out = tmp_path / "b.tif"
    r = runner.invoke(cli, ["predict", str(raster), "-m", str(ckpt), "-o", str(out), "--bands", "1,2,3,4"])
    assert r.exit_code == 0, r.output
    assert "band 4 of naip.tif is tagged alpha but selected as model input" in r.stderr
    with rasterio.open(out) as dst:
        got, nodata = dst.read(1), dst.nodata
    expected = _expected(ckpt, data)
    assert len(np.unique(expected)) == 3
    assert not (got == nodata).any()  # the 800 dark-NIR pixels are classified, not nodata
    assert np.array_equal(got, expected)


def test_alpha_not_chosen_still_masks(tmp_path: Path, make_checkpoint: Any) -> None:
    """The same file with a 3-band model: band 4 stays the validity mask (800 nodata pixels)."""
    raster, data = _rgbn_tagged_alpha(tmp_path)
    ckpt = make_checkpoint(bands=(1, 2, 3), tile=32, overlap=0)
    out = tmp_path / "c.tif"
    predict_raster(raster, ckpt, out)
    with rasterio.open(out) as dst:
        got, nodata = dst.read(1), dst.nodata
    invalid = data[3] == 0
    assert np.array_equal(got == nodata, invalid)
    assert np.array_equal(got[~invalid], _expected(ckpt, data[:3])[~invalid])


def test_complex_input_is_refused_everywhere(tmp_path: Path, make_checkpoint: Any) -> None:
    values = (np.random.default_rng(1).random((1, 32, 32)) + 1j).astype(np.complex64)
    raster = _write(tmp_path / "slc.tif", values)
    r = CliRunner().invoke(cli, ["predict", str(raster), "-m", str(make_checkpoint(bands=(1,), dtype="float32",
                                                                                  tile=32, overlap=0)),
                                 "-o", str(tmp_path / "o.tif")])
    assert r.exit_code == 1 and "holds complex values (complex64)" in r.stderr and "AMPLITUDE" in r.stderr, r.output
    with pytest.raises(InputRasterError):
        predict_raster(raster, make_checkpoint(bands=(1,), dtype="float32", tile=32, overlap=0), tmp_path / "p.tif")
    folder = tmp_path / "pairs"
    (folder / "img_dir").mkdir(parents=True)
    (folder / "ann_dir").mkdir(parents=True)
    _write(folder / "img_dir" / "0.tif", values)
    _write(folder / "ann_dir" / "0.tif", np.ones((1, 32, 32), dtype=np.uint8))
    with pytest.raises(DatasetLayoutError, match="complex values"):
        open_dataset(DatasetSpec("folder", folder, tile_size=32, class_names=("a", "b"), val_fraction=0.0), "train")


def test_float64_is_read_like_float32(tmp_path: Path, make_checkpoint: Any) -> None:
    """No type warning between float64 and a float32 model; the same map as the float32 copy."""
    values = np.random.default_rng(2).random((1, 40, 48))
    ckpt = make_checkpoint(bands=(1,), dtype="float32", tile=32, overlap=0)
    r64 = _write(tmp_path / "f64.tif", values.astype(np.float64))
    r32 = _write(tmp_path / "f32.tif", values.astype(np.float32))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predict_raster(r64, ckpt, tmp_path / "o64.tif")
    assert not [w for w in caught if issubclass(w.category, FastUNetWarning)], [str(w.message) for w in caught]
    predict_raster(r32, ckpt, tmp_path / "o32.tif")
    with rasterio.open(tmp_path / "o64.tif") as a, rasterio.open(tmp_path / "o32.tif") as b:
        got = a.read(1)
        assert np.array_equal(got, b.read(1)) and len(np.unique(got)) == 3


@pytest.mark.parametrize(("dtype", "model_dtype", "low", "high"), [
    ("uint16", "uint8", 0, 2000),        # 12-bit data into a model scaled for 0..255
    ("float32", "float32", 0, 10000),    # reflectance x 10000 into a model scaled for 0..1
])
def test_values_far_outside_the_models_range_warn_with_the_share(tmp_path: Path, make_checkpoint: Any, dtype: str,
                                                                 model_dtype: str, low: int, high: int) -> None:
    rng = np.random.default_rng(3)
    values = rng.uniform(low, high, (3, 100, 120)).astype(dtype)
    values[:, :20] = rng.uniform(0, 1, (3, 20, 120)).astype(dtype)  # a dark strip inside either range
    ckpt = make_checkpoint(dtype=model_dtype, tile=32, overlap=0)
    hi = 255 if model_dtype == "uint8" else 1
    share = ((values < 0) | (values > hi)).any(axis=0).mean()  # the whole raster is sampled (< 256 px a side)
    assert 0.5 < share < 0.9
    with pytest.warns(InputRangeWarning) as record:
        result = predict_raster(_write(tmp_path / "in.tif", values), ckpt, tmp_path / "o.tif")
    message = str(next(w.message for w in record if w.category is InputRangeWarning))
    assert message.startswith(f"{100 * share:.0f} % of the valid pixels sampled from in.tif lie outside the value "
                              f"range 0..{hi}")
    assert message in result.warnings


def test_pixels_whose_type_fits_the_range_are_not_sampled(tmp_path: Path, make_checkpoint: Any,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """uint8 pixels into a 0..255 model cannot lie outside it: no sample windows are read (start-up time)."""
    from fastunet_core.inference import predict

    sampled: list[str] = []
    real = predict.sample_value_range

    def counted(reader: Any) -> Any:
        sampled.append(reader.src.dtypes[0])
        return real(reader)

    monkeypatch.setattr(predict, "sample_value_range", counted)
    values = np.random.default_rng(4).integers(0, 256, (3, 300, 300), dtype=np.uint8)
    ckpt = make_checkpoint(tile=32, overlap=0)
    predict_raster(_write(tmp_path / "u8.tif", values), ckpt, tmp_path / "o8.tif")
    assert sampled == []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # int16 into a uint8 model: its type warning is not the point here
        predict_raster(_write(tmp_path / "i16.tif", values.astype(np.int16)), ckpt, tmp_path / "o16.tif")
    assert sampled == ["int16"]  # a type that can hold values outside 0..255 is still sampled


def test_values_inside_the_range_do_not_warn(tmp_path: Path, make_checkpoint: Any) -> None:
    values = np.random.default_rng(4).integers(0, 256, (3, 300, 300), dtype=np.uint8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predict_raster(_write(tmp_path / "in.tif", values), make_checkpoint(tile=32, overlap=0), tmp_path / "o.tif")
    assert not [w for w in caught if issubclass(w.category, InputRangeWarning)]


def test_a_raster_with_fewer_bands_than_the_model_gets_a_fix_that_can_work(tmp_path: Path,
                                                                         make_checkpoint: Any) -> None:
    """A one-band raster for a three-band model: the suggested --bands lists only bands the raster has, and it runs."""
    raster = _write(tmp_path / "one_band.tif", np.random.default_rng(0).integers(0, 255, (1, 64, 64), dtype=np.uint8))
    ckpt = make_checkpoint(bands=(1, 2, 3), tile=32, overlap=0)
    r = CliRunner().invoke(cli, ["predict", str(raster), "-m", str(ckpt), "-o", str(tmp_path / "a.tif")])
    assert r.exit_code == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "has 1 band(s) but the model needs 3" in r.stderr and "--bands 1,1,1" in r.stderr, r.stderr
    r = CliRunner().invoke(cli, ["predict", str(raster), "-m", str(ckpt), "-o", str(tmp_path / "a.tif"),
                                 "--bands", "1,1,1"])
    assert r.exit_code == 0, r.stderr


class _Order:
    """A progress that records its calls in order."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def start(self, total: float, label: str) -> None:
        self.calls.append(f"start {label}")

    def advance(self, n: float = 1) -> None:
        self.calls.append("advance")

    def is_cancelled(self) -> bool:
        return False

    def message(self, text: str) -> None:
        self.calls.append(text)

    def status(self, text: str) -> None:
        """Ignore."""

    def device(self, text: str) -> None:
        """Ignore."""


def test_warnings_about_the_input_come_before_the_first_tile_and_once(tmp_path: Path, make_checkpoint: Any) -> None:
    """uint16 pixels into a uint8 model: told before the run, not after it (FINDINGS5 F6)."""
    values = np.random.default_rng(5).integers(0, 2000, (3, 100, 120)).astype(np.uint16)
    raster = _write(tmp_path / "in.tif", values)
    ckpt = make_checkpoint(tile=32, overlap=0)
    progress = _Order()
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        result = predict_raster(raster, ckpt, tmp_path / "o.tif", progress=progress)
    said = [c for c in progress.calls if c.startswith("warning: ")]
    assert len(said) == 2 and "in.tif is uint16 but the model was trained on uint8" in said[0], said
    assert "lie outside the value range 0..255" in said[1], said
    assert progress.calls.index(said[-1]) < progress.calls.index("start tiles"), progress.calls
    assert [f"warning: {w}" for w in result.warnings] == said and result.warnings_not_shown == []

    for flags in ([], ["-q"]):  # the CLI: each once, before the line that says what was written (also with -q)
        out = tmp_path / f"c{len(flags)}.tif"
        run = CliRunner().invoke(cli, [*flags, "predict", str(raster), "-m", str(ckpt), "-o", str(out)])
        assert run.exit_code == 0, run.output
        lines = run.output.splitlines()
        warned = [i for i, line in enumerate(lines) if line.startswith("warning: ")]
        assert len(warned) == 2, run.output
        if not flags:
            assert warned[-1] < next(i for i, line in enumerate(lines) if line.startswith("wrote ")), run.output
