#!/usr/bin/env python
"""Benchmark resuming an interrupted predict: what an interruption costs compared with an uninterrupted run.

Run on demand (not a test)::

    env -u PROJ_DATA -u PROJ_LIB .venv/bin/python bench/bench_resume.py [--quick] [--stop-at 0.5]
        [--model unet_skinny] [--device auto]

On a generated 4096 x 4096 3-band orthophoto-like GeoTIFF (2048 with ``--quick``), tile 512, overlap 64,
batch 4, in one process with the model loaded once: (1) an uninterrupted run; (2) the same run cancelled
after ``--stop-at`` of its tiles (the CLI's Ctrl-C or SIGTERM take the same path), then (3) the same call
again, which continues from the rows the first part finished. Reported: the rows kept at the
interruption, the tiles run by (2) + (3) against (1), the wall time of (2) + (3) against (1), and whether
the resumed map is pixel- and byte-identical to the uninterrupted one. An interruption writes every finished
row (also those of an unfinished block), so the waste is the tile rows reaching above the last finished
cell: the overlap band.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from bench_batch import make_sheets

from fastunet_core.errors import CancelledError
from fastunet_core.inference.predict import PredictOptions, Predictor
from fastunet_core.io.resume import state_path
from fastunet_core.models.model_init import InitRequest, init_checkpoint
from fastunet_core.runtime.progress import NullProgress


class Counter(NullProgress):
    """Progress that counts tiles and cancels after ``limit`` of them."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit, self.done, self.total = limit, 0, 0

    def start(self, total: float, label: str) -> None:
        self.total = int(total)

    def advance(self, n: float = 1) -> None:
        self.done += int(n)

    def is_cancelled(self) -> bool:
        return self.limit is not None and self.done >= self.limit

    def message(self, text: str) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--stop-at", type=float, default=0.5, help="share of the tiles after which to cancel")
    parser.add_argument("--model", default="unet_skinny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "fastunet-bench-resume")
    args = parser.parse_args()
    size = 2048 if args.quick else 4096
    args.workdir.mkdir(parents=True, exist_ok=True)
    src_dir = args.workdir / f"src{size}"
    src_dir.mkdir(exist_ok=True)
    raster = make_sheets(src_dir, 1, size)[0]
    ckpt = args.workdir / f"{args.model}.safetensors"
    if not ckpt.exists():
        init_checkpoint(InitRequest(architecture=args.model, classes="5", tile_size_px=512, overlap_px=64), ckpt)
    out_dir = args.workdir / "out"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir()
    predictor = Predictor(ckpt, PredictOptions(batch_size=4, device=args.device, resume=True))
    print(f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
          f"{torch.get_num_threads()}, device {predictor.device.name}, engine {predictor.engine_name}")
    print(f"{size} x {size} px, {args.model}, tile 512, overlap 64, batch 4, cancel after {args.stop_at:.0%} "
          "of the tiles")

    whole = Counter()
    t0 = time.perf_counter()
    predictor.run(raster, out_dir / "whole.tif", progress=whole)
    t_whole = time.perf_counter() - t0

    first = Counter(limit=round(args.stop_at * whole.total))
    target = out_dir / "resumed.tif"
    t0 = time.perf_counter()
    with contextlib.suppress(CancelledError):
        predictor.run(raster, target, progress=first)
    t_first = time.perf_counter() - t0
    kept = int(json.loads(state_path(target).read_text())["rows_done"])
    second = Counter()
    t0 = time.perf_counter()
    predictor.run(raster, target, progress=second)
    t_second = time.perf_counter() - t0

    with rasterio.open(out_dir / "whole.tif") as a, rasterio.open(target) as b:
        identical = np.array_equal(a.read(), b.read())
    same_bytes = (out_dir / "whole.tif").read_bytes() == target.read_bytes()
    tiles = first.done + second.done
    print("\n| uninterrupted | interrupted + resumed | rows kept at the stop | tiles run | time | identical pixels "
          "| identical bytes |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {whole.total} tiles, {t_whole:.1f} s | {first.done} + {second.done} tiles, "
          f"{t_first:.1f} + {t_second:.1f} s | {kept} of {size} | {tiles / whole.total:.2f}x | "
          f"{(t_first + t_second) / t_whole:.2f}x | {identical} | {same_bytes} |")


if __name__ == "__main__":
    main()
