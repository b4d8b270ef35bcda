#!/usr/bin/env python
"""Benchmark the eager PyTorch forward time of every registered architecture at one tile size.

Run on demand (not a test)::

    env -u PROJ_DATA -u PROJ_LIB .venv/bin/python bench/bench_models.py [--size 512] [--batch 1]
        [--repeat 5] [--device cpu|cuda] [--models unet_base,unet_skinny,...]

Each model is built untrained (random weights; timing does not depend on their values) with 3 bands and
5 classes, put in eval mode, and run once to warm up, then ``--repeat`` rounds under ``torch.inference_mode``
on the same random input, each round running every model once (round-robin, so that a load drifting on a
shared machine biases no model). The table gives the median and the fastest time per tile, the GFLOPs of one tile
(FLOPs = 2 x MACs, see ``fastunet_core.models.summary``) and the achieved GFLOP/s, and the speed-up over
``unet_base`` (its median time / the model's median time). ``unet`` with default arguments is UNet_Base
and is skipped unless named.

Other processes on the machine skew the figures: compare only numbers from one run on an idle machine.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from dataclasses import dataclass

import torch

from fastunet_core.models.registry import REGISTRY, build_model, size_divisor
from fastunet_core.models.summary import summarize

BASELINE = "unet_base"
BANDS = 3
CLASSES = 5


@dataclass(frozen=True)
class Timing:
    """Per-tile forward times of one model."""

    name: str
    gflops: float
    times_s: tuple[float, ...]

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)

    @property
    def best_s(self) -> float:
        return min(self.times_s)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=512, help="tile side in pixels (default 512)")
    p.add_argument("--batch", type=int, default=1, help="tiles per forward call (default 1)")
    p.add_argument("--repeat", type=int, default=5, help="timed rounds (default 5)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--models", default=None, help="comma-separated names (default: all but 'unet')")
    return p.parse_args()


def time_models(names: list[str], size: int, batch: int, repeat: int, device: torch.device) -> list[Timing]:
    """Time every model ``repeat`` times, round-robin, after one warm-up forward each.

    Round-robin rather than model after model: on a shared machine the load drifts, and interleaving
    spreads the drift over all models instead of biasing the ratios.
    """
    torch.manual_seed(0)
    models = {n: build_model(n, BANDS, CLASSES).eval().to(device) for n in names}
    x = torch.randn(batch, BANDS, size, size, device=device)
    times: dict[str, list[float]] = {n: [] for n in names}
    with torch.inference_mode():
        for n in names:  # warm-up: kernel selection, memory allocation
            models[n](x)
        for _ in range(repeat):
            for n in names:
                _sync(device)
                t0 = time.perf_counter()
                models[n](x)
                _sync(device)
                times[n].append((time.perf_counter() - t0) / batch)
    return [Timing(n, summarize(n, BANDS, CLASSES, size).gflops, tuple(times[n])) for n in names]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def report(timings: list[Timing], size: int, batch: int, device: torch.device) -> None:
    base = next((t.median_s for t in timings if t.name == BASELINE), None)
    print(f"eager PyTorch {torch.__version__} forward, {BANDS}x{size}x{size}, batch {batch}, {device}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"{'model':<14} {'GFLOPs':>8} {'median s/tile':>14} {'best s/tile':>12} {'GFLOP/s':>8} "
          f"{'speed-up vs ' + BASELINE:>22}")
    for t in timings:
        ratio = f"{base / t.median_s:.2f}x" if base else "-"
        print(f"{t.name:<14} {t.gflops:8.2f} {t.median_s:14.3f} {t.best_s:12.3f} "
              f"{t.gflops / t.median_s:8.1f} {ratio:>22}")


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    names = args.models.split(",") if args.models else [n for n in REGISTRY if n != "unet"]
    for name in names:
        d = size_divisor(name)
        if args.size % d:
            raise SystemExit(f"{name} needs sizes that are multiples of {d}, not {args.size}")
    timings = time_models(names, args.size, args.batch, args.repeat, device)
    report(timings, args.size, args.batch, device)


if __name__ == "__main__":
    main()
