"""Benchmark batch prediction over many small rasters, with and without the background tile reader.

Prints, in one run, throughput (megapixels/s) of ``predict_many`` over N generated GeoTIFF sheets with
read-ahead on and off, alternating the order of the two modes over several rounds, and their ratio.

    .venv/bin/python bench/bench_batch.py            # 24 sheets of 1024 x 1024, unet_tiny and unet_skinny
    .venv/bin/python bench/bench_batch.py --quick    # 8 sheets of 512 x 512, unet_tiny only
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin

from fastunet_core.inference.batch import predict_many
from fastunet_core.inference.predict import PredictOptions, Predictor
from fastunet_core.models.model_init import InitRequest, init_checkpoint


def make_sheets(folder: Path, n: int, size: int) -> list[Path]:
    """Write ``n`` smooth, deflate-compressed 3-band uint8 sheets (like orthophoto tiles)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    paths = []
    for i in range(n):
        path = folder / f"sheet_{i:03d}.tif"
        if not path.exists():
            phase = rng.uniform(0, 6.28, 3)
            data = np.stack([127 + 100 * np.sin(6 * xx + 4 * yy + p) for p in phase])
            data += rng.normal(0, 12, data.shape)
            with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8",
                               crs="EPSG:32633", transform=from_origin(500000 + i * size, 5000000, 0.5, 0.5),
                               tiled=True, blockxsize=256, blockysize=256, compress="deflate") as dst:
                dst.write(np.clip(data, 0, 255).astype(np.uint8))
        paths.append(path)
    return paths


def run_once(sheets: list[Path], ckpt: Path, prefetch: bool, out: Path, device: str) -> float:
    """Segment every sheet once; return seconds (model load excluded)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    predictor = Predictor(ckpt, PredictOptions(batch_size=4, prefetch=prefetch, device=device))
    t0 = time.perf_counter()
    result = predict_many(sheets, predictor, out)
    seconds = time.perf_counter() - t0
    assert result.all_succeeded
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--models", default=None, help="comma-separated architectures")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "fastunet-bench-batch")
    args = parser.parse_args()
    n, size = (8, 512) if args.quick else (24, 1024)
    archs = ["unet_tiny"] if args.quick else ["unet_tiny", "unet_skinny"]
    if args.models:
        archs = args.models.split(",")
    args.workdir.mkdir(parents=True, exist_ok=True)
    sheets = make_sheets(args.workdir, n, size)
    mpx = n * size * size / 1e6
    print(f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
          f"{torch.get_num_threads()}, cuda: {torch.cuda.is_available()}")
    print(f"{n} sheets of {size} x {size} px ({mpx:.1f} Mpx), tile 512, overlap 64, batch 4")
    rows = []
    for arch in archs:
        ckpt = args.workdir / f"{arch}.safetensors"
        if not ckpt.exists():
            init_checkpoint(InitRequest(architecture=arch, classes="5"), ckpt)
        times: dict[bool, list[float]] = {True: [], False: []}
        for r in range(args.rounds):
            for prefetch in ((True, False) if r % 2 == 0 else (False, True)):
                times[prefetch].append(run_once(sheets, ckpt, prefetch, args.workdir / "out", args.device))
        on, off = min(times[True]), min(times[False])
        rows.append((arch, mpx / off, mpx / on, off / on))
    print("\n| model | without read-ahead (Mpx/s) | with read-ahead (Mpx/s) | speed-up |")
    print("|---|---|---|---|")
    for arch, off_rate, on_rate, ratio in rows:
        print(f"| {arch} | {off_rate:.2f} | {on_rate:.2f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
