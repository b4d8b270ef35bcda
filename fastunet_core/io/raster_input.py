"""Open and check the input raster, and read tiles from it (windowed reads, normalised, with validity).

Validity comes from GDAL's dataset mask, which covers a nodata value, an internal or external (.msk) mask
and an alpha band; for float rasters non-finite values are invalid too. A band tagged alpha that the user
selects as model input (a NIR band mislabelled alpha, as in some NAIP files) is data, not validity: it is
fed to the model and masks no pixel; validity then comes from the other selected bands' own masks.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from fastunet_core.errors import InputRasterError
from fastunet_core.hints import hint, setting, shell_path
from fastunet_core.io.sources import network_options, raster_source, unreachable_reason, url_in
from fastunet_core.models.metadata import InputSpec


@dataclass(frozen=True)
class RasterInfo:
    """What the pipeline needs to know about an input raster."""

    path: Path
    width: int
    height: int
    count: int
    dtype: str
    crs_wkt: str | None
    data_bands: tuple[int, ...]  # bands that are not alpha
    resolution_m: float | None = None  # ground size of a pixel (the mean of its two sides), when known

    @property
    def alpha_bands(self) -> tuple[int, ...]:
        """The 1-based bands GDAL reports as alpha (validity masks)."""
        return tuple(b for b in range(1, self.count + 1) if b not in self.data_bands)


GDAL_CACHE_BYTES = 64 * 2**20  # GDAL's block cache while predicting or vectorising (its default: 5 % of RAM)
READ_CACHE_MIN = 8 * 2**20  # the least block cache while tiles are read (a tiled source needs about 4 MiB)


def bounded_gdal_cache() -> contextlib.AbstractContextManager[object]:
    """GDAL's block cache capped at :data:`GDAL_CACHE_BYTES`, unless the user set GDAL_CACHEMAX.

    Our reads go row by row, each block once or twice, so a bigger cache only grows with the raster.
    """
    if "GDAL_CACHEMAX" in os.environ:
        return contextlib.nullcontext()
    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES)


def tile_read_cache(src: rasterio.io.DatasetReader, window_px: int) -> contextlib.AbstractContextManager[object]:
    """GDAL's block cache while tiles of ``window_px`` are read from ``src``: :func:`read_cache_bytes`.

    Unless the user set GDAL_CACHEMAX. GDAL's cache size is global to the process, so the reader thread
    runs under it too.
    """
    if "GDAL_CACHEMAX" in os.environ:
        return contextlib.nullcontext()
    return rasterio.Env(GDAL_CACHEMAX=read_cache_bytes(src, window_px))


def read_cache_bytes(src: rasterio.io.DatasetReader, window_px: int) -> int:
    """Return a block cache size that holds the source blocks of two neighbouring tile windows.

    Tiles go row by row, left to right, and neighbours share the blocks of their overlap: what a cache
    gains is that column of blocks (a tile row that reuses the block row above it would need a whole row
    of blocks, which grows with the raster's width; measured: no faster at 16384 px wide than 8 MiB).
    A tiled source needs a few MiB (512 px blocks: 2 x 3 blocks); a striped one holds every strip of the
    tile row, up to :data:`GDAL_CACHE_BYTES`. The output's finished blocks pass through the same cache and
    are written out when it is full.
    """
    bh, bw = src.block_shapes[0]
    rows = min(src.height, (-(-window_px // bh) + 1) * bh)
    cols = min(src.width, (-(-window_px // bw) + 2) * bw)
    itemsize = max(np.dtype(t).itemsize for t in src.dtypes)
    needed = rows * cols * (src.count + 1) * itemsize  # + 1: an internal mask band
    return int(min(GDAL_CACHE_BYTES, max(READ_CACHE_MIN, needed)))


def open_raster(path: str | os.PathLike[str]) -> rasterio.io.DatasetReader:
    """Open a raster for reading, turning GDAL's errors into one readable line.

    GDAL virtual paths and URLs (``/vsizip//abs/pack.zip/inner.tif``, ``https://...``) go to GDAL exactly
    as given (see :mod:`fastunet_core.io.sources`); a URL that cannot be reached fails within seconds.
    """
    p = raster_source(path)
    if isinstance(p, Path) and not p.exists():
        raise InputRasterError(f"input raster not found: {p}")
    env = network_options() if url_in(p) else {}
    try:
        with warnings.catch_warnings(), rasterio.Env(**env):
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(os.fspath(p))
    except RasterioIOError as exc:
        reason = unreachable_reason(p, _first_line(exc))
        if reason is not None:
            raise InputRasterError(f"{p}: {reason}") from exc
        inside = archive_hint(p) if isinstance(p, Path) else None
        if inside is not None:
            raise InputRasterError(f"{p} is {inside}") from exc
        raise InputRasterError(f"{p} is not a raster GDAL can read ({_first_line(exc)})") from exc


ARCHIVES = {".zip": "/vsizip/", ".tar": "/vsitar/", ".tgz": "/vsitar/", ".gz": "/vsitar/"}  # .gz: .tar.gz


def archive_hint(path: Path, limit: int = 3) -> str | None:
    """Say how to read the rasters inside the archive ``path`` (zip, tar), or None when it is not one.

    GDAL reads a file inside an archive through a virtual path, ``/vsizip/pack.zip/inner.tif``; the archive's
    members are listed with GDAL's virtual file system, and those GDAL opens as rasters are named.
    """
    prefix = ARCHIVES.get(path.suffix.lower())
    if prefix is None or (path.suffix.lower() == ".gz" and not path.name.lower().endswith(".tar.gz")):
        return None
    import pyogrio

    root = f"{prefix}{path.resolve()}"
    try:
        members = [m for m in pyogrio.vsi_listtree(root) if not m.endswith("/")]
    except NotADirectoryError:  # an archive of one file: GDAL reads it as that file
        members = [root]
    except Exception:  # not an archive GDAL can list (damaged, or only named so)
        return None
    kind = "a zip archive" if prefix == "/vsizip/" else "a tar archive"
    found = []
    for member in members[:50]:
        try:
            with rasterio.open(member):
                found.append(f"{prefix}{path}" + (member[len(root):] if member != root else ""))
        except RasterioIOError:
            continue
        if len(found) == limit:
            break
    if not found:
        return f"{kind}, and GDAL reads no raster inside it ({len(members)} file(s))"
    return f"{kind}: give the raster inside it as {' or '.join(found)}"


def inspect_raster(src: rasterio.io.DatasetReader) -> RasterInfo:
    """Check that ``src`` can be segmented onto a map, and describe it."""
    name = Path(src.name)
    t = src.transform
    if t.b != 0 or t.d != 0:
        raise InputRasterError(
            f"{name} has a rotated or sheared geotransform; warp it north-up first "
            f"(e.g. gdalwarp {shell_path(name)} {shell_path(name.with_name(f'{name.stem}_northup.tif'))})"
        )
    check_placed(src)
    if len(set(src.dtypes)) != 1:
        raise InputRasterError(f"{name} mixes band data types {sorted(set(src.dtypes))}; convert it to one type")
    check_real(name, src.dtypes[0])
    data_bands = tuple(i for i, ci in enumerate(src.colorinterp, start=1) if ci != ColorInterp.alpha)
    return RasterInfo(name, src.width, src.height, src.count, src.dtypes[0],
                      src.crs.to_wkt() if src.crs else None, data_bands, ground_resolution_m(src))


def check_placed(src: rasterio.io.DatasetReader) -> None:
    """Refuse a raster whose pixels have no place on a map: no georeferencing, a CRS but no geotransform, GCPs only.

    GDAL gives a raster without a geotransform the identity (one unit per pixel from the origin); read as
    real, results would sit at the CRS's origin with 1 m pixels (wrong place, wrong areas). ``predict`` and
    ``vectorize`` both refuse by this one rule.
    """
    name = Path(src.name)
    t = src.transform
    if src.crs is None and t.is_identity and not src.gcps[0]:
        raise InputRasterError(
            f"{name} has no georeferencing (no CRS and no geotransform), so the result could not be placed "
            "on a map; georeference it first (e.g. in QGIS's Georeferencer, or gdal_translate -a_srs -a_ullr)"
        )
    if src.crs is not None and t.is_identity and not src.gcps[0] and not is_engineering(src.crs.to_wkt()):
        raise InputRasterError(
            f"{name} has a CRS but no geotransform (its pixels would be placed at 1 unit each from the CRS's origin), "
            "so the result could not be placed on the map; give it its position and pixel size first (e.g. "
            f"gdal_edit.py -a_ullr ULX ULY LRX LRY {shell_path(name)}, or QGIS's Georeferencer)"
        )
    if src.crs is None and src.gcps[0]:
        warped = shell_path(name.with_name(f"{name.stem}_warped.tif"))
        raise InputRasterError(f"{name} is georeferenced by GCPs only; warp it first (gdalwarp {shell_path(name)} "
                               f"{warped})")


def is_engineering(crs_wkt: str) -> bool:
    """Return whether ``crs_wkt`` is a local engineering CRS (e.g. a pixel or lab frame, no place on Earth).

    In such a CRS the identity geotransform (one unit per pixel from the origin) is a real georeferencing,
    not GDAL's stand-in for a missing one.
    """
    import pyproj
    from pyproj.exceptions import CRSError

    try:
        return bool(pyproj.CRS.from_wkt(crs_wkt).is_engineering)
    except CRSError:
        return False


def check_crs(info: RasterInfo, allow_no_crs: bool = False) -> None:
    """Refuse a raster with a geotransform but no CRS (unless allowed): its class map could not be placed.

    Like a raster without any georeferencing (refused by :func:`inspect_raster`): the map would carry
    coordinates in no known system, and its ground resolution is unknown, so ``resolution`` auto cannot
    run the model at its own scale either. Assigning the CRS is one command.
    """
    if info.crs_wkt is not None or allow_no_crs:
        return
    raise InputRasterError(
        f"{info.path} has a geotransform but no CRS, so the result could not be placed on a map; assign the "
        f"CRS it is in first (e.g. gdal_edit.py -a_srs EPSG:<code> {shell_path(info.path)}, or QGIS's Assign "
        f"Projection){hint('; or {} to segment it in its raw coordinates', 'allow_no_crs')}"
    )


def check_real(name: Path, dtype: str) -> None:
    """Refuse complex pixels (e.g. SAR single-look complex): a model takes real values.

    numpy would otherwise drop the imaginary part without a word.
    """
    if np.issubdtype(np.dtype(dtype), np.complexfloating) or dtype.startswith("complex"):
        raise InputRasterError(
            f"{name} holds complex values ({dtype}), e.g. SAR single-look complex data; the model takes real "
            f"values. Convert it first, e.g. to amplitude: gdal_translate DERIVED_SUBDATASET:AMPLITUDE:{name.name} "
            "amplitude.tif"
        )


def ground_resolution_m(src: rasterio.io.DatasetReader) -> float | None:
    """Return the ground size of one pixel in metres (mean of its two sides), or None if unknown.

    Measured on the ellipsoid at the raster's centre, so it is true for geographic CRSs (degrees) and for
    projections whose scale varies (Web Mercator's nominal 0.6 m is 0.3 m on the ground at 60 degrees).
    """
    crs, t = src.crs, src.transform
    if crs is None or t.is_identity:
        return None
    from pyproj import Geod
    from pyproj.exceptions import ProjError

    cx, cy = t @ (src.width / 2, src.height / 2)
    try:
        (lon0, lon1, lon2), (lat0, lat1, lat2) = _to_lonlat(crs.to_wkt()).transform(
            [cx, cx + t.a, cx], [cy, cy, cy + t.e], errcheck=True)
    except (ProjError, ValueError):
        return None
    geod = Geod(ellps="WGS84")
    dx = geod.inv(lon0, lat0, lon1, lat1)[2]
    dy = geod.inv(lon0, lat0, lon2, lat2)[2]
    return (dx + dy) / 2


@functools.lru_cache(maxsize=16)
def _to_lonlat(crs_wkt: str) -> Any:
    """Return a transformer from ``crs_wkt`` to its geographic CRS (cached: datasets share a few CRSs)."""
    from pyproj import CRS, Transformer

    source = CRS.from_wkt(crs_wkt)
    return Transformer.from_crs(source, source.geodetic_crs or "EPSG:4326", always_xy=True)


def choose_bands(info: RasterInfo, spec: InputSpec, override: Sequence[int] | None = None) -> tuple[int, ...]:
    """Return the raster bands to feed the model, in model channel order, or raise a clear error."""
    if override:
        bands = tuple(int(b) for b in override)
        if len(bands) != spec.n_bands:
            raise InputRasterError(f"{setting('bands')} lists {len(bands)} bands but the model takes {spec.n_bands}")
    else:
        bands = spec.bands
        if info.count < spec.n_bands:  # the raster lacks bands: only a band given twice would fill the input
            repeat = ",".join(str(1 + i % info.count) for i in range(spec.n_bands))
            raise InputRasterError(
                f"{info.path.name} has {info.count} band(s) but the model needs {spec.n_bands} (bands "
                f"{', '.join(map(str, spec.bands))}); segment a raster with {spec.n_bands} bands or use a model "
                f"trained on {info.count}-band rasters (or repeat a band: {setting('bands', repeat)})"
            )
        if len(info.data_bands) != spec.n_bands:
            raise InputRasterError(
                f"{info.path.name} has {len(info.data_bands)} data band(s) but the model takes {spec.n_bands} "
                f"(bands {', '.join(map(str, spec.bands))}){_alpha_note(info)}; choose them with {setting('bands')}, "
                "e.g. "
                + setting("bands", ",".join(str(b) for b in range(1, spec.n_bands + 1)))
            )
    bad = [b for b in bands if not 1 <= b <= info.count]
    if bad:
        raise InputRasterError(f"{info.path.name} has {info.count} band(s); band(s) {bad} do not exist")
    return bands


def _alpha_note(info: RasterInfo) -> str:
    """Explain alpha-tagged bands in a band-count error: they are not counted as data."""
    alpha = info.alpha_bands
    if not alpha:
        return ""
    which = ", ".join(map(str, alpha))
    one = len(alpha) == 1
    return (f"; band{'' if one else 's'} {which} {'is' if one else 'are'} tagged alpha, so GDAL reads "
            f"{'it' if one else 'them'} as a validity mask, not data. If {'it holds' if one else 'they hold'} "
            f"data (e.g. NIR), select it with {setting('bands')}: a selected band is fed to the model as data and no "
            "longer marks any pixel as nodata (or fix the tag: gdal_edit.py -colorinterp_N undefined)")


def alpha_as_data(info: RasterInfo, bands: Sequence[int]) -> tuple[int, ...]:
    """Return the selected bands that GDAL tags alpha (they are read as data, not as validity)."""
    return tuple(b for b in bands if b in info.alpha_bands)


def validity_bands(src: rasterio.io.DatasetReader, bands: Sequence[int]) -> list[int] | None:
    """Say where pixel validity comes from when reading ``bands`` as model input.

    None: GDAL's dataset mask (no selected band is tagged alpha). Otherwise the selected bands whose own
    mask is not the alpha band (a nodata value, an internal mask); an empty list: every pixel is valid.
    """
    alpha = {i for i, ci in enumerate(src.colorinterp, start=1) if ci == ColorInterp.alpha}
    if not alpha.intersection(bands):
        return None
    flags = src.mask_flag_enums
    return [b for b in bands if MaskFlags.alpha not in flags[b - 1] and MaskFlags.all_valid not in flags[b - 1]]


@dataclass
class Tile:
    """One tile read from the raster: model input (padded to the tile size) and pixel validity."""

    row: int
    col: int
    window: Window
    data: np.ndarray  # (bands, tile, tile) float32, normalised, padded
    valid: np.ndarray  # (window.height, window.width) bool, unpadded
    model_hw: tuple[int, int] | None = None  # read resampled: the window's size on the model's grid


class TileReader:
    """Read tiles of a raster, normalised for the model, with their validity masks."""

    def __init__(self, src: rasterio.io.DatasetReader, bands: Sequence[int], spec: InputSpec, tile_size: int,
                 scale: float = 1.0) -> None:
        """``scale`` != 1: windows are read resampled (bilinear) onto a grid with pixels ``scale`` times larger."""
        self.src = src
        self.bands = list(bands)
        self.spec = spec
        self.tile_size = tile_size
        self.scale = scale
        self._is_float = np.issubdtype(np.dtype(src.dtypes[0]), np.floating)
        self._mask_bands = validity_bands(src, self.bands)

    def read_valid(self, window: Window) -> np.ndarray:
        """Return the (h, w) validity of ``window`` from GDAL's masks (cheap: no band data).

        GDAL's dataset mask, unless a selected band is tagged alpha (see :func:`validity_bands`).
        """
        try:
            if self._mask_bands is None:
                return self.src.dataset_mask(window=window) > 0
            if not self._mask_bands:
                return np.ones((int(window.height), int(window.width)), dtype=bool)
            return np.logical_or.reduce(self.src.read_masks(self._mask_bands, window=window) > 0, axis=0)
        except RasterioIOError as exc:
            raise InputRasterError(f"{Path(self.src.name).name}: reading the mask at {_where(window)} failed "
                                   f"({_first_line(exc)}); the file, or a file it refers to, may be missing or "
                                   "damaged") from exc

    def model_shape(self, h: int, w: int) -> tuple[int, int]:
        """Return the size of an ``h`` x ``w`` window on the model's grid."""
        if self.scale == 1.0:
            return h, w
        return (min(self.tile_size, max(1, round(h / self.scale))), min(self.tile_size, max(1, round(w / self.scale))))

    def read(self, row: int, col: int, window: Window, valid: np.ndarray) -> Tile:
        """Read one tile; invalid pixels become 0 after normalisation (the training mean)."""
        if self.scale != 1.0:
            return self._read_resampled(row, col, window, valid)
        try:
            raw = self.src.read(self.bands, window=window)
        except RasterioIOError as exc:
            raise InputRasterError(f"{Path(self.src.name).name}: reading pixels at {_where(window)} failed "
                                   f"({_first_line(exc)}); the file, or a file it refers to, may be missing or "
                                   "damaged") from exc
        if self._is_float:
            valid = valid & np.isfinite(raw).all(axis=0)
        x = self.spec.normalise(raw)
        if not valid.all():
            x[:, ~valid] = 0.0
        h, w = valid.shape
        if h < self.tile_size or w < self.tile_size:
            x = np.pad(x, ((0, 0), (0, self.tile_size - h), (0, self.tile_size - w)), mode="symmetric")
        return Tile(row, col, window, x, valid)

    def _read_resampled(self, row: int, col: int, window: Window, valid: np.ndarray) -> Tile:
        """Read ``window`` onto the model's grid: bilinear for the pixels, nearest for the mask."""
        from rasterio.enums import Resampling

        h, w = valid.shape
        hm, wm = self.model_shape(h, w)
        try:
            raw = self.src.read(self.bands, window=window, out_shape=(len(self.bands), hm, wm),
                                resampling=Resampling.bilinear)
            vm = self.src.dataset_mask(window=window, out_shape=(hm, wm)) > 0
        except RasterioIOError as exc:
            raise InputRasterError(f"{Path(self.src.name).name}: reading pixels at {_where(window)} failed "
                                   f"({_first_line(exc)}); the file may be damaged") from exc
        if self._is_float:
            finite = np.isfinite(raw).all(axis=0)
            vm &= finite
            if not finite.all():
                from fastunet_core.tiling.resample import resize_nearest

                valid = valid & resize_nearest(finite, h, w)
        x = self.spec.normalise(raw)
        if not vm.all():
            x[:, ~vm] = 0.0
        if hm < self.tile_size or wm < self.tile_size:
            x = np.pad(x, ((0, 0), (0, self.tile_size - hm), (0, self.tile_size - wm)), mode="symmetric")
        return Tile(row, col, window, x, valid, (hm, wm))


OUT_OF_RANGE_WARN = 0.01  # warn when more than this share of the sampled valid pixels is outside the value range
_SAMPLE_GRID = 3  # sample windows per side
_SAMPLE_SIZE = 256  # pixels per sample window side


@dataclass(frozen=True)
class RangeSample:
    """Values of a raster's selected bands, sampled in a few windows, against the model's value range."""

    valid_pixels: int
    outside: int  # valid pixels with a value outside the value range in any selected band
    low: float
    high: float

    @property
    def share_outside(self) -> float:
        """The share of the sampled valid pixels outside the value range (0 when nothing was sampled)."""
        return self.outside / self.valid_pixels if self.valid_pixels else 0.0


def sample_value_range(reader: TileReader) -> RangeSample:
    """Read a grid of small windows (bounded cost on any raster size) and count values outside the range.

    Non-finite and nodata pixels are left out: they never reach the model as values.
    """
    src, (lo, hi) = reader.src, reader.spec.value_range
    size_x, size_y = min(_SAMPLE_SIZE, src.width), min(_SAMPLE_SIZE, src.height)
    xs = np.unique(np.linspace(0, src.width - size_x, _SAMPLE_GRID).round().astype(int))
    ys = np.unique(np.linspace(0, src.height - size_y, _SAMPLE_GRID).round().astype(int))
    n_valid = n_out = 0
    low, high = np.inf, -np.inf
    for y in ys:
        for x in xs:
            window = Window(int(x), int(y), size_x, size_y)
            valid = reader.read_valid(window)
            if not valid.any():
                continue
            try:
                raw = src.read(reader.bands, window=window)
            except RasterioIOError as exc:
                raise InputRasterError(f"{Path(src.name).name}: reading pixels at {_where(window)} failed "
                                       f"({_first_line(exc)}); the file may be damaged") from exc
            valid &= np.isfinite(raw).all(axis=0)
            values = raw[:, valid]
            if values.size == 0:
                continue
            n_valid += values.shape[1]
            n_out += int(((values < lo) | (values > hi)).any(axis=0).sum())
            low, high = min(low, float(values.min())), max(high, float(values.max()))
    return RangeSample(n_valid, n_out, low, high)


def _first_line(exc: BaseException) -> str:
    text = gdal_cause(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def gdal_cause(exc: BaseException) -> str:
    """Return GDAL's own message behind a rasterio error ("Read failed. See previous exception" says nothing).

    That message names the file that failed, e.g. a VRT's missing source.
    """
    cur: BaseException | None = exc
    seen: set[int] = set()
    messages = []
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        messages.append(str(cur).strip())
        cur = cur.__cause__ or cur.__context__
    useful = [m for m in messages if m and "see previous exception" not in m.lower()]
    return useful[-1] if useful else (messages[0] if messages else type(exc).__name__)


def _where(window: Window) -> str:
    return f"column {int(window.col_off)}, row {int(window.row_off)}"
