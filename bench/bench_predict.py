#!/usr/bin/env python
"""Benchmark ``fastunet_core.inference.predict.predict_raster``: peak memory and end-to-end throughput.

Run on demand (not a test)::

    env -u PROJ_DATA -u PROJ_LIB .venv/bin/python bench/bench_predict.py [--quick] [--workdir DIR]
        [--device auto|cpu|cuda] [--repeat N]

(a) Peak memory: ``predict_raster`` with a cheap model (``unet_tiny``, 5 classes) on a generated small and
    large 3-band uint8 GeoTIFF (2048 and 16384 px square; 1024 and 4096 with ``--quick``), each run in a
    fresh child process whose peak resident set size is read from ``os.wait4`` (the per-child form of
    ``getrusage(RUSAGE_CHILDREN).ru_maxrss``). A child that only imports torch + rasterio and loads the
    model gives the baseline, and one that also runs a single batch through the engine shows the model's
    own working memory. The small raster is run 3 times (its peak moves by about 5% from run to run:
    allocator timing and the read-ahead thread) and the median kept. Goal: peak(large) / peak(small) <= 1.2.
(b) Throughput: on the small raster with a realistic model (``unet_skinny``, 5 classes), tile 512,
    overlap 64, batch 4, the bare engine forward on the same number of same-shaped tiles (random
    normalised input already in memory, through the same ``TorchEngine``) against ``predict_raster``
    end to end (model already loaded), both in one process after one warm-up forward, interleaved
    ``--repeat`` times (best of each kept). Goal: end-to-end / bare >= 0.95. The process CPU time of each
    is printed too: on a machine shared with other work, wall times swing by 2x while CPU times hold.

The parent process only orchestrates and imports nothing heavy: on Linux a child's ``ru_maxrss`` includes
the RSS of the process it was forked from, so a parent holding torch would inflate every figure. Each
child also reports its own ``VmHWM`` (peak RSS since exec) as a cross-check, and ends with ``os._exit`` once
its result is printed, because Python's normal teardown of torch alone adds ~125 MiB to the peak.
(``import torch`` itself runs ``ldconfig -p`` in a forked child; that grandchild's ru_maxrss, about the
RSS at that moment, is folded into the child's figure but stays below the child's own peak.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULT_PREFIX = "@@BENCH_RESULT "
TILE = 512
OVERLAP = 64
BATCH = 4
N_CLASSES = "5"
MEMORY_MODEL = "unet_tiny"
SPEED_MODEL_PREFERRED = "unet_skinny"
SPEED_MODEL_FALLBACK = "unet_tiny"
MEMORY_GOAL = 1.2
SMALL_MEMORY_RUNS = 3  # the small run's peak moves by +-5% from run to run; it is quick, so take a median
SPEED_GOAL = 0.95

Json = dict[str, Any]


# --------------------------------------------------------------------------------------------- parent side


@dataclass(frozen=True)
class ChildRun:
    """What one child process reported, plus its peak RSS as seen by the parent."""

    result: Json
    maxrss_mib: float  # ru_maxrss from wait4 (Linux reports KiB)
    seconds: float


def cpu_name() -> str:
    """Return the CPU model name (from /proc/cpuinfo where available)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_child(mode: str, params: Json) -> ChildRun:
    """Run this script in ``--child MODE`` in a fresh interpreter; return its result and peak RSS."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--params", json.dumps(params)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    proc.stdout.close()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    result: Json | None = None
    for line in out.splitlines():
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX):])
        else:
            print(line)
    if proc.returncode != 0 or result is None:
        raise SystemExit(f"child {mode} failed (exit code {proc.returncode})")
    kib_per_unit = 1 / 1024 if sys.platform == "darwin" else 1  # macOS reports bytes
    return ChildRun(result, usage.ru_maxrss * kib_per_unit / 1024, seconds)


def load_average() -> float | None:
    """Return the 1-minute load average, or None where the platform has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def fmt_mib(value: float | None) -> str:
    """Format a MiB figure, or a dash when unknown."""
    return "-" if value is None else f"{value:,.0f}"


def print_header(info: Json, args: argparse.Namespace, sizes: tuple[int, int]) -> None:
    """Print the machine and settings the figures were measured with."""
    print("fastunet-geo predict benchmark")
    print(f"  CPU: {cpu_name()} ({os.cpu_count()} logical cores); torch {info['torch']} with "
          f"{info['threads']} intra-op thread(s); rasterio {info['rasterio']} / GDAL {info['gdal']}")
    print(f"  device: {info['device']}")
    print(f"  GDAL_CACHEMAX: {info['gdal_cachemax']}; python {platform.python_version()}; "
          f"predict_raster defaults: {info['predict_defaults']}")
    print(f"  sizes: {sizes[0]} and {sizes[1]} px square{' (--quick)' if args.quick else ''}; tile {TILE}, "
          f"overlap {OVERLAP}, batch {BATCH}; workdir {args.workdir_path}")
    load = load_average()
    if load is not None:
        busy = " (other work on this machine will skew the timings)" if load > 0.5 else ""
        print(f"  load average (1 min) before the runs: {load:.2f}{busy}")
    print()


def memory_section(work: Path, ckpt: Path, rasters: tuple[Path, Path], device: str) -> Json:
    """(a): peak RSS of the baseline, model-only and predict children; return the figures."""
    print(f"(a) peak memory, {MEMORY_MODEL} ({N_CLASSES} classes), one fresh process per run")
    base = run_child("baseline", {"ckpt": str(ckpt), "device": device})
    fwd = run_child("forward", {"ckpt": str(ckpt), "device": device})
    print(f"  baseline (import torch + rasterio, load model): ru_maxrss {fmt_mib(base.maxrss_mib)} MiB "
          f"(VmHWM {fmt_mib(base.result['vmhwm_mib'])})")
    print(f"  model only (baseline + one {BATCH}-tile batch through the engine): ru_maxrss "
          f"{fmt_mib(fwd.maxrss_mib)} MiB (VmHWM {fmt_mib(fwd.result['vmhwm_mib'])})")
    runs: list[Json] = []
    for raster, repeats in zip(rasters, (SMALL_MEMORY_RUNS, 1), strict=True):
        peaks: list[float] = []
        for _ in range(repeats):
            out = work / f"pred_{raster.stem}.tif"
            params = {"raster": str(raster), "ckpt": str(ckpt), "device": device, "out": str(out)}
            run = run_child("predict", params)
            out.unlink(missing_ok=True)
            r = run.result
            peaks.append(run.maxrss_mib)
            print(f"  predict {r['width']}x{r['height']}: {r['tiles']} tiles in {r['seconds']:.1f} s, ru_maxrss "
                  f"{fmt_mib(run.maxrss_mib)} MiB (VmHWM {fmt_mib(r['vmhwm_mib'])}), "
                  f"{run.maxrss_mib - base.maxrss_mib:+,.0f} MiB over baseline")
        peak = statistics.median(peaks)
        if repeats > 1:
            print(f"  predict {r['width']}x{r['height']}: median of {repeats} runs {fmt_mib(peak)} MiB")
        runs.append({"size": r["width"], "tiles": r["tiles"], "peak": peak, "added": peak - base.maxrss_mib})
    small, large = runs
    ratio = large["peak"] / small["peak"]
    added_ratio = large["added"] / small["added"] if small["added"] > 0 else float("nan")
    verdict = "OK" if ratio <= MEMORY_GOAL else "ABOVE GOAL"
    print(f"  ratio {large['size']}/{small['size']} peak RSS: {ratio:.2f} (goal <= {MEMORY_GOAL}: "
          f"{verdict}); ratio of the memory added over baseline: {added_ratio:.2f}")
    print()
    return {"baseline": base.maxrss_mib, "forward": fwd.maxrss_mib, "runs": runs, "ratio": ratio,
            "added_ratio": added_ratio}


def speed_section(ckpt: Path, arch: str, raster: Path, device: str, repeat: int) -> Json:
    """(b): bare engine forward vs end-to-end predict_raster in one child; return the figures."""
    load = load_average()
    print(f"(b) throughput, {arch} ({N_CLASSES} classes), tile {TILE}, overlap {OVERLAP}, batch {BATCH}, "
          f"best of {repeat}" + ("" if load is None else f"; load average now {load:.2f}"))
    run = run_child("speed", {"raster": str(raster), "ckpt": str(ckpt), "device": device, "repeat": repeat,
                              "out": str(raster.with_name(f"speed_{raster.stem}.tif"))})
    r = run.result
    for key, label in (("bare", "bare forward"), ("e2e", "end-to-end predict_raster")):
        m = r[key]
        runs = ", ".join(f"{s:.2f}" for s in m["all"])
        print(f"  {label:27s} {r['tiles']:5d} tiles {r['mpx']:8.2f} Mpx {m['seconds']:8.2f} s "
              f"{r['mpx'] / m['seconds']:8.3f} Mpx/s  CPU {m['cpu_seconds']:7.2f} s  (all runs: {runs} s)")
    ratio = r["bare"]["seconds"] / r["e2e"]["seconds"]
    cpu_ratio = r["bare"]["cpu_seconds"] / r["e2e"]["cpu_seconds"]
    verdict = "OK" if ratio >= SPEED_GOAL else "BELOW GOAL"
    print(f"  ratio end-to-end / bare (Mpx/s): {ratio:.3f} (goal >= {SPEED_GOAL}: {verdict}); "
          f"same ratio in CPU time: {cpu_ratio:.3f}")
    print("  (Mpx = raster pixels for both rows: the bare forward runs as many tiles as cover the raster;")
    print("   CPU time counts every thread of the process and moves little when other work shares the CPU)")
    print()
    return {**r, "ratio": ratio, "cpu_ratio": cpu_ratio, "arch": arch}


def print_table(info: Json, mem: Json, speed: Json) -> None:
    """Print a compact Markdown summary, ready to paste into a README."""
    print("Summary (Markdown):")
    print()
    print(f"CPU: {cpu_name()}, {info['threads']} torch thread(s), device {info['device_short']}, "
          f"torch {info['torch']}, GDAL {info['gdal']}")
    print()
    print(f"| peak memory ({MEMORY_MODEL}) | tiles | peak RSS MiB | over baseline MiB |")
    print("|---|---:|---:|---:|")
    print(f"| baseline: torch + rasterio + model | - | {fmt_mib(mem['baseline'])} | 0 |")
    print(f"| model only: one {BATCH}-tile batch | - | {fmt_mib(mem['forward'])} | "
          f"{mem['forward'] - mem['baseline']:,.0f} |")
    for run in mem["runs"]:
        print(f"| predict {run['size']} x {run['size']} | {run['tiles']} | {fmt_mib(run['peak'])} | "
              f"{run['added']:,.0f} |")
    small, large = mem["runs"]
    print(f"| **ratio {large['size']} / {small['size']}** | | **{mem['ratio']:.2f}** (goal <= {MEMORY_GOAL}) "
          f"| {mem['added_ratio']:.2f} |")
    print()
    print(f"| throughput ({speed['arch']}, {speed['width']} x {speed['height']}, tile {TILE}/{OVERLAP}, "
          f"batch {BATCH}) | tiles | Mpx | s | Mpx/s | CPU s |")
    print("|---|---:|---:|---:|---:|---:|")
    for key, label in (("bare", "bare engine forward"), ("e2e", "predict_raster end to end")):
        m = speed[key]
        print(f"| {label} | {speed['tiles']} | {speed['mpx']:.2f} | {m['seconds']:.2f} | "
              f"{speed['mpx'] / m['seconds']:.3f} | {m['cpu_seconds']:.2f} |")
    print(f"| **ratio end-to-end / bare** | | | | **{speed['ratio']:.3f}** (goal >= {SPEED_GOAL}) | "
          f"{speed['cpu_ratio']:.3f} |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--quick", action="store_true", help="smaller rasters (1024 and 4096 px) for a fast check")
    p.add_argument("--workdir", type=Path, default=None,
                   help="folder for generated rasters and checkpoints (kept, reused); default: a temp dir")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="device to run the models on")
    p.add_argument("--repeat", type=int, default=3,
                   help="time (b) this many times, interleaved, and keep the best of each [3]")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--params", default="{}", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    return args


def run_benchmark(args: argparse.Namespace) -> None:
    """Prepare inputs, run every measurement in child processes, print the figures and the summary."""
    sizes = (1024, 4096) if args.quick else (2048, 16384)
    tmp = None if args.workdir else tempfile.mkdtemp(prefix="fastunet_bench_")
    work = Path(args.workdir or tmp or ".").resolve()
    work.mkdir(parents=True, exist_ok=True)
    args.workdir_path = work
    try:
        models = run_child("models", {"dir": str(work), "device": args.device}).result
        print_header(models, args, sizes)
        rasters = tuple(work / f"synthetic_{s}.tif" for s in sizes)
        for size, path in zip(sizes, rasters, strict=True):
            gen = run_child("generate", {"path": str(path), "size": size}).result
            what = "reused" if gen["reused"] else f"generated in {gen['seconds']:.1f} s"
            print(f"input {path.name}: {size}x{size}x3 uint8, deflate, 512 tiles, "
                  f"{gen['bytes'] / 2**20:,.1f} MiB on disk ({what})")
        print()
        mem = memory_section(work, Path(models["memory_ckpt"]), (rasters[0], rasters[1]), args.device)
        speed = speed_section(Path(models["speed_ckpt"]), models["speed_arch"], rasters[0], args.device,
                              args.repeat)
        print_table(models, mem, speed)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- child side


def vmhwm_mib() -> float | None:
    """Return this process's peak RSS since exec (Linux ``VmHWM``), in MiB, or None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def child_models(params: Json) -> Json:
    """Write the two checkpoints (if missing) and report the torch / GDAL set-up."""
    import rasterio
    import torch
    from rasterio._env import get_gdal_config  # only to print the effective block cache size

    from fastunet_core.inference.predict import PredictOptions
    from fastunet_core.models.model_init import InitRequest, init_checkpoint
    from fastunet_core.models.registry import REGISTRY
    from fastunet_core.runtime.device import resolve_device

    work = Path(params["dir"])
    speed_arch = SPEED_MODEL_PREFERRED if SPEED_MODEL_PREFERRED in REGISTRY else SPEED_MODEL_FALLBACK
    paths = {}
    for arch in (MEMORY_MODEL, speed_arch):
        path = work / f"{arch}_c{N_CLASSES}.safetensors"
        if not path.exists():
            init_checkpoint(InitRequest(architecture=arch, classes=N_CLASSES, tile_size_px=TILE,
                                        overlap_px=OVERLAP), path)
        paths[arch] = str(path)
    device = resolve_device(params["device"])
    defaults = PredictOptions()
    return {"memory_ckpt": paths[MEMORY_MODEL], "speed_ckpt": paths[speed_arch], "speed_arch": speed_arch,
            "torch": torch.__version__, "threads": torch.get_num_threads(), "rasterio": rasterio.__version__,
            "gdal": rasterio.__gdal_version__, "device": device.describe(),
            "device_short": device.name, "gdal_cachemax": _cache_size(get_gdal_config("GDAL_CACHEMAX")),
            "predict_defaults": f"blend {defaults.blend}, prefetch {getattr(defaults, 'prefetch', 'n/a')}"}


def _cache_size(value: object) -> str:
    """Describe GDAL's block cache size (rasterio reports bytes; GDAL also takes MiB or a % of RAM)."""
    if value is None:
        return "GDAL default (5% of RAM)"
    text = str(value)
    if text.endswith("%"):
        return f"{text} of RAM"
    n = int(text)
    return f"{n // 2**20 if n > 100_000 else n} MiB"


def synthetic_block(size: int, row0: int, rows: int, seed: int = 0) -> Any:
    """Return (3, rows, size) uint8 rows ``row0..row0+rows`` of a smooth synthetic image.

    Low-frequency sinusoids (periods of tens to thousands of pixels, like fields, roads and relief in an
    orthophoto) plus a little Gaussian noise, so that deflate compresses it about as well as real imagery.
    """
    import numpy as np

    rng = np.random.default_rng((seed, row0))
    y = np.arange(row0, row0 + rows, dtype=np.float32)[:, None]
    x = np.arange(size, dtype=np.float32)[None, :]
    out = np.empty((3, rows, size), dtype=np.uint8)
    for band in range(3):
        v = np.full((rows, size), 110.0 + 20 * band, dtype=np.float32)
        for k, (period, angle, amp) in enumerate(((2400.0, 0.3, 40.0), (610.0, 1.1, 25.0), (97.0, 2.0, 12.0),
                                                  (23.0, 0.7, 6.0))):
            a = angle + 0.4 * band + 0.1 * k
            v += amp * np.sin((np.cos(a) * x + np.sin(a) * y) * (2 * np.pi / period) + band + k)
        v += rng.normal(0.0, 3.0, size=v.shape).astype(np.float32)
        out[band] = np.clip(v, 0, 255).astype(np.uint8)
    return out


def child_generate(params: Json) -> Json:
    """Write the synthetic raster block row by block row (bounded memory), unless a good one exists."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    path, size = Path(params["path"]), int(params["size"])
    t0 = time.perf_counter()
    if path.exists():
        with rasterio.open(path) as src:
            if (src.width, src.height, src.count, src.dtypes[0], src.block_shapes[0]) == (
                    size, size, 3, "uint8", (TILE, TILE)):
                return {"reused": True, "seconds": 0.0, "bytes": path.stat().st_size}
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8",
               "crs": "EPSG:32633", "transform": from_origin(500_000.0, 5_600_000.0, 0.25, 0.25),
               "tiled": True, "blockxsize": TILE, "blockysize": TILE, "compress": "deflate", "predictor": 2,
               "interleave": "pixel", "num_threads": "ALL_CPUS", "bigtiff": "if_safer"}
    tmp = path.with_name(f".{path.name}.tmp")
    with rasterio.Env(GDAL_CACHEMAX=64 * 2**20), rasterio.open(tmp, "w", **profile) as dst:  # bytes
        for row0 in range(0, size, TILE):
            rows = min(TILE, size - row0)
            dst.write(synthetic_block(size, row0, rows), window=Window(0, row0, size, rows))
    os.replace(tmp, path)
    return {"reused": False, "seconds": time.perf_counter() - t0, "bytes": path.stat().st_size}


def child_baseline(params: Json) -> Json:
    """Import torch + rasterio and load the model onto the device; nothing else."""
    import rasterio  # noqa: F401 - imported for its memory, like predict does

    from fastunet_core.inference.engine import TorchEngine
    from fastunet_core.models.checkpoint import load_checkpoint
    from fastunet_core.runtime.device import resolve_device

    loaded = load_checkpoint(params["ckpt"])
    TorchEngine(loaded.torch_model(), resolve_device(params["device"]))
    return {"vmhwm_mib": vmhwm_mib()}


def child_forward(params: Json) -> Json:
    """Baseline plus one batch of tiles through the engine: the model's own working memory."""
    import rasterio  # noqa: F401 - imported for its memory, like predict does

    from fastunet_core.inference.engine import TorchEngine
    from fastunet_core.models.checkpoint import load_checkpoint
    from fastunet_core.runtime.device import resolve_device

    loaded = load_checkpoint(params["ckpt"])
    engine = TorchEngine(loaded.torch_model(), resolve_device(params["device"]))
    engine(random_batches(loaded.meta, BATCH, BATCH)[0])
    return {"vmhwm_mib": vmhwm_mib()}


def child_predict(params: Json) -> Json:
    """Run ``predict_raster`` once (model loaded by it, as a user would) and report its figures."""
    import rasterio

    from fastunet_core.inference.predict import PredictOptions, predict_raster

    opts = PredictOptions(tile_size_px=TILE, overlap_px=OVERLAP, batch_size=BATCH, device=params["device"],
                          overwrite=True)
    res = predict_raster(params["raster"], params["ckpt"], params["out"], opts)
    with rasterio.open(params["raster"]) as src:
        width, height = src.width, src.height
    return {"width": width, "height": height, "tiles": res.tiles_total, "seconds": res.seconds,
            "vmhwm_mib": vmhwm_mib()}


def random_batches(meta: Any, n_tiles: int, batch: int) -> list[Any]:
    """Return normalised random uint8 input for ``n_tiles`` tiles, ``batch`` per batch (last partial)."""
    import numpy as np

    rng = np.random.default_rng(0)
    sizes = [min(batch, n_tiles - i) for i in range(0, n_tiles, batch)]
    return [np.ascontiguousarray(meta.input.normalise(
        rng.integers(0, 256, size=(meta.input.n_bands, k, TILE, TILE), dtype=np.uint8)).transpose(1, 0, 2, 3))
        for k in sizes]


def child_speed(params: Json) -> Json:
    """Time the bare engine forward and ``predict_raster`` end to end, in this one process."""
    import rasterio

    from fastunet_core.inference.engine import TorchEngine
    from fastunet_core.inference.predict import PredictOptions, predict_raster
    from fastunet_core.models.checkpoint import load_checkpoint
    from fastunet_core.runtime.device import resolve_device
    from fastunet_core.tiling.grid import TileGrid

    loaded = load_checkpoint(params["ckpt"])
    with rasterio.open(params["raster"]) as src:
        width, height = src.width, src.height
    n_tiles = TileGrid.for_raster(width, height, TILE, OVERLAP).n_tiles
    engine = TorchEngine(loaded.torch_model(), resolve_device(params["device"]))
    batches = random_batches(loaded.meta, n_tiles, BATCH)
    engine(batches[0])  # warm-up
    opts = PredictOptions(tile_size_px=TILE, overlap_px=OVERLAP, batch_size=BATCH, device=params["device"],
                          overwrite=True)
    def run_bare() -> None:
        for b in batches:
            engine(b)

    def run_e2e() -> None:
        res = predict_raster(params["raster"], loaded, params["out"], opts)
        if res.tiles_total != n_tiles or res.tiles_skipped:
            raise RuntimeError(f"predict ran {res.tiles_total} tiles ({res.tiles_skipped} skipped), "
                               f"expected {n_tiles}")

    times: dict[str, list[tuple[float, float]]] = {"bare": [], "e2e": []}
    for _ in range(int(params["repeat"])):  # interleaved, so slow spells of a shared machine hit both
        times["bare"].append(timed(run_bare))
        times["e2e"].append(timed(run_e2e))
    Path(params["out"]).unlink(missing_ok=True)
    out: Json = {"width": width, "height": height, "tiles": n_tiles, "mpx": width * height / 1e6}
    for key, pairs in times.items():
        out[key] = {"seconds": min(w for w, _ in pairs), "all": [w for w, _ in pairs],
                    "cpu_seconds": min(c for _, c in pairs)}
    return out


def timed(fn: Callable[[], None]) -> tuple[float, float]:
    """Run ``fn``; return (wall seconds, CPU seconds of this process, all threads)."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


CHILD_MODES = {"models": child_models, "generate": child_generate, "baseline": child_baseline,
               "forward": child_forward, "predict": child_predict, "speed": child_speed}


def run_child_mode(mode: str, params_json: str) -> None:
    """Entry point of a child process: run one measurement and print its result as one JSON line."""
    result = CHILD_MODES[mode](json.loads(params_json))
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    sys.stderr.flush()
    # Skip interpreter teardown: finalising torch's modules raises the peak RSS by ~125 MiB on its own,
    # which would be counted in ru_maxrss but has nothing to do with the pipeline being measured.
    os._exit(0)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark (or, with the hidden ``--child``, one measurement of it)."""
    # rasterio's wheel brings its own PROJ: a PROJ_DATA/PROJ_LIB pointing at the system's breaks EPSG lookups.
    os.environ.pop("PROJ_DATA", None)
    os.environ.pop("PROJ_LIB", None)
    args = parse_args(argv)
    if args.child:
        run_child_mode(args.child, args.params)
    else:
        run_benchmark(args)


if __name__ == "__main__":
    main()
