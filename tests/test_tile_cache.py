"""The tile cache: the same samples as the sources, rebuilt when a source changes, never trusted half built,
shared by DataLoader workers."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.errors import NotGeoreferencedWarning

from fastunet_core.errors import ConfigError
from fastunet_core.runtime.progress import NullProgress
from fastunet_core.train.datasets import DatasetSpec, _common, open_dataset
from fastunet_core.train.datasets.cache import CachedTiles

pytestmark = pytest.mark.filterwarnings("ignore", category=NotGeoreferencedWarning)  # LoveDA's PNGs

SHEET = (144, 100)  # width, height: tile 32 -> 5 x 4 steps, complete tiles 4 x 3 (edges dropped as in split.py)


def _varied(rng: np.random.Generator, bands: int, height: int, width: int) -> np.ndarray:
    """Smooth gradients plus noise: every window differs from every other one."""
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([(xx * (b + 1) + yy * (3 - b)) % 256 for b in range(bands)])
    return (base + rng.integers(0, 40, (bands, height, width))).clip(0, 255).astype(np.uint8)


def _write(path: Path, data: np.ndarray, **kw: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0],
               "dtype": data.dtype, "crs": "EPSG:32633",
               "transform": rasterio.Affine(0.25, 0, 500000, 0, -0.25, 6000000), **kw}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def _landcoverai(root: Path) -> DatasetSpec:
    """Two sheets: one in JPEG-compressed strips, one tiled with nodata holes; masks with an unknown code."""
    rng = np.random.default_rng(1)
    w, h = SHEET
    for name, kw in (("jpeg-strips", {"compress": "JPEG", "blockysize": 8}),
                     ("tiled", {"tiled": True, "blockxsize": 16, "blockysize": 16, "compress": "deflate",
                                "nodata": 0})):
        image = _varied(rng, 3, h, w)
        if "nodata" in kw:
            image[:, 10:40, 50:90] = 0
        _write(root / "images" / f"{name}.tif", image, **kw)
        mask = rng.integers(0, 6, (1, h, w)).astype(np.uint8)  # 5 is no LandCover.ai class: ignored
        _write(root / "masks" / f"{name}.tif", mask, compress="deflate")
    ids = [f"{s}_{k}" for s in ("jpeg-strips", "tiled") for k in range(20) if k % 5 != 4 and k < 15]
    (root / "train.txt").write_text("\n".join(ids[::-1]) + "\n")  # not in file order
    for split in ("val", "test"):
        (root / f"{split}.txt").write_text(ids[0] + "\n")
    return DatasetSpec("landcoverai", root, tile_size=32)


def _loveda(root: Path) -> DatasetSpec:
    """LoveDA-style 64 x 64 PNGs (four 32 px tiles each), labels 0..7 with 0 = no-data."""
    rng = np.random.default_rng(2)
    for scene in ("Urban", "Rural"):
        for i in range(2):
            for folder, data in (("images_png", _varied(rng, 3, 64, 64)),
                                 ("masks_png", rng.integers(0, 8, (1, 64, 64)).astype(np.uint8))):
                path = root / "Train" / scene / folder / f"{scene}{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                with rasterio.open(path, "w", driver="PNG", width=64, height=64, count=data.shape[0],
                                   dtype="uint8") as dst:
                    dst.write(data)
    return DatasetSpec("loveda", root, tile_size=32)


def _folder_float(root: Path) -> DatasetSpec:
    """A float32 image with NaN, inf and nodata pixels (non-finite = no data), and a 3 x 3 tiled mask."""
    rng = np.random.default_rng(3)
    image = rng.normal(100, 30, (2, 70, 90)).astype(np.float32)
    image[0, 5:9, 5:30] = np.nan
    image[1, 40:44, 60:61] = np.inf
    image[:, 60:, :10] = -9999
    _write(root / "images" / "a.tif", image, nodata=-9999)
    _write(root / "masks" / "a.tif", rng.integers(0, 3, (1, 70, 90)).astype(np.uint8))
    _write(root / "images" / "b.tif", _varied(rng, 2, 70, 90).astype(np.float32))
    _write(root / "masks" / "b.tif", rng.integers(0, 3, (1, 70, 90)).astype(np.uint8))
    return DatasetSpec("folder", root, tile_size=32, class_names=("a", "b", "c"), val_fraction=0.0)


def _raster_vector(root: Path, shared: Path) -> DatasetSpec:
    """SpaceNet's uint16 chip with nodata holes and its building polygons (val strip: overlapping windows)."""
    with rasterio.open(shared / "solaris-spacenet" / "sample_geotiff.tif") as src:
        profile, data = src.profile, src.read()
    data[:, 100:160, 50:400] = 0
    root.mkdir(parents=True, exist_ok=True)
    with rasterio.open(root / "holes.tif", "w", **profile) as dst:
        dst.write(data)
    shutil.copy(shared / "solaris-spacenet" / "geotiff_labels.geojson", root / "labels.geojson")
    return DatasetSpec("raster_vector", root, raster="holes.tif", vector="labels.geojson", tile_size=96,
                       class_names=("background", "building"), val_fraction=0.25)


def _spec(layout: str, root: Path, shared: Path) -> DatasetSpec:
    if layout == "raster_vector":
        return _raster_vector(root, shared)
    return {"landcoverai": _landcoverai, "loveda": _loveda, "folder": _folder_float}[layout](root)


def _with(spec: DatasetSpec, cache: str | Path) -> DatasetSpec:
    return DatasetSpec(**{**spec.__dict__, "cache": str(cache)})


def _assert_same_samples(a: torch.utils.data.Dataset, b: torch.utils.data.Dataset) -> None:
    assert len(a) == len(b) > 0  # type: ignore[arg-type]
    for i in range(len(a)):  # type: ignore[arg-type]
        (ia, ma), (ib, mb) = a[i], b[i]
        assert (ia.dtype, ia.shape, ma.dtype, ma.shape) == (ib.dtype, ib.shape, mb.dtype, mb.shape), i
        assert ia.tobytes() == ib.tobytes() and ma.tobytes() == mb.tobytes(), f"sample {i} differs"


@pytest.mark.parametrize("blocks", ["whole files", "rows of windows"])
@pytest.mark.parametrize("layout", ["landcoverai", "loveda", "folder", "raster_vector"])
def test_cache_returns_exactly_the_uncached_samples(layout: str, blocks: str, tmp_path: Path, shared_data: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec(layout, tmp_path / "data", shared_data)
    if blocks == "rows of windows":
        monkeypatch.setattr(_common, "BLOCK_BYTES", 1)
    split = "train"
    uncached = open_dataset(_with(spec, "off"), split)
    cached = open_dataset(_with(spec, tmp_path / "cache"), split)
    assert isinstance(cached, CachedTiles) and not isinstance(uncached, CachedTiles)
    assert cached.name == uncached.name and cached.classes == uncached.classes
    _assert_same_samples(cached, uncached)
    images = [uncached[i][0] for i in range(len(uncached))]
    assert len({im.tobytes() for im in images}) == len(images)  # the data varies from window to window
    masks = [uncached[i][1] for i in range(len(uncached))]
    assert any((m == 255).any() for m in masks) and any((m != 255).any() for m in masks)
    if layout == "folder":
        assert any(np.isnan(im).any() for im in images)  # non-finite pixels travel as NaN, their labels ignored
    again = open_dataset(_with(spec, tmp_path / "cache"), split)  # reused, not rebuilt
    assert again.path == cached.path and again.path.stat().st_mtime_ns == cached.path.stat().st_mtime_ns


def test_cache_is_rebuilt_when_a_source_changes(tmp_path: Path) -> None:
    spec = _with(_landcoverai(tmp_path / "data"), tmp_path / "cache")
    first = open_dataset(spec, "train")
    before = [first[i] for i in range(len(first))]
    mask_file = tmp_path / "data" / "masks" / "tiled.tif"
    with rasterio.open(mask_file, "r+") as dst:  # same size, other labels
        dst.write((4 - dst.read()).clip(0, 5))
    second = open_dataset(spec, "train")
    assert second.path != first.path and not first.path.exists()  # the stale cache is deleted
    _assert_same_samples(second, open_dataset(_with(spec, "off"), "train"))
    assert any(a[1].tobytes() != second[i][1].tobytes() for i, a in enumerate(before))
    stat = mask_file.stat()
    os.utime(mask_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # only touched
    third = open_dataset(spec, "train")
    assert third.path != second.path and third.path.exists()


def _finished(folder: Path) -> list[Path]:
    return [p for p in folder.glob("*.tiles") if not p.name.startswith(".")]


_KILLED_BUILD = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from fastunet_core.train.datasets import DatasetSpec, open_dataset
    from fastunet_core.train.datasets._common import WindowedPairs
    original = WindowedPairs.read_group
    calls = []
    def dying(self, indices):
        calls.append(1)
        if len(calls) == 2:  # the first file pair is written: die as a power cut or kill -9 would
            os.kill(os.getpid(), signal.SIGKILL)
        yield from original(self, indices)
    WindowedPairs.read_group = dying
    open_dataset(DatasetSpec("landcoverai", Path(sys.argv[1]), tile_size=32, cache=sys.argv[2]), "train")
""")


def test_an_interrupted_build_is_not_trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _with(_landcoverai(tmp_path / "data"), tmp_path / "cache")
    killed = subprocess.run([sys.executable, "-c", _KILLED_BUILD, str(spec.root), spec.cache], check=False)
    assert killed.returncode == -9
    leftovers = list((tmp_path / "cache").glob(".*.tmp.tiles"))
    assert len(leftovers) == 1 and not _finished(tmp_path / "cache")  # only the partial file
    ds = open_dataset(spec, "train")  # rebuilt, not read from the half-written file
    _assert_same_samples(ds, open_dataset(_with(spec, "off"), "train"))
    assert not leftovers[0].exists()  # the killed build's file is cleaned up

    def fail(self: object, indices: object) -> None:
        raise KeyboardInterrupt

    ds.path.unlink()
    monkeypatch.setattr(_common.WindowedPairs, "read_group", fail)
    with pytest.raises(KeyboardInterrupt):
        open_dataset(spec, "train")
    assert not list((tmp_path / "cache").glob("*.tiles"))  # Ctrl-C: nothing left behind, not even a partial file
    monkeypatch.undo()

    ds = open_dataset(spec, "train")
    with open(ds.path, "r+b") as f:  # a file of the right name but cut short is not trusted either
        f.truncate(ds.path.stat().st_size - 1)
    _assert_same_samples(open_dataset(spec, "train"), open_dataset(_with(spec, "off"), "train"))


def test_workers_share_the_cache(tmp_path: Path) -> None:
    spec = _with(_loveda(tmp_path / "data"), tmp_path / "cache")
    cached = open_dataset(spec, "train")
    expected = [cached[i] for i in range(len(cached))]
    uncached = open_dataset(_with(spec, "off"), "train")
    assert len(pickle.dumps(cached)) < len(pickle.dumps(uncached)) + 4096  # no pixels travel to the workers
    shutil.move(tmp_path / "data", tmp_path / "gone")  # the workers can only read the cache file
    loader = torch.utils.data.DataLoader(cached, batch_size=3, num_workers=2)
    images, masks = zip(*loader, strict=True)
    np.testing.assert_array_equal(torch.cat(images).numpy(), np.stack([e[0] for e in expected]))
    np.testing.assert_array_equal(torch.cat(masks).numpy(), np.stack([e[1] for e in expected]))


def test_cache_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    spec = _loveda(tmp_path / "data")
    assert DatasetSpec("loveda", spec.root, cache=False).cache == "off"  # type: ignore[arg-type]  # YAML's bare off
    assert not isinstance(open_dataset(_with(spec, "off"), "train"), CachedTiles)
    monkeypatch.setenv("FASTUNET_CACHE_DIR", str(tmp_path / "auto"))
    assert open_dataset(spec, "train").path.parent == tmp_path / "auto"  # auto is the default
    full = type("Usage", (), {"free": 10})()
    monkeypatch.setattr(shutil, "disk_usage", lambda _: full)
    monkeypatch.setenv("FASTUNET_CACHE_DIR", str(tmp_path / "auto2"))
    assert not isinstance(open_dataset(spec, "train"), CachedTiles)  # no room: read from the sources
    assert "reading from the sources (give a folder with room: data.cache=FOLDER)" in caplog.text
    with pytest.raises(ConfigError, match=r"GiB free; give another folder \(data\.cache=FOLDER\) or data\.cache=off$"):
        open_dataset(_with(spec, tmp_path / "explicit"), "train")
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"cannot be created .*\(data\.cache=FOLDER\) or data\.cache=off$"):
        open_dataset(_with(spec, tmp_path / "file" / "sub"), "train")
    with pytest.raises(ConfigError, match=r"data\.cache"):
        DatasetSpec("loveda", spec.root, cache=3)  # type: ignore[arg-type]


class _CancelAfterFirst(NullProgress):
    """A progress that asks to stop as soon as the first file is decoded (the QGIS task's cancel)."""

    def start(self, total: float, label: str) -> None:
        self.done = 0.0

    def advance(self, n: float = 1) -> None:
        self.done += n

    def is_cancelled(self) -> bool:
        return self.done > 0

    def message(self, text: str) -> None:
        pass


def test_cancelling_a_build_stops_decoding_and_keeps_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastunet_core.errors import CancelledError
    from fastunet_core.train.datasets import cache

    spec = _with(_loveda(tmp_path / "data"), tmp_path / "cache")  # four PNGs: four files to decode
    calls: list[int] = []
    original = _common.WindowedPairs.read_group

    def counting(self: _common.WindowedPairs, indices: list[int]):  # type: ignore[no-untyped-def]
        calls.append(1)
        yield from original(self, indices)

    monkeypatch.setattr(_common.WindowedPairs, "read_group", counting)
    monkeypatch.setattr(cache, "MAX_BUILD_THREADS", 1)
    with pytest.raises(CancelledError, match="tile cache"):
        open_dataset(spec, "train", _CancelAfterFirst())
    assert len(calls) <= 2  # the files not yet started are dropped, not decoded first
    assert not list((tmp_path / "cache").glob("*.tiles"))
