"""Shared parts of the dataset loaders: the ignore label, windowed image/mask reading, classes, layout errors.

Every file-pair loader turns its layout into a list of :class:`PairWindow` (an image file, its mask file
and one :class:`rasterio.windows.Window` of both) and hands it to :class:`WindowedPairs`, which reads the
window on the fly. Raw mask values become model channels through a lookup table; values outside the table
become :data:`IGNORE_INDEX`, and so do pixels the image itself marks as nodata (GDAL's dataset mask: a
nodata value, an internal mask or an alpha band).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import RasterioIOError
from rasterio.windows import Window
from torch.utils.data import Dataset

from fastunet_core.errors import DatasetLayoutError, InputRasterError
from fastunet_core.io.raster_input import check_real, gdal_cause, ground_resolution_m, open_raster
from fastunet_core.models.metadata import ClassInfo, default_classes
from fastunet_core.tiling.grid import tile_windows

IGNORE_INDEX = 255
"""Mask value of pixels that count for nothing (no label, image nodata, padding)."""

DEFAULT_VAL_FRACTION = 0.2
"""The share of a dataset without a split of its own held out for validation (``data.val_fraction``)."""

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
_SHOW = 5  # how many entries an error message lists

_KNOWN_COLOURS: dict[str, tuple[int, int, int]] = {
    "no-data": (0, 0, 0),
    "background": (255, 255, 255),
    "building": (255, 0, 0),
    "road": (255, 255, 0),
    "water": (0, 0, 255),
    "barren": (159, 129, 183),
    "forest": (0, 255, 0),
    "woodland": (0, 160, 0),
    "agriculture": (255, 195, 128),
}


def make_classes(names: Sequence[str], ids: Sequence[int] | None = None) -> tuple[ClassInfo, ...]:
    """Build classes in channel order, with well-known colours for common names (LoveDA's palette)."""
    ids = list(range(len(names))) if ids is None else list(ids)
    base = default_classes(names)
    return tuple(
        ClassInfo(int(i), n, _KNOWN_COLOURS.get(n.lower(), b.color)) for i, n, b in zip(ids, names, base, strict=True)
    )


def make_lut(value_to_channel: Mapping[int, int]) -> np.ndarray:
    """Return a lookup table raw mask value -> channel; values not in the mapping give IGNORE_INDEX."""
    lut = np.full(max(value_to_channel, default=0) + 1, IGNORE_INDEX, dtype=np.int64)
    for value, channel in value_to_channel.items():
        lut[value] = channel
    return lut


def apply_lut(raw: np.ndarray, lut: np.ndarray, source: Path) -> np.ndarray:
    """Map raw mask codes to channels (int64); codes outside the table become IGNORE_INDEX."""
    if not np.issubdtype(raw.dtype, np.integer):
        raise DatasetLayoutError(f"mask {source} holds {raw.dtype} values; masks must hold integer class codes")
    out = np.full(raw.shape, IGNORE_INDEX, dtype=np.int64)
    inside = (raw >= 0) & (raw < len(lut))
    out[inside] = lut[raw[inside]]
    return out


@dataclass(frozen=True)
class RasterHeader:
    """What a loader needs to know about an image file before reading pixels."""

    width: int
    height: int
    dtype: str
    bands: tuple[int, ...]  # 1-based data bands (an alpha band is left out: it is validity, not data)
    resolution_m: float | None = None  # ground size of a pixel, when the image is georeferenced


def read_header(path: Path) -> RasterHeader:
    """Read an image's size, data type and data bands (no pixels)."""
    with open_raster(path) as src:
        try:
            check_real(path, src.dtypes[0])
        except InputRasterError as exc:
            raise DatasetLayoutError(str(exc)) from exc
        bands = tuple(i for i, ci in enumerate(src.colorinterp, start=1) if ci != ColorInterp.alpha)
        return RasterHeader(src.width, src.height, src.dtypes[0], bands or (1,), ground_resolution_m(src))


def uniform_header(headers: Sequence[RasterHeader], paths: Sequence[Path]) -> RasterHeader:
    """Return the first header with the images' median ground resolution; raise if their types differ."""
    first = headers[0]
    for header, path in zip(headers, paths, strict=True):
        if header.dtype != first.dtype or len(header.bands) != len(first.bands):
            raise DatasetLayoutError(
                f"images must share one data type and band count: {paths[0].name} is {first.dtype} with "
                f"{len(first.bands)} band(s) but {path.name} is {header.dtype} with {len(header.bands)}; "
                "convert them to one format (e.g. with gdal_translate -ot)"
            )
    known = [h.resolution_m for h in headers if h.resolution_m]
    return dataclasses.replace(first, resolution_m=float(np.median(known)) if known else None)


def cut_windows(width: int, height: int, tile: int) -> list[Window]:
    """Cut a width x height image into tile x tile windows, row-major, last row/column flush with the edge."""
    return [w for row in tile_windows(width, height, tile, 0) for w in row]


def describe_dir(folder: Path) -> str:
    """Say what a folder holds (up to a few entries), for layout error messages."""
    if not folder.exists():
        return f"{folder} does not exist"
    if not folder.is_dir():
        return f"{folder} is a file, not a folder"
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return f"{folder} is empty"
    return f"found {list_some(names)} in {folder}"


def list_some(names: Iterable[str]) -> str:
    """Join up to a few names, saying how many more there are."""
    names = list(names)
    more = f" and {len(names) - _SHOW} more" if len(names) > _SHOW else ""
    return ", ".join(names[:_SHOW]) + more


def list_images(folder: Path, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> dict[str, Path]:
    """Return the image files of a folder by stem; raise if the folder has none or two share a stem."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in suffixes:
            if path.stem in found:
                raise DatasetLayoutError(
                    f"{folder} holds both {found[path.stem].name} and {path.name}; keep one file per name"
                )
            found[path.stem] = path
    if not found:
        raise DatasetLayoutError(
            f"expected image files ({', '.join(suffixes)}) in {folder}, {describe_dir(folder)}"
        )
    return found


def match_pairs(images: Mapping[str, Path], masks: Mapping[str, Path], image_dir: Path,
                mask_dir: Path) -> list[tuple[Path, Path]]:
    """Pair images with masks of the same file name stem; raise listing what has no partner."""
    lonely_images = sorted(set(images) - set(masks))
    if lonely_images:
        raise DatasetLayoutError(
            f"{len(lonely_images)} image(s) in {image_dir} have no mask of the same name in {mask_dir}: "
            f"{list_some(lonely_images)}; add their masks or move them out"
        )
    lonely_masks = sorted(set(masks) - set(images))
    if lonely_masks:
        raise DatasetLayoutError(
            f"{len(lonely_masks)} mask(s) in {mask_dir} have no image of the same name in {image_dir}: "
            f"{list_some(lonely_masks)}; add their images or move them out"
        )
    return [(images[stem], masks[stem]) for stem in sorted(images)]


@dataclass(frozen=True)
class PairWindow:
    """One training sample: a window of an image file and the same window of its mask file."""

    image: Path
    mask: Path
    window: Window


def pair_windows(pairs: Sequence[tuple[Path, Path]], tile: int) -> tuple[list[PairWindow], RasterHeader]:
    """Cut every image/mask pair into tile windows; return the samples and the images' common header."""
    if not pairs:
        raise DatasetLayoutError("no image/mask pairs found")
    headers = [read_header(image) for image, _ in pairs]
    header = uniform_header(headers, [image for image, _ in pairs])
    check_mask_sizes(pairs, headers)
    samples = [
        PairWindow(image, mask, w)
        for (image, mask), h in zip(pairs, headers, strict=True)
        for w in cut_windows(h.width, h.height, tile)
    ]
    return samples, header


PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk every complete PNG ends with


def check_png_complete(path: Path, what: str) -> None:
    """Raise if a PNG file lacks its end marker: truncated (GDAL reads the missing rows as zeros, silently)."""
    if path.suffix.lower() != ".png":
        return
    try:
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - 4096))  # some tools append a few bytes after the end marker
            tail = f.read()
    except OSError as exc:
        raise DatasetLayoutError(f"{what} {path} cannot be read ({exc.strerror or exc})") from exc
    if PNG_END not in tail:
        raise DatasetLayoutError(f"{what} {path} is truncated (the PNG ends before its end marker); export it "
                                 "again or remove the pair")


def check_mask_sizes(pairs: Sequence[tuple[Path, Path]], headers: Sequence[RasterHeader]) -> None:
    """Raise, when the dataset is opened, if a mask is not the size of its image (listing the first few).

    Truncated PNG images and masks are refused here too: GDAL decodes the missing rows of a whole-image
    read as zeros without an error, which would train on made-up labels.
    """
    wrong = []
    for (image, mask), h in zip(pairs, headers, strict=True):
        check_png_complete(image, "image")
        check_png_complete(mask, "mask")
        with open_raster(mask) as msk:
            if (msk.width, msk.height) != (h.width, h.height):
                wrong.append(f"{mask} is {msk.width} x {msk.height} px but its image {image.name} is "
                             f"{h.width} x {h.height}")
    if wrong:
        more = f" (and {len(wrong) - 1} more pair(s))" if len(wrong) > 1 else ""
        raise DatasetLayoutError(f"mask {wrong[0]}{more}; a mask must cover its image pixel for pixel: "
                                 "fix or remove the pair")


def read_mask(src: rasterio.io.DatasetReader, window: Window) -> np.ndarray:
    """Read band 1 of a mask in ``window``; a damaged file (truncated PNG ...) is an error naming it."""
    try:
        return src.read(1, window=window)
    except RasterioIOError as exc:
        raise DatasetLayoutError(f"mask {src.name} cannot be read at {window_text(window)} ({gdal_cause(exc)}); "
                                 "the file may be damaged or truncated: export it again or remove the pair") from exc


def window_text(window: Window) -> str:
    """Describe a window in words (``columns 0-255, rows 0-255``)."""
    c0, r0 = int(window.col_off), int(window.row_off)
    return f"columns {c0}-{c0 + int(window.width) - 1}, rows {r0}-{r0 + int(window.height) - 1}"


def read_image(src: rasterio.io.DatasetReader, window: Window, bands: Sequence[int]) -> tuple[np.ndarray,
                                                                                                np.ndarray | None]:
    """Read (H, W, bands) pixels in the source dtype, and the (H, W) invalid-pixel mask (None: all valid)."""
    try:
        raw = src.read(list(bands), window=window)
        invalid = None
        if not all(MaskFlags.all_valid in flags for flags in src.mask_flag_enums):
            invalid = src.dataset_mask(window=window) == 0
    except (RasterioIOError, IndexError) as exc:
        raise DatasetLayoutError(f"image {src.name} cannot be read at {window_text(window)} ({gdal_cause(exc)}); "
                                 "the file (or a file it refers to) may be missing or damaged, or have fewer "
                                 "bands than the others") from exc
    if np.issubdtype(raw.dtype, np.floating):
        nonfinite = ~np.isfinite(raw).all(axis=0)
        invalid = nonfinite if invalid is None else invalid | nonfinite
        if invalid.any():  # NaN marks "no data" in float images: the transform fills it before the model
            raw[:, invalid] = np.nan
    return np.ascontiguousarray(np.moveaxis(raw, 0, -1)), invalid


class SegmentationDataset(Protocol):
    """What training, evaluation and the benches use of a dataset (every layout's dataset has it).

    ``__getitem__(i)`` returns ``(image, mask)``: ``image`` (H, W, bands) in the source dtype, ``mask`` (H, W)
    int64 holding model channel indices ``0..len(classes)-1`` or :data:`IGNORE_INDEX`.
    """

    classes: tuple[ClassInfo, ...]  # channel order; ``ClassInfo.id`` is the value written to class rasters
    name: str
    input_dtype: str  # numpy dtype name of the images
    n_bands: int
    resolution_m: float | None  # ground size of a pixel in metres, when known

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]: ...


class WindowedPairs(Dataset[tuple[np.ndarray, np.ndarray]]):
    """Samples read on the fly from windows of image/mask file pairs.

    ``__getitem__`` returns ``(image (H, W, bands) source dtype, mask (H, W) int64)`` with mask values
    0..n_classes-1 or :data:`IGNORE_INDEX`.
    """

    def __init__(self, samples: Sequence[PairWindow], *, classes: tuple[ClassInfo, ...], lut: np.ndarray,
                 name: str, header: RasterHeader) -> None:
        self.samples = list(samples)
        self.classes = classes
        self.lut = lut
        self.name = name
        self.input_dtype = header.dtype
        self.n_bands = len(header.bands)
        self._bands = header.bands
        self.resolution_m = header.resolution_m

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return next(self.read_group([index]))[1:]

    def read_group(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Read samples of one image/mask pair, each file opened and decoded once; yield (index, image, mask).

        The blocks read are the bounding box of the windows when small, else one row of windows at a time.
        """
        first = self.samples[indices[0]]
        with open_raster(first.image) as img, open_raster(first.mask) as msk:
            if (img.width, img.height) != (msk.width, msk.height):
                raise DatasetLayoutError(
                    f"{first.image.name} is {img.width} x {img.height} px but its mask {first.mask.name} is "
                    f"{msk.width} x {msk.height}; a mask must cover its image pixel for pixel"
                )
            itemsize = np.dtype(self.input_dtype).itemsize * len(self._bands)
            for block, members in read_blocks([self.samples[i].window for i in indices], itemsize):
                image, invalid = read_image(img, block, self._bands)
                raw = read_mask(msk, block)
                for m in members:
                    sample = self.samples[indices[m]]
                    if sample.image != first.image or sample.mask != first.mask:
                        raise ValueError("read_group takes samples of one image/mask pair")
                    part = crop(block, sample.window)
                    mask = apply_lut(raw[part], self.lut, sample.mask)
                    if invalid is not None:
                        mask[invalid[part]] = IGNORE_INDEX
                    yield indices[m], np.ascontiguousarray(image[part]), mask

    def cache_identity(self) -> dict[str, Any]:
        """Return what fixes the samples besides the files' contents (for the tile cache's key)."""
        return {"kind": type(self).__name__, "name": self.name, "dtype": self.input_dtype, "bands": self._bands,
                "lut": self.lut.tolist(), "samples": [[str(s.image), str(s.mask), *window_tuple(s.window)]
                                                      for s in self.samples]}

    def cache_sources(self) -> list[Path]:
        """Every image and mask file the samples come from."""
        return sorted({s.image for s in self.samples} | {s.mask for s in self.samples})

    def cache_shapes(self) -> list[tuple[int, int]]:
        """Each sample's (height, width)."""
        return [(int(s.window.height), int(s.window.width)) for s in self.samples]

    def cache_groups(self) -> list[list[int]]:
        """Sample indices by image/mask pair: each pair is decoded once for all its windows."""
        groups: dict[tuple[Path, Path], list[int]] = {}
        for i, s in enumerate(self.samples):
            groups.setdefault((s.image, s.mask), []).append(i)
        return list(groups.values())


BLOCK_BYTES = 64 << 20
"""Largest block of image pixels read at once while decoding a file for the tile cache."""


def window_tuple(window: Window) -> tuple[int, int, int, int]:
    """Return (col_off, row_off, width, height) as integers."""
    return int(window.col_off), int(window.row_off), int(window.width), int(window.height)


def bounding_window(windows: Sequence[Window]) -> Window:
    """Return the smallest window holding all ``windows``."""
    boxes = np.array([window_tuple(w) for w in windows])
    c0, r0 = boxes[:, 0].min(), boxes[:, 1].min()
    c1, r1 = (boxes[:, 0] + boxes[:, 2]).max(), (boxes[:, 1] + boxes[:, 3]).max()
    return Window(int(c0), int(r0), int(c1 - c0), int(r1 - r0))


def read_blocks(windows: Sequence[Window], pixel_bytes: int,
                max_bytes: int | None = None) -> list[tuple[Window, list[int]]]:
    """Plan the reads of a file: ``(block, positions of the windows inside it)``, top to bottom.

    One block holding every window when it takes at most ``max_bytes`` (default BLOCK_BYTES), else one
    block per row of windows (windows sharing a top row), so each part of the file is decoded about once.
    """
    whole = bounding_window(windows)
    if whole.width * whole.height * pixel_bytes <= (BLOCK_BYTES if max_bytes is None else max_bytes):
        return [(whole, list(range(len(windows))))]
    rows: dict[int, list[int]] = {}
    for i, w in enumerate(windows):
        rows.setdefault(int(w.row_off), []).append(i)
    return [(bounding_window([windows[i] for i in members]), members) for _, members in sorted(rows.items())]


def crop(block: Window, window: Window) -> tuple[slice, slice]:
    """Return the (rows, cols) slices of ``window`` in an array read for ``block``."""
    r, c = int(window.row_off - block.row_off), int(window.col_off - block.col_off)
    return slice(r, r + int(window.height)), slice(c, c + int(window.width))

