"""Loader throughput: 512 x 512 samples per second one worker process delivers, before and after the tile cache.

Generates LandCover.ai-sized sheets (9000 x 9000 RGB GeoTIFFs with their masks: one tiled, one in
JPEG-compressed strips, cut by the LandCover.ai layout's split lists) and LoveDA-style 1024 x 1024 PNGs,
then times, in this process (= one DataLoader worker):

- source: ``dataset[i]`` read from the files (data.cache: off), random order, a sample of the tiles;
- build: the one-time cache build (every source decoded once), tiles per second;
- cached: ``dataset[i]`` from the cache, random order, every tile;
- cached + augment: the same plus the CPU training transform (flips, rot90, colour jitter, normalise);
- a DataLoader with one worker process over the cache (shuffled batches of 8: IPC and collation included),
  handing over uint8 images and masks (augmentation on the device) or CPU-augmented float tensors;

and, in the same run, the training throughput of the model those samples feed (forward, JDT loss,
backward, Adam on 512 x 512 batches), so the ratio "loader / model" is measured under the same load.

    .venv/bin/python bench/bench_loader.py                      # 1 sheet of each kind, 16 LoveDA PNGs
    .venv/bin/python bench/bench_loader.py --sheets 2 --pngs 64 --model unet_skinny --keep /tmp/loader-bench
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import images_per_second

from fastunet_core.models.metadata import InputSpec
from fastunet_core.runtime.device import resolve_device
from fastunet_core.train.augment import SampleTransform
from fastunet_core.train.datasets import DatasetSpec, SegmentationDataset, open_dataset
from fastunet_core.train.datasets.cache import CachedTiles
from fastunet_core.train.workers import usable_cores

SHEET_PX = 9000
TILE = 512
FIELD_PX = 250  # size of the uniform "fields" the synthetic orthophoto is made of
SHEET_KINDS: dict[str, dict[str, Any]] = {
    "tiled (256 px, deflate)": {"tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "deflate"},
    "JPEG strips (16 rows)": {"compress": "JPEG", "blockysize": 16, "jpeg_quality": 90},
}


def _fields(rng: np.random.Generator, size: int, bands: int, high: int) -> np.ndarray:
    """Low-resolution random values, one per field, (bands, n, n)."""
    n = -(-size // FIELD_PX)
    return rng.integers(0, high, (bands, n, n), dtype=np.uint8)


def _expand(fields: np.ndarray, rows: slice, width: int) -> np.ndarray:
    """Blow the field values up to pixels for a band of rows."""
    r = np.arange(rows.start, rows.stop) // FIELD_PX
    c = np.arange(width) // FIELD_PX
    return fields[:, r][:, :, c]


def write_sheet(root: Path, name: str, kind: dict[str, Any], seed: int) -> None:
    """Write one 9000 x 9000 RGB sheet (fields + texture) and its 5-class mask, in 512-row blocks."""
    if (root / "masks" / f"{name}.tif").is_file():  # kept from an earlier run (--keep)
        return
    rng = np.random.default_rng(seed)
    colours, classes = _fields(rng, SHEET_PX, 3, 256), _fields(rng, SHEET_PX, 1, 5)
    profile = {"driver": "GTiff", "width": SHEET_PX, "height": SHEET_PX, "crs": "EPSG:2180", "dtype": "uint8",
               "transform": rasterio.Affine(0.25, 0, 500000, 0, -0.25, 300000)}
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    with rasterio.open(root / "images" / f"{name}.tif", "w", count=3, **profile, **kind) as img, \
            rasterio.open(root / "masks" / f"{name}.tif", "w", count=1, tiled=True, compress="deflate",
                          **profile) as msk:
        for top in range(0, SHEET_PX, TILE):
            rows = slice(top, min(top + TILE, SHEET_PX))
            window = Window(0, top, SHEET_PX, rows.stop - top)
            texture = rng.integers(0, 48, (3, rows.stop - top, SHEET_PX), dtype=np.uint8)
            img.write(np.clip(_expand(colours, rows, SHEET_PX).astype(np.int16) + texture - 24, 0, 255)
                      .astype(np.uint8), window=window)
            msk.write(_expand(classes, rows, SHEET_PX), window=window)


def landcoverai_root(root: Path, kind: dict[str, Any], sheets: int) -> DatasetSpec:
    """A LandCover.ai layout whose train list holds every complete 512 px tile of the sheets."""
    steps, complete = -(-SHEET_PX // TILE), SHEET_PX // TILE
    ids = []
    for s in range(sheets):
        write_sheet(root, f"sheet{s}", kind, seed=s)
        ids += [f"sheet{s}_{r * steps + c}" for r in range(complete) for c in range(complete)]
    (root / "train.txt").write_text("\n".join(ids) + "\n")
    for split in ("val", "test"):
        (root / f"{split}.txt").write_text(ids[0] + "\n")
    return DatasetSpec("landcoverai", root, tile_size=TILE)


def loveda_root(root: Path, pngs: int) -> DatasetSpec:
    """LoveDA-style Train/Urban 1024 x 1024 PNGs (texture over fields) and their masks."""
    rng = np.random.default_rng(7)
    for i in range(pngs):
        if (root / "Train" / "Urban" / "masks_png" / f"{i}.png").is_file():
            continue
        image = np.clip(_expand(_fields(rng, 1024, 3, 256), slice(0, 1024), 1024).astype(np.int16)
                        + rng.integers(0, 48, (3, 1024, 1024)) - 24, 0, 255).astype(np.uint8)
        mask = _expand(_fields(rng, 1024, 1, 8), slice(0, 1024), 1024)
        for folder, data in (("images_png", image), ("masks_png", mask)):
            path = root / "Train" / "Urban" / folder / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            with rasterio.open(path, "w", driver="PNG", width=1024, height=1024, count=data.shape[0],
                               dtype="uint8") as dst:
                dst.write(data)
    return DatasetSpec("loveda", root, tile_size=TILE, loveda_scenes=("Urban",))


def ms_per_sample(get: Callable[[int], Any], indices: list[int]) -> float:
    """Milliseconds per call of ``get`` over ``indices`` (after one untimed warm-up call)."""
    get(indices[0])
    t0 = time.perf_counter()
    for i in indices:
        get(i)
    return (time.perf_counter() - t0) * 1000 / len(indices)


class _Delivered(torch.utils.data.Dataset):
    """What a worker hands over: augmented float tensors, or (transform None) the uint8 sample for the device."""

    def __init__(self, dataset: SegmentationDataset, transform: SampleTransform | None) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.dataset[i]
        if self.transform is not None:
            return self.transform(image, mask)
        return torch.from_numpy(image), torch.from_numpy(mask.astype(np.uint8))


def loader_ms(dataset: SegmentationDataset, transform: SampleTransform | None) -> float:
    """Milliseconds per sample delivered by a DataLoader with one worker process (shuffled batches of 8)."""
    loader = torch.utils.data.DataLoader(_Delivered(dataset, transform), batch_size=8, shuffle=True, num_workers=1,
                                         persistent_workers=True, prefetch_factor=4)
    next(iter(loader))  # start the worker
    t0, n = time.perf_counter(), 0
    for x, _ in loader:
        n += x.shape[0]
    return (time.perf_counter() - t0) * 1000 / n


def measure(name: str, spec: DatasetSpec, cache_dir: Path, source_samples: int) -> dict[str, Any]:
    """Time one dataset before and after its cache."""
    rng = random.Random(0)
    source = open_dataset(DatasetSpec(**{**spec.__dict__, "cache": "off"}), "train")
    n = len(source)
    some = rng.sample(range(n), min(source_samples, n))
    source_ms = ms_per_sample(source.__getitem__, some)
    t0 = time.perf_counter()
    cached = open_dataset(DatasetSpec(**{**spec.__dict__, "cache": str(cache_dir)}), "train")
    assert isinstance(cached, CachedTiles), "the tile cache was not built"
    build_s = time.perf_counter() - t0
    every = rng.sample(range(n), n)
    cached_ms = ms_per_sample(cached.__getitem__, every)
    transform = SampleTransform(InputSpec(bands=(1, 2, 3), dtype="uint8"), train=True)
    augment_ms = ms_per_sample(lambda i: transform(*cached[i]), every)
    return {"dataset": name, "tiles": n, "source_ms": source_ms, "build_s": build_s, "cached_ms": cached_ms,
            "augmented_ms": augment_ms, "worker_uint8_ms": loader_ms(cached, None),
            "worker_ms": loader_ms(cached, transform),
            "cache_gib": cached.path.stat().st_size / 2**30}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sheets", type=int, default=1, help="9000 x 9000 sheets of each kind (default 1)")
    parser.add_argument("--pngs", type=int, default=16, help="LoveDA-style 1024 x 1024 PNGs (default 16)")
    parser.add_argument("--source-samples", type=int, default=24, help="tiles timed from the sources")
    parser.add_argument("--model", default="unet_skinny")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # a DataLoader worker runs with one thread
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_loader-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        load0 = os.getloadavg()
        t0 = time.perf_counter()
        specs = {f"LandCover.ai sheet, {k}": landcoverai_root(work / f"lcai{i}", kw, args.sheets)
                 for i, (k, kw) in enumerate(SHEET_KINDS.items())}
        specs["LoveDA 1024 PNG"] = loveda_root(work / "loveda", args.pngs)
        print(f"generated {args.sheets} sheet(s) of each kind and {args.pngs} PNG(s) in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        shutil.rmtree(work / "cache", ignore_errors=True)  # every run times the build
        rows = [measure(name, spec, work / "cache", args.source_samples) for name, spec in specs.items()]
        torch.set_num_threads(usable_cores())
        dev = resolve_device("cpu")
        model_ips = images_per_second(args.model, args.batch, TILE, 2, dev.device, None)
        load1 = os.getloadavg()
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    workers = max(1, usable_cores() - 1)
    print(f"\nload average (1, 5, 15 min) before {load0[0]:.1f}, {load0[1]:.1f}, {load0[2]:.1f}, after "
          f"{load1[0]:.1f}, {load1[1]:.1f}, {load1[2]:.1f}; {usable_cores()} usable cores; per-sample times in "
          f"one process with one torch thread (= one worker); {args.model} training, batch {args.batch} "
          f"512 x 512 on the CPU with {usable_cores()} threads: {model_ips:.2f} images/s")
    print("\n| source | tiles | ms/sample from the source | cache build s (tiles/s) | ms/sample cached "
          "(+ CPU augment) | 1 worker, uint8: samples/s (ms) | 1 worker, CPU-augmented: samples/s (ms) "
          "| cached vs source | worker / model: uint8, augmented |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['dataset']} | {r['tiles']} | {r['source_ms']:.1f} | {r['build_s']:.1f} "
              f"({r['tiles'] / r['build_s']:.0f}) | {r['cached_ms']:.2f} ({r['augmented_ms']:.1f}) | "
              f"{1000 / r['worker_uint8_ms']:.0f} ({r['worker_uint8_ms']:.1f}) | "
              f"{1000 / r['worker_ms']:.0f} ({r['worker_ms']:.1f}) | {r['source_ms'] / r['cached_ms']:.0f}x | "
              f"{1000 / r['worker_uint8_ms'] / model_ips:,.0f}x, {1000 / r['worker_ms'] / model_ips:,.0f}x |")
    print(f"\nworker / model: samples/s of one worker process over the model's training images/s; with "
          f"num_workers auto ({workers} here) the loader delivers {workers}x that.")


if __name__ == "__main__":
    main()
