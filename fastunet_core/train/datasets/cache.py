"""The tile cache: every source file decoded once, its samples kept in a memory-mapped file.

Reading a 512 x 512 sample from its source costs 20-110 ms (both files opened, JPEG strips decoded far
beyond the window, each LoveDA PNG decoded again for each of its four tiles); from the cache it is a
copy out of the page cache. The first use of a split builds the cache: each source file (pair) is
opened once, read in blocks (the bounding box of its windows when that is small, else one row of
windows at a time) and cut into its samples by the dataset's own reading code, so a cached sample is
byte for byte the sample the uncached path returns (images in the source dtype, non-finite and nodata
pixels as the dataset hands them on, masks as channels with IGNORE_INDEX where the image is invalid).

File (one per dataset, split and tile size): a 4 KiB JSON header (format, key, sample count, dtypes),
then every image (source dtype, (H, W, bands) each, back to back), then every mask (uint8, (H, W)).
Which file belongs to which samples is fixed by a key: a hash of the dataset's identity (layout, files,
windows, bands, label mapping) and of every source file's size and modification time, so changing,
replacing or touching a source makes a new cache (the old one of the same dataset is deleted). A cache
is written under a temporary name and renamed when complete and flushed, so an interrupted build never
leaves a file that is trusted; the next run builds again (one process at a time, under a lock).

Every DataLoader worker opens the same file read-only (``np.memmap``): the operating system's page cache
holds it once for all workers and all later runs. Only the file name travels to the workers.

Settings (``data.cache``): ``auto`` (the default) caches in ``$FASTUNET_CACHE_DIR`` or the user's cache
folder (``~/.cache/fastunet-geo/tiles``, ``%LOCALAPPDATA%\\fastunet-geo\\tiles``) when the disk has room,
else reads from the sources with a warning; ``off`` never caches; any other value is a folder to cache in.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from torch.utils.data import Dataset

from fastunet_core.errors import CancelledError, ConfigError, DatasetLayoutError
from fastunet_core.hints import hint, setting
from fastunet_core.io.atomic import atomic_output
from fastunet_core.runtime.progress import NullProgress, Progress
from fastunet_core.train.datasets._common import SegmentationDataset

log = logging.getLogger(__name__)

FORMAT = "fastunet-geo tile cache"
VERSION = 1
HEADER_BYTES = 4096
FREE_MARGIN_BYTES = 1 << 30  # auto leaves at least this much of the disk free
MAX_BUILD_THREADS = 8
CACHE_ENV = "FASTUNET_CACHE_DIR"


@runtime_checkable
class Cacheable(Protocol):
    """What a dataset offers so that its samples can be cached (WindowedPairs, RasterVectorDataset)."""

    name: str
    input_dtype: str
    n_bands: int

    def __len__(self) -> int:
        """Return the number of samples."""
        ...

    def cache_identity(self) -> dict[str, Any]:
        """Return everything besides the files' contents that fixes the samples (JSON-able)."""
        ...

    def cache_sources(self) -> list[Path]:
        """Return the files the samples are read from."""
        ...

    def cache_shapes(self) -> list[tuple[int, int]]:
        """Return each sample's (height, width)."""
        ...

    def cache_groups(self) -> list[list[int]]:
        """Return sample indices grouped by what is best decoded together (one file pair, one strip)."""
        ...

    def read_group(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Decode a group once and yield ``(index, image, mask)`` for each of its samples."""
        ...


def default_cache_dir() -> Path:
    """Return where ``auto`` keeps caches: $FASTUNET_CACHE_DIR, else the platform's user cache folder."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "fastunet-geo" / "tiles"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fastunet-geo" / "tiles"


def with_tile_cache(dataset: SegmentationDataset, cache: str | os.PathLike[str], split: str,
                    progress: Progress | None = None) -> SegmentationDataset:
    """Return ``dataset`` served from its tile cache (built now if missing or stale), or itself when off."""
    text = str(cache)
    if text == "off" or not isinstance(dataset, Cacheable) or len(dataset) == 0:
        return dataset
    folder = default_cache_dir() if text == "auto" else Path(text).expanduser()
    layout = CacheLayout.of(dataset)
    path = folder / cache_name(dataset, split, layout)
    if not _valid(path, layout):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if text == "auto":
                log.warning("no tile cache (%s cannot be created: %s); reading from the sources", folder, exc)
                return dataset
            raise ConfigError(f"the tile cache folder {folder} cannot be created ({exc}); give another folder "
                              f"({setting('data.cache', 'FOLDER')}) or {setting('data.cache', 'off')}") from exc
        free = shutil.disk_usage(folder).free
        if free < layout.file_bytes + FREE_MARGIN_BYTES:
            message = (f"the tile cache of {dataset.name} ({split}) needs {layout.file_bytes / 2**30:.1f} GiB "
                       f"but {folder} has {free / 2**30:.1f} GiB free")
            if text == "auto":
                log.warning("%s; reading from the sources%s", message,
                            hint(" (give a folder with room: {})", "data.cache", value="FOLDER"))
                return dataset
            raise ConfigError(f"{message}; give another folder ({setting('data.cache', 'FOLDER')}) or "
                              f"{setting('data.cache', 'off')}")
        with _lock(path):
            if not _valid(path, layout):  # another process may have built it while we waited
                _build(dataset, layout, path, progress or NullProgress())
                _forget_older(path)
    return CachedTiles(dataset, path, layout)


def cache_name(dataset: Cacheable, split: str, layout: CacheLayout) -> str:
    """Return the cache file name: readable prefix, a hash of the dataset's identity, the full key's hash."""
    slug = re.sub(r"[^A-Za-z0-9._+-]+", "_", str(dataset.name))[:60]
    h, w = layout.shapes[0]
    return f"{slug}-{split}-{w}x{h}-{layout.identity[:10]}-{layout.key[:12]}.tiles"


class CacheLayout:
    """Where each sample lies in a cache file, and the key the file must carry."""

    def __init__(self, identity: str, key: str, dtype: np.dtype, bands: int,
                 shapes: Sequence[tuple[int, int]]) -> None:
        self.identity, self.key, self.dtype, self.bands = identity, key, dtype, bands
        self.shapes = [(int(h), int(w)) for h, w in shapes]
        pixels = np.array([h * w for h, w in self.shapes], dtype=np.int64)
        self.mask_offsets = np.concatenate([[0], np.cumsum(pixels)])  # in pixels
        self.image_offsets = self.mask_offsets * bands  # in elements of dtype
        self.image_start = HEADER_BYTES
        self.mask_start = _align(self.image_start + int(self.image_offsets[-1]) * self.dtype.itemsize)
        self.file_bytes = self.mask_start + int(self.mask_offsets[-1])

    @classmethod
    def of(cls, dataset: Cacheable) -> CacheLayout:
        """Compute the layout and key of a dataset's cache (reads the sources' sizes and times)."""
        stats = []
        for source in dataset.cache_sources():
            try:
                st = source.stat()
            except OSError as exc:
                raise DatasetLayoutError(f"{source} cannot be read ({exc}); check the dataset folder") from exc
            stats.append([str(source.resolve()), st.st_size, st.st_mtime_ns])  # the same files from any cwd
        identity = _digest({"format": FORMAT, "version": VERSION, "identity": dataset.cache_identity()})
        key = _digest({"identity": identity, "sources": stats})
        return cls(identity, key, np.dtype(dataset.input_dtype), int(dataset.n_bands), dataset.cache_shapes())

    def header(self) -> dict[str, Any]:
        """Return the header a complete cache file starts with."""
        return {"format": FORMAT, "version": VERSION, "key": self.key, "samples": len(self.shapes),
                "dtype": self.dtype.str, "bands": self.bands, "mask_start": self.mask_start,
                "file_bytes": self.file_bytes}


class CachedTiles(Dataset[tuple[np.ndarray, np.ndarray]]):
    """A dataset's samples served from its cache file (memory-mapped read-only, opened per process)."""

    def __init__(self, base: SegmentationDataset, path: Path, layout: CacheLayout) -> None:
        self.base, self.path, self.layout = base, path, layout
        self.classes, self.name, self.input_dtype = base.classes, base.name, base.input_dtype
        self.n_bands, self.resolution_m = base.n_bands, base.resolution_m
        self._images: np.ndarray | None = None
        self._masks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.layout.shapes)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or "base" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.base, name)  # classes, name, input_dtype, n_bands, resolution_m, samples ...

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_images": None, "_masks": None}  # workers map the file themselves

    def _open(self) -> tuple[np.ndarray, np.ndarray]:
        if self._images is None or self._masks is None:
            lay = self.layout
            self._images = np.memmap(self.path, dtype=lay.dtype, mode="r", offset=lay.image_start,
                                     shape=(int(lay.image_offsets[-1]),))
            self._masks = np.memmap(self.path, dtype=np.uint8, mode="r", offset=lay.mask_start,
                                    shape=(int(lay.mask_offsets[-1]),))
        return self._images, self._masks

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        images, masks = self._open()
        lay = self.layout
        h, w = lay.shapes[index]
        image = np.array(images[lay.image_offsets[index]:lay.image_offsets[index + 1]]).reshape(h, w, lay.bands)
        mask = masks[lay.mask_offsets[index]:lay.mask_offsets[index + 1]].reshape(h, w).astype(np.int64)
        return image, mask


def _build(dataset: Cacheable, layout: CacheLayout, path: Path, progress: Progress) -> None:
    groups = dataset.cache_groups()
    progress.message(f"decoding {dataset.name} once into the tile cache {path} "
                     f"({layout.file_bytes / 2**30:.2f} GiB, {len(layout.shapes)} tiles)")
    progress.start(len(layout.shapes), "tiles")
    _clean_leftovers(path)
    with atomic_output(path, overwrite=True) as tmp:
        with open(tmp, "wb") as f:
            f.truncate(layout.file_bytes)
        _write_samples(dataset, layout, tmp, groups, progress)
        with open(tmp, "r+b") as f:  # the header last: only a file whose samples are all written carries it
            f.write(json.dumps(layout.header()).encode().ljust(HEADER_BYTES, b" "))
            f.flush()
            os.fsync(f.fileno())


def _write_samples(dataset: Cacheable, layout: CacheLayout, tmp: Path, groups: list[list[int]],
                   progress: Progress) -> None:
    images = np.memmap(tmp, dtype=layout.dtype, mode="r+", offset=layout.image_start,
                       shape=(int(layout.image_offsets[-1]),))
    masks = np.memmap(tmp, dtype=np.uint8, mode="r+", offset=layout.mask_start, shape=(int(layout.mask_offsets[-1]),))

    def fill(group: list[int]) -> int:
        for index, image, mask in dataset.read_group(group):
            if mask.shape != layout.shapes[index] or image.shape != (*layout.shapes[index], layout.bands):
                raise DatasetLayoutError(f"sample {index} of {dataset.name} is {image.shape[:2]} px, not the "
                                         f"{layout.shapes[index]} of its window; the source changed while read")
            if mask.size and (mask.min() < 0 or mask.max() > 255):
                raise DatasetLayoutError(f"{dataset.name} has more than 255 classes; the tile cache holds masks "
                                         f"as uint8: set {setting('data.cache', 'off')}")
            images[layout.image_offsets[index]:layout.image_offsets[index + 1]] = image.reshape(-1)
            masks[layout.mask_offsets[index]:layout.mask_offsets[index + 1]] = mask.reshape(-1)
        return len(group)

    threads = max(1, min(MAX_BUILD_THREADS, os.cpu_count() or 1, len(groups)))
    pool = ThreadPoolExecutor(threads)
    todo = iter(groups)
    running: deque[Future[int]] = deque()

    def start_next() -> None:
        group = next(todo, None)
        if group is not None:
            running.append(pool.submit(fill, group))

    try:
        for _ in range(threads):  # one group per thread in flight: a cancel or an error stops within a group
            start_next()
        while running:
            progress.advance(running.popleft().result())  # in order; a failing group raises, the file is dropped
            if progress.is_cancelled():
                raise CancelledError("cancelled while building the tile cache; nothing was kept")
            start_next()
    finally:  # Ctrl-C, cancel or an error: wait for the groups in flight, start no other
        pool.shutdown(wait=True, cancel_futures=True)
    images.flush()
    masks.flush()


def _valid(path: Path, layout: CacheLayout) -> bool:
    """Return True when ``path`` is a complete cache carrying the expected key."""
    try:
        if path.stat().st_size != layout.file_bytes:
            return False
        with open(path, "rb") as f:
            header = json.loads(f.read(HEADER_BYTES).decode().strip() or "null")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return header == layout.header()


def _forget_older(path: Path) -> None:
    """Delete this dataset's caches made from earlier versions of its files (same name up to the key)."""
    prefix = path.name.rsplit("-", 1)[0] + "-"
    for old in path.parent.glob("*.tiles"):
        if old != path and old.name.startswith(prefix):
            with contextlib.suppress(OSError):
                old.unlink()


def _clean_leftovers(path: Path) -> None:
    """Delete temporary files of builds that were killed (called under the lock, so none is running)."""
    for tmp in path.parent.glob(f".{path.stem}.*.tmp{path.suffix}"):
        with contextlib.suppress(OSError):
            tmp.unlink()


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside ``path`` (so DDP ranks or parallel runs build a cache once)."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock; concurrent builders each write their own file, the last rename wins
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _align(n: int, to: int = 4096) -> int:
    return -(-n // to) * to
