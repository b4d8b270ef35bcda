"""Seeded generator of the tests' small awkward rasters and tiny dataset layouts (torchgeo's data.py style).

Nothing here is committed as a binary: :func:`bad_rasters` and :func:`tiny_layouts` write the files into a
folder (the session fixtures in tests/conftest.py call them once per test session; a few hundred KB in all).
Run ``python tests/data/make_test_data.py FOLDER`` to look at them with GDAL or QGIS.

Every image is a "scene" of 8 x 8 pixel blocks of random grey levels (uniform over the range) plus a little
per-band noise, so the stand-in model ``test_pixel_colour`` gives each of its three classes a real share. Each
raster comes with the validity it was written with (``GeneratedRaster.valid``), so tests compare the
predicted nodata with what the generator made, not with what GDAL reports.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from PIL import Image
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning

SEED = 20261130
HEIGHT, WIDTH = 150, 170  # not multiples of any tile size the tests use: edge tiles are partial
UTM = CRS.from_epsg(32633)
WEB_MERCATOR = CRS.from_epsg(3857)
UTM_ORIGIN = Affine(0.5, 0.0, 500_000.0, 0.0, -0.5, 5_600_000.0)  # 0.5 m pixels
MERC_ORIGIN = Affine(0.6, 0.0, 1_900_000.0, 0.0, -0.6, 6_500_000.0)


@dataclass(frozen=True)
class GeneratedRaster:
    """A generated file and the (H, W) bool validity it was written with."""

    path: Path
    valid: np.ndarray
    bands: tuple[int, ...]  # the image bands a model should read (alpha left out)
    dtype: str


def scene(rng: np.random.Generator, height: int = HEIGHT, width: int = WIDTH, bands: int = 3,
          block: int = 8) -> np.ndarray:
    """Return a (bands, H, W) float64 image in [0, 1]: blocks of random grey plus per-band noise."""
    grey = rng.uniform(0.0, 1.0, size=(-(-height // block), -(-width // block)))
    grey = np.kron(grey, np.ones((block, block)))[:height, :width]
    noise = rng.normal(0.0, 0.02, size=(bands, height, width))
    return np.clip(grey[None] + noise, 0.0, 1.0)


def _corner_hole(height: int, width: int) -> np.ndarray:
    """Validity with an irregular invalid region: the top-left triangle and a rectangle."""
    yy, xx = np.mgrid[:height, :width]
    valid = (yy + xx) > 40
    valid[90:120, 100:150] = False
    return valid


def _write(path: Path, data: np.ndarray, **profile: object) -> None:
    base = {"driver": "GTiff", "height": data.shape[1], "width": data.shape[2], "count": data.shape[0],
            "dtype": data.dtype.name}
    with rasterio.open(path, "w", **{**base, **profile}) as dst:
        dst.write(data)


def _rgba(path: Path, image: np.ndarray, valid: np.ndarray, dtype: str) -> GeneratedRaster:
    """Write ``image`` (bands, H, W in [0, 1]) scaled to ``dtype``'s range, with ``valid`` as its alpha band."""
    top = np.iinfo(dtype).max
    data = np.concatenate([image * top, valid[None] * top]).round().astype(dtype)
    _write(path, data, crs=UTM, transform=UTM_ORIGIN, photometric="RGB")
    with rasterio.open(path, "r+") as dst:
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    return GeneratedRaster(path, valid, (1, 2, 3), dtype)


def bad_rasters(folder: Path, seed: int = SEED) -> dict[str, GeneratedRaster]:
    """Write the awkward rasters into ``folder`` and return them by name."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out: dict[str, GeneratedRaster] = {}
    rgb = (1, 2, 3)

    # UTM, uint8, nodata value 0 (valid pixels are 1..255 so the nodata value marks exactly the hole)
    valid = _corner_hole(HEIGHT, WIDTH)
    img = (1 + scene(rng) * 254).round().astype(np.uint8)
    img[:, ~valid] = 0
    out["utm_nodata"] = GeneratedRaster(folder / "utm_nodata.tif", valid, rgb, "uint8")
    _write(out["utm_nodata"].path, img, crs=UTM, transform=UTM_ORIGIN, nodata=0)

    # Web Mercator, uint8, internal mask (GDAL_TIFF_INTERNAL_MASK), no nodata value: masked pixels keep colour
    valid = _corner_hole(HEIGHT, WIDTH)[::-1].copy()
    img = (scene(rng) * 255).round().astype(np.uint8)
    path = folder / "webmerc_mask.tif"
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(
            path, "w", driver="GTiff", height=HEIGHT, width=WIDTH, count=3, dtype="uint8", crs=WEB_MERCATOR,
            transform=MERC_ORIGIN, tiled=True, blockxsize=64, blockysize=64) as dst:
        dst.write(img)
        dst.write_mask(valid.astype(np.uint8) * 255)
    out["webmerc_mask"] = GeneratedRaster(path, valid, rgb, "uint8")

    # RGBA uint8: transparency in an alpha band; uint16 RGBA: 16-bit sensor counts over the full range
    out["alpha"] = _rgba(folder / "alpha.tif", scene(rng), _corner_hole(HEIGHT, WIDTH)[:, ::-1].copy(), "uint8")
    out["uint16_rgba"] = _rgba(folder / "uint16_rgba.tif", scene(rng),
                               _corner_hole(HEIGHT, WIDTH)[::-1, ::-1].copy(), "uint16")

    # float32 reflectance in [0, 1] with NaN where there is no data (no nodata value set)
    valid = _corner_hole(HEIGHT, WIDTH)
    img = scene(rng).astype(np.float32)
    img[:, ~valid] = np.nan
    out["float_nan"] = GeneratedRaster(folder / "float_nan.tif", valid, rgb, "float32")
    _write(out["float_nan"].path, img, crs=UTM, transform=UTM_ORIGIN)

    # rotated geotransform (a north-up output grid cannot hold it)
    img = (scene(rng) * 255).round().astype(np.uint8)
    rotated = Affine(0.5, 0.1, 500_000.0, 0.1, -0.5, 5_600_000.0)
    out["rotated"] = GeneratedRaster(folder / "rotated.tif", np.ones((HEIGHT, WIDTH), bool), rgb, "uint8")
    _write(out["rotated"].path, img, crs=UTM, transform=rotated)

    # ground control points only, no geotransform (needs gdalwarp first)
    img = (scene(rng) * 255).round().astype(np.uint8)
    gcps = [GroundControlPoint(row, col, 500_000.0 + col * 0.5, 5_600_000.0 - row * 0.5)
            for row, col in ((0, 0), (0, WIDTH), (HEIGHT, 0), (HEIGHT, WIDTH))]
    path = folder / "gcp_only.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # true until the GCPs are set
        _write(path, img)
        with rasterio.open(path, "r+") as dst:
            dst.gcps = (gcps, UTM)
    out["gcp_only"] = GeneratedRaster(path, np.ones((HEIGHT, WIDTH), bool), rgb, "uint8")

    # every pixel is nodata
    img = np.full((3, HEIGHT, WIDTH), 7, np.uint8)
    out["all_nodata"] = GeneratedRaster(folder / "all_nodata.tif", np.zeros((HEIGHT, WIDTH), bool), rgb, "uint8")
    _write(out["all_nodata"].path, img, crs=UTM, transform=UTM_ORIGIN, nodata=7)
    return out


# -- tiny dataset layouts --

LANDCOVERAI_SHEETS = ("M-00-00-A-a-1-1", "M-00-00-A-a-1-2")
LOVEDA_IDS = {("Train", "Urban"): ("1", "2"), ("Train", "Rural"): ("3",), ("Val", "Urban"): ("4",),
              ("Val", "Rural"): ("5",), ("Test", "Urban"): ("6",)}
FOLDER_NAMES = ("a", "b", "c", "d")


def _mask(rng: np.random.Generator, height: int, width: int, n_classes: int, block: int = 8) -> np.ndarray:
    codes = rng.integers(0, n_classes, size=(-(-height // block), -(-width // block)))
    return np.kron(codes, np.ones((block, block), np.int64))[:height, :width].astype(np.uint8)


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def tiny_layouts(folder: Path, seed: int = SEED) -> dict[str, Path]:
    """Write tiny LandCover.ai, LoveDA and image/mask folder layouts under ``folder``; return their roots.

    LandCover.ai: two 100 x 70 sheets cut by a tile size of 32 (4 x 3 steps, 3 x 2 complete tiles each);
    the lists name tiles k = 0, 1, 4 of the first sheet (train), k = 0 (val) and k = 5 (test) of the second.
    LoveDA: 64 x 64 PNGs (masks 0..7), Train/Val with masks, Test without. Folder: four 48 x 40 PNG pairs.
    """
    rng = np.random.default_rng(seed + 1)
    roots = {name: folder / name for name in ("landcoverai", "loveda", "folder")}

    lc = roots["landcoverai"]
    for sheet in LANDCOVERAI_SHEETS:
        img = (scene(rng, 70, 100) * 255).round().astype(np.uint8)
        for sub, data in (("images", img), ("masks", _mask(rng, 70, 100, 5)[None])):
            (lc / sub).mkdir(parents=True, exist_ok=True)
            _write(lc / sub / f"{sheet}.tif", data, crs=UTM, transform=Affine(0.25, 0, 500_000, 0, -0.25, 5e6))
    (lc / "train.txt").write_text("".join(f"{LANDCOVERAI_SHEETS[0]}_{k}\n" for k in (0, 1, 4)))
    (lc / "val.txt").write_text(f"{LANDCOVERAI_SHEETS[1]}_0\n")
    (lc / "test.txt").write_text(f"{LANDCOVERAI_SHEETS[1]}_5\n")

    lv = roots["loveda"]
    for (split, area), ids in LOVEDA_IDS.items():
        for name in ids:
            img = (scene(rng, 64, 64) * 255).round().astype(np.uint8)
            _png(lv / split / area / "images_png" / f"{name}.png", np.moveaxis(img, 0, -1))
            if split != "Test":
                _png(lv / split / area / "masks_png" / f"{name}.png", _mask(rng, 64, 64, 8))

    fo = roots["folder"]
    for name in FOLDER_NAMES:
        img = (scene(rng, 40, 48) * 255).round().astype(np.uint8)
        _png(fo / "images" / f"{name}.png", np.moveaxis(img, 0, -1))
        _png(fo / "masks" / f"{name}.png", _mask(rng, 40, 48, 3))
    return roots


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "generated-test-data")
    for item in bad_rasters(target / "rasters").values():
        print(item.path)
    for root in tiny_layouts(target / "layouts").values():
        print(root)
