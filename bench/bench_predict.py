#!/usr/bin/env python
"""Benchmark ``predict`` at its default settings: CPU cost against the bare forward, peak memory, start-up.

Run on demand (not a test)::

    env -u PROJ_DATA -u PROJ_LIB .venv/bin/python bench/bench_predict.py [--quick] [--full] [--workdir DIR]
        [--device auto|cpu|cuda] [--repeat N] [--first-tile-only] [--against OTHER_CHECKOUT] [--agreement]

Input: a real orthophoto (Deepness's drone test image, ``../shared/data/deepness-testdata``, RGB bands)
mirror-tiled to 2048 x 2048 and 16384 x 16384 px and georeferenced at 0.1 m (1024 / 4096 with ``--quick``),
tiled deflate GeoTIFFs. Tile 512, overlap 51 px (25 tiles at 2048^2, as in the Deepness comparison of
issue #15), every other option at ``predict``'s default (engine, precision, batch). The model is
unet_skinny with 5 classes (BatchNorm statistics as after training); its ONNX export is put in the cache
first, as any run after the first finds it.

(a) Peak memory: ``predict`` in a fresh child process per run, peak RSS from ``os.wait4`` (``ru_maxrss``)
    and the child's own ``VmHWM``. A child that only builds the predictor (imports, model, engine) gives
    the baseline; one that also runs one batch shows the model's working memory. unet_skinny at the small
    size (median of 3 runs) gives the absolute figure; unet_tiny at both sizes gives the growth with the
    raster (the pipeline's own memory; unet_skinny at the large size only with ``--full``: about 1300 tiles).
(b) Throughput, in one child: the bare engine forward (the predictor's own engine and batch size, random
    normalised input already in memory, as many tiles as cover the raster) against ``predict`` end to end
    on the same predictor, interleaved ``--repeat`` times, best of each kept. Mpx per CPU-second (process
    CPU time, all threads: it moves little when other work shares the machine; wall time moves a lot).
    Deepness's figure (1.82 CPU-s per 512 tile on this CPU, measured in issue #15) is printed beside it.
(c) Start to first tile: wall time from starting ``fastunet-geo predict`` (the CLI, default settings, in a
    fresh ``python``) to the first tile's probabilities, imports and model loading included (cache warm);
    median of ``--repeat`` runs after one uncounted run, with the time each stage began and the process's
    CPU seconds by then. The children keep their bytecode in ``WORKDIR/pycache`` (as an installed package
    has it compiled, even where ``PYTHONDONTWRITEBYTECODE`` is set). ``--against OTHER_CHECKOUT`` alternates
    runs of another checkout (e.g. the commit before a change) with this tree's, so both see the same load;
    ``--first-tile-only`` measures (c) alone.

``--agreement`` first records both models' bf16 plan and agreement on the orthophoto (as a trained model has
them), so that every figure is of the path ``--precision auto`` then takes on a CPU with native bf16: the
PyTorch bf16 engine (torch imported).

The parent process only orchestrates and imports nothing heavy: on Linux a child's ``ru_maxrss`` includes
the RSS of the process it was forked from, so a parent holding torch would inflate every figure. Each
child ends with ``os._exit`` once its result is printed (Python's teardown of torch alone adds ~125 MiB).
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
OVERLAP = 51
N_CLASSES = "5"
MEMORY_MODEL = "unet_tiny"  # cheap: the growth with the raster at the large size
SPEED_MODEL = "unet_skinny"  # the model
MEMORY_GOAL = 1.2
MEMORY_GOAL_MIB = 0.8 * 1000**3 / 2**20  # 0.8 GB at the small size (Deepness: 0.88 GB)
SMALL_MEMORY_RUNS = 3  # the small run's peak moves by +-5% from run to run; it is quick, so take a median
SPEED_GOAL = 0.95
FIRST_TILE_GOAL = 2.0
DEEPNESS_CPU_S_PER_TILE = 1.82  # issue #15: Deepness 0.6.5, same weights and orthophoto, this CPU
REPO = Path(__file__).resolve().parents[1]
ORTHO = Path(__file__).resolve().parents[2] / "shared" / "data" / "deepness-testdata" / "dummy_fotomap_small.tif"

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


def run_child(mode: str, params: Json, env: dict[str, str] | None = None) -> ChildRun:
    """Run this script in ``--child MODE`` in a fresh interpreter; return its result and peak RSS."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--params", json.dumps(params)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
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
    print(f"  CPU: {cpu_name()} ({os.cpu_count()} logical cores, {info['physical_cores']} physical; bf16: "
          f"{info['bf16']}); onnxruntime {info['onnxruntime']}; rasterio {info['rasterio']} / GDAL {info['gdal']}")
    print(f"  device: {info['device']}")
    print(f"  GDAL_CACHEMAX: {info['gdal_cachemax']}; python {platform.python_version()}; "
          f"predict defaults: {info['predict_defaults']}")
    quick = " (--quick)" if args.quick else ""
    print(f"  input: {ORTHO.name} mirror-tiled to {sizes[0]} and {sizes[1]} px square{quick}; "
          f"tile {TILE}, overlap {OVERLAP}; workdir {args.workdir_path}")
    load = load_average()
    if load is not None:
        busy = " (other work on this machine will skew the timings)" if load > 0.5 else ""
        print(f"  load average (1 min) before the runs: {load:.2f}{busy}")
    print()


def memory_runs(work: Path, ckpt: Path, rasters: list[Path], device: str, label: str) -> Json:
    """Peak RSS of the baseline, one-batch and predict children for one model; return the figures."""
    base = run_child("baseline", {"ckpt": str(ckpt), "device": device})
    fwd = run_child("forward", {"ckpt": str(ckpt), "device": device})
    print(f"  {label}: baseline (imports, model, engine) ru_maxrss {fmt_mib(base.maxrss_mib)} MiB; one batch of "
          f"{fwd.result['batch']}: {fmt_mib(fwd.maxrss_mib)} MiB; engine {base.result['engine']}")
    runs: list[Json] = []
    for k, raster in enumerate(rasters):
        peaks: list[float] = []
        for _ in range(SMALL_MEMORY_RUNS if k == 0 else 1):
            out = work / f"pred_{raster.stem}.tif"
            run = run_child("predict", {"raster": str(raster), "ckpt": str(ckpt), "device": device, "out": str(out)})
            out.unlink(missing_ok=True)
            r = run.result
            peaks.append(run.maxrss_mib)
            print(f"  {label} predict {r['width']}x{r['height']}: {r['tiles']} tiles in {r['seconds']:.1f} s, "
                  f"ru_maxrss {fmt_mib(run.maxrss_mib)} MiB (VmHWM {fmt_mib(r['vmhwm_mib'])})")
        runs.append({"size": r["width"], "tiles": r["tiles"], "peak": statistics.median(peaks),
                     "added": statistics.median(peaks) - base.maxrss_mib})
    return {"baseline": base.maxrss_mib, "forward": fwd.maxrss_mib, "batch": fwd.result["batch"], "runs": runs,
            "engine": base.result["engine"]}


def memory_section(work: Path, ckpts: Json, rasters: tuple[Path, Path], device: str, full: bool) -> Json:
    """(a): absolute peak with the real model, growth with the raster; return the figures."""
    print("(a) peak memory at predict's defaults, one fresh process per run")
    speed = memory_runs(work, Path(ckpts["speed_ckpt"]), list(rasters) if full else [rasters[0]], device, SPEED_MODEL)
    tiny = memory_runs(work, Path(ckpts["memory_ckpt"]), list(rasters), device, MEMORY_MODEL)
    small, large = tiny["runs"]
    ratio = large["peak"] / small["peak"]
    print(f"  {MEMORY_MODEL} ratio {large['size']}/{small['size']} peak RSS: {ratio:.2f} (goal <= {MEMORY_GOAL}); "
          f"{SPEED_MODEL} at {speed['runs'][0]['size']}: {fmt_mib(speed['runs'][0]['peak'])} MiB "
          f"(goal <= {MEMORY_GOAL_MIB:,.0f} MiB = 0.8 GB)")
    if full:
        full_ratio = speed["runs"][1]["peak"] / speed["runs"][0]["peak"]
        print(f"  {SPEED_MODEL} ratio {large['size']}/{small['size']}: {full_ratio:.2f}")
    print()
    return {"speed": speed, "tiny": tiny, "ratio": ratio}


def speed_section(ckpt: Path, raster: Path, device: str, repeat: int) -> Json:
    """(b): bare engine forward vs end-to-end predict in one child, same predictor; return the figures."""
    load = load_average()
    print(f"(b) throughput, {SPEED_MODEL} ({N_CLASSES} classes), tile {TILE}, overlap {OVERLAP}, defaults otherwise, "
          f"best of {repeat}" + ("" if load is None else f"; load average now {load:.2f}"))
    run = run_child("speed", {"raster": str(raster), "ckpt": str(ckpt), "device": device, "repeat": repeat,
                              "out": str(raster.with_name(f"speed_{raster.stem}.tif"))})
    r = run.result
    print(f"  engine: {r['engine']}, batch {r['batch']}; precision {r['precision']}")
    for key, label in (("bare", "bare forward"), ("e2e", "predict end to end")):
        m = r[key]
        print(f"  {label:20s} {r['tiles']:4d} tiles {r['mpx']:6.2f} Mpx  CPU {m['cpu_seconds']:6.2f} s "
              f"({m['cpu_seconds'] / r['tiles']:.3f} CPU-s/tile, {r['mpx'] / m['cpu_seconds']:.3f} Mpx/CPU-s)  "
              f"wall {m['seconds']:6.2f} s (all: {', '.join(f'{s:.2f}' for s in m['all'])})")
    ratio = r["bare"]["cpu_seconds"] / r["e2e"]["cpu_seconds"]
    vs_deepness = DEEPNESS_CPU_S_PER_TILE * r["tiles"] / r["e2e"]["cpu_seconds"]
    print(f"  end-to-end / bare, Mpx per CPU-second: {ratio:.3f} (goal >= {SPEED_GOAL}); against Deepness "
          f"({DEEPNESS_CPU_S_PER_TILE} CPU-s per tile, issue #15): {vs_deepness:.2f}x (goal >= 2)")
    print()
    return {**r, "ratio": ratio, "vs_deepness": vs_deepness}


def first_tile_env(work: Path, tree: Path) -> dict[str, str]:
    """The environment of a start-to-first-tile child: ``tree``'s code, with its bytecode cached.

    An installed package has its modules compiled (pip compiles them; Python caches them at first import).
    A shell with ``PYTHONDONTWRITEBYTECODE`` set (as some sandboxes and CI images are) would compile the
    project's modules again in every run (0.16 CPU-s here), so the children keep their bytecode in
    ``WORKDIR/pycache`` instead (warmed by one run that is not counted).
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    env["PYTHONPATH"] = str(tree)
    return env


def first_tile_section(ckpt: Path, raster: Path, device: str, repeat: int, work: Path,
                       against: Path | None = None) -> Json:
    """(c): wall seconds from starting ``fastunet-geo predict`` to the first tile's probabilities (median of N).

    With ``against`` (another checkout of fastunet-geo), its runs alternate with this tree's, so that both
    see the same load; the figures of both are printed.
    """
    trees = {"this tree": REPO} | ({f"against {against}": against} if against is not None else {})
    params = {"raster": str(raster), "ckpt": str(ckpt), "device": device,
              "out": str(raster.with_name(f"first_{raster.stem}.tif"))}
    runs: dict[str, list[tuple[float, Json]]] = {name: [] for name in trees}
    loads = []
    for k in range(repeat + 1):  # the first round warms the bytecode and page caches: not counted
        for name, tree in trees.items():
            t0 = time.time()
            run = run_child("first_tile", params, first_tile_env(work, tree))
            if k:
                runs[name].append((t0, run.result))
        loads.append(load_average())
    figures: Json = {}
    busy = [x for x in loads if x is not None]
    print(f"(c) start to first tile (`fastunet-geo predict` in a fresh python, defaults, cache warm; goal <= "
          f"{FIRST_TILE_GOAL} s), {repeat} runs" + (" of each tree, alternating" if against else "")
          + (f"; load average {min(busy):.1f} to {max(busy):.1f}" if busy else ""))
    for name, results in runs.items():
        times = [r["first_tile_at"] - t0 for t0, r in results]
        cpus = [r["first_tile_cpu"] for _, r in results]
        median = statistics.median(times)
        t0, r = min(results, key=lambda tr: abs(tr[1]["first_tile_at"] - tr[0] - median))
        stages = ", ".join(f"{label} {at - t0:.2f}" for label, at in r["marks"].items())
        print(f"  {name}: median {median:.2f} s wall (all: {', '.join(f'{t:.2f}' for t in times)}; best "
              f"{min(times):.2f}); CPU seconds of the process by then: median {statistics.median(cpus):.2f} "
              f"(all threads; moves less with the load)")
        print(f"    stages of the median run, seconds from the start: {stages}, first tile "
              f"{r['first_tile_at'] - t0:.2f}; heavy modules imported: {', '.join(r['heavy']) or 'none'}")
        figures[name] = {"seconds": median, "all": times, "best": min(times), "cpu": statistics.median(cpus),
                         "torch": r["torch"]}
    print()
    return figures["this tree"] | {"trees": figures}


def print_table(info: Json, mem: Json, speed: Json, first: Json) -> None:
    """Print a compact Markdown summary, ready to paste into a README."""
    load = load_average()
    print("Summary (Markdown):")
    print()
    print(f"CPU: {cpu_name()} ({info['physical_cores']} cores, {info['bf16']}), engine {speed['engine']}, "
          f"batch {speed['batch']}, onnxruntime {info['onnxruntime']}, GDAL {info['gdal']}; load average after "
          f"the runs {load if load is None else round(load, 2)}")
    print()
    print("| goal | measured | goal value |")
    print("|---|---:|---:|")
    sm = mem["speed"]["runs"]
    print(f"| Mpx per CPU-second, predict end to end ({speed['tiles']} tiles) | "
          f"{speed['mpx'] / speed['e2e']['cpu_seconds']:.3f} ({speed['vs_deepness']:.2f}x Deepness) | >= 2x |")
    print(f"| same, bare forward on the same engine and tiles | {speed['mpx'] / speed['bare']['cpu_seconds']:.3f} "
          f"| |")
    print(f"| end to end / bare | {speed['ratio']:.3f} | >= {SPEED_GOAL} |")
    print(f"| peak RSS predict {sm[0]['size']}^2 ({SPEED_MODEL}) | {fmt_mib(sm[0]['peak'])} MiB | "
          f"<= {MEMORY_GOAL_MIB:,.0f} MiB |")
    if len(sm) > 1:
        print(f"| peak RSS predict {sm[1]['size']}^2 ({SPEED_MODEL}) | {fmt_mib(sm[1]['peak'])} MiB "
              f"({sm[1]['peak'] / sm[0]['peak']:.2f}x) | <= {MEMORY_GOAL}x |")
    t = mem["tiny"]["runs"]
    print(f"| peak RSS {t[1]['size']}^2 / {t[0]['size']}^2 ({MEMORY_MODEL}: {fmt_mib(t[1]['peak'])} / "
          f"{fmt_mib(t[0]['peak'])} MiB) | {mem['ratio']:.2f}x | <= {MEMORY_GOAL}x |")
    print("| start to first tile, `fastunet-geo predict`, wall, median (CPU seconds of the process by then) | "
          f"{first['seconds']:.2f} s "
          f"({first['cpu']:.2f} CPU-s) | <= {FIRST_TILE_GOAL} s |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--quick", action="store_true", help="smaller rasters (1024 and 4096 px) for a fast check")
    p.add_argument("--workdir", type=Path, default=None,
                   help="folder for generated rasters and checkpoints (kept, reused); default: a temp dir")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="device to run the models on")
    p.add_argument("--agreement", action="store_true",
                   help=f"record {SPEED_MODEL}'s and {MEMORY_MODEL}'s bf16 plan and agreement on the orthophoto "
                        "first (as init --agreement-tiles does), so that --precision auto may pick bf16")
    p.add_argument("--full", action="store_true", help=f"also run {SPEED_MODEL} at the large size (slow)")
    p.add_argument("--first-tile-only", action="store_true",
                   help="measure only (c), start to first tile (the small raster only; no table)")
    p.add_argument("--against", type=Path, default=None,
                   help="(c) also for this other checkout of fastunet-geo (e.g. the commit before a change), "
                        "its runs alternating with this tree's")
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
    generate = sizes[:1] if args.first_tile_only else sizes
    tmp = None if args.workdir else tempfile.mkdtemp(prefix="fastunet_bench_")
    work = Path(args.workdir or tmp or ".").resolve()
    work.mkdir(parents=True, exist_ok=True)
    args.workdir_path = work
    try:
        rasters = tuple(work / f"ortho_{s}.tif" for s in sizes)
        gens = [run_child("generate", {"path": str(path), "size": size}).result
                for size, path in zip(generate, rasters, strict=False)]
        models = run_child("models", {"dir": str(work), "device": args.device, "agreement": args.agreement,
                                      "raster": str(rasters[0])}).result
        print_header(models, args, sizes)
        for size, path, gen in zip(generate, rasters, gens, strict=False):
            what = "reused" if gen["reused"] else f"generated in {gen['seconds']:.1f} s"
            print(f"input {path.name}: {size}x{size}x3 uint8, deflate, 512 tiles, "
                  f"{gen['bytes'] / 2**20:,.1f} MiB on disk ({what})")
        for arch, plan in models["agreement"].items():
            print(f"{arch}: bf16 class agreement with fp32 on the orthophoto {plan} (recorded)")
        print()
        first = first_tile_section(Path(models["speed_ckpt"]), rasters[0], args.device, args.repeat, work,
                                   args.against)
        if args.first_tile_only:
            return
        speed = speed_section(Path(models["speed_ckpt"]), rasters[0], args.device, args.repeat)
        mem = memory_section(work, models, (rasters[0], rasters[1]), args.device, args.full)
        print_table(models, mem, speed, first)
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
    """Write the two checkpoints (if missing), fill the ONNX cache, and report the set-up."""
    import onnxruntime
    import rasterio
    import torch
    from rasterio._env import get_gdal_config  # only to print the effective block cache size

    from fastunet_core.inference.predict import PredictOptions, Predictor
    from fastunet_core.models.checkpoint import load_checkpoint, save_checkpoint
    from fastunet_core.models.model_init import InitRequest, init_checkpoint
    from fastunet_core.runtime.cpu import bf16_support, physical_cores
    from fastunet_core.runtime.device import resolve_device

    work = Path(params["dir"])
    paths, agreement = {}, {}
    for arch in (MEMORY_MODEL, SPEED_MODEL):
        path = work / f"{arch}_c{N_CLASSES}.safetensors"
        if not path.exists():
            init_checkpoint(InitRequest(architecture=arch, classes=N_CLASSES, tile_size_px=TILE,
                                        overlap_px=OVERLAP), path)
            loaded = load_checkpoint(path)  # BatchNorm statistics as after training: a map that varies
            torch.manual_seed(0)
            with torch.no_grad():
                for m in loaded.torch_model().modules():
                    if isinstance(m, torch.nn.BatchNorm2d) and m.running_mean is not None and m.running_var is not None:
                        m.running_mean.uniform_(-0.5, 0.5)
                        m.running_var.uniform_(0.5, 2.0)
            save_checkpoint(path, loaded.torch_model(), loaded.meta, overwrite=True)
        if params["agreement"]:  # both models: the growth with the raster is then measured on the bf16 path too
            from fastunet_core.inference.precision import record_agreement_from_rasters

            agreed = work / f"{arch}_c{N_CLASSES}_agreed.safetensors"
            shutil.copyfile(path, agreed)
            agreement[arch] = record_agreement_from_rasters(agreed, [params["raster"]]).describe()
            path = agreed
        paths[arch] = str(path)
        Predictor(path, PredictOptions(device=params["device"]))  # the export goes to the cache, as on a first run
    device = resolve_device(params["device"])
    d = PredictOptions()
    return {"memory_ckpt": paths[MEMORY_MODEL], "speed_ckpt": paths[SPEED_MODEL], "agreement": agreement,
            "onnxruntime": onnxruntime.__version__, "rasterio": rasterio.__version__,
            "gdal": rasterio.__gdal_version__, "device": device.describe(), "physical_cores": physical_cores(),
            "bf16": bf16_support().describe(), "gdal_cachemax": _cache_size(get_gdal_config("GDAL_CACHEMAX")),
            "predict_defaults": f"engine {d.engine}, precision {d.precision}, batch {d.batch_size or 'auto'}, "
                                f"blend {d.blend}, prefetch {d.prefetch}"}


def _cache_size(value: object) -> str:
    """Describe GDAL's block cache size (rasterio reports bytes; GDAL also takes MiB or a % of RAM)."""
    if value is None:
        return "GDAL default (5% of RAM)"
    text = str(value)
    if text.endswith("%"):
        return f"{text} of RAM"
    n = int(text)
    return f"{n // 2**20 if n > 100_000 else n} MiB"


def ortho_block(ortho: Any, row0: int, rows: int, size: int) -> Any:
    """Return (3, rows, size) uint8 rows ``row0..row0+rows`` of ``ortho`` (3, h, w) mirror-tiled.

    Mirror tiling (flip at every edge: ``abcba...``) keeps the image continuous across the repeats, so
    nothing in the tiles looks unlike a real orthophoto (no seams for the model to fire on).
    """
    import numpy as np

    _, h, w = ortho.shape
    ys = np.arange(row0, row0 + rows) % (2 * h)
    ys = np.where(ys < h, ys, 2 * h - 1 - ys)
    xs = np.arange(size) % (2 * w)
    xs = np.where(xs < w, xs, 2 * w - 1 - xs)
    return ortho[:, ys][:, :, xs]


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
    with rasterio.open(ORTHO) as src:
        ortho = src.read((1, 2, 3))
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8",
               "crs": "EPSG:32633", "transform": from_origin(638_000.0, 5_803_000.0, 0.1, 0.1),
               "tiled": True, "blockxsize": TILE, "blockysize": TILE, "compress": "deflate", "predictor": 2,
               "interleave": "pixel", "num_threads": "ALL_CPUS", "bigtiff": "if_safer"}
    tmp = path.with_name(f".{path.name}.tmp")
    with rasterio.Env(GDAL_CACHEMAX=64 * 2**20), rasterio.open(tmp, "w", **profile) as dst:  # bytes
        for row0 in range(0, size, TILE):
            rows = min(TILE, size - row0)
            dst.write(ortho_block(ortho, row0, rows, size), window=Window(0, row0, size, rows))
    os.replace(tmp, path)
    return {"reused": False, "seconds": time.perf_counter() - t0, "bytes": path.stat().st_size}


def _predictor(params: Json) -> Any:
    from fastunet_core.inference.predict import PredictOptions, Predictor

    opts = PredictOptions(tile_size_px=TILE, overlap_px=OVERLAP, device=params["device"], overwrite=True)
    return Predictor(params["ckpt"], opts)


def _torch_loaded() -> bool:
    return "torch" in sys.modules


def child_baseline(params: Json) -> Json:
    """Build the predictor as predict does (imports, model, engine); nothing else."""
    import rasterio  # noqa: F401 - imported for its memory, like predict does

    p = _predictor(params)
    getattr(p.engine, "session", None)  # an ONNX Runtime session built on a thread of its own: wait for it
    return {"vmhwm_mib": vmhwm_mib(), "engine": p.engine_name, "torch": _torch_loaded()}


def child_forward(params: Json) -> Json:
    """Baseline plus one batch of tiles through the engine: the model's own working memory."""
    import rasterio  # noqa: F401 - imported for its memory, like predict does

    p = _predictor(params)
    p.engine(random_batches(p.loaded.meta, p.batch_size, p.batch_size)[0])
    return {"vmhwm_mib": vmhwm_mib(), "batch": p.batch_size}


def child_predict(params: Json) -> Json:
    """Run ``predict`` once (model loaded by it, as a user would) and report its figures."""
    import rasterio

    res = _predictor(params).run(params["raster"], params["out"])
    with rasterio.open(params["raster"]) as src:
        width, height = src.width, src.height
    return {"width": width, "height": height, "tiles": res.tiles_total, "seconds": res.seconds,
            "vmhwm_mib": vmhwm_mib()}


def child_first_tile(params: Json) -> Json:
    """Run ``fastunet-geo predict`` (the CLI, defaults) until the first tile's probabilities are in.

    The first tile's progress step prints the result and ends the process there (``os._exit``): the time
    from the parent's start of this process, and when each stage began (CLI imported, predictor built,
    ONNX Runtime session ready, tiles started), all from the wall clock the parent also reads.
    """
    marks = {"python up": time.time()}
    import fastunet_core.cli as cli
    import fastunet_core.cli._common as common
    import fastunet_core.inference.predict as predict

    marks["CLI imported"] = time.time()
    init, run_tiles = predict.Predictor.__init__, predict.Predictor._run_tiles

    def timed_init(self: Any, *args: Any, **kwargs: Any) -> None:
        marks["predict command started"] = time.time()
        init(self, *args, **kwargs)
        marks["predictor built"] = time.time()  # since 2026-12: the engine's session may still be on its way

    from fastunet_core.inference import onnx_engine

    build = getattr(onnx_engine.OnnxEngine, "_build", None)  # the session built on a thread of its own
    if build is not None:
        def timed_build(self: Any) -> Any:
            session = build(self)
            marks["ONNX Runtime session ready"] = time.time()
            return session

        onnx_engine.OnnxEngine._build = timed_build  # type: ignore[method-assign]

    def timed_run_tiles(self: Any, *args: Any, **kwargs: Any) -> Any:
        marks["raster opened, outputs created"] = time.time()
        return run_tiles(self, *args, **kwargs)

    def first_tile(self: Any, n: float = 1) -> None:
        at, t = time.time(), os.times()
        heavy = sorted(m for m in ("torch", "onnx", "geopandas", "pandas", "shapely", "pyogrio") if m in sys.modules)
        result = {"first_tile_at": at, "first_tile_cpu": t.user + t.system, "torch": "torch" in sys.modules,
                  "heavy": heavy, "marks": marks}
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        os._exit(0)

    predict.Predictor.__init__ = timed_init  # type: ignore[method-assign]
    predict.Predictor._run_tiles = timed_run_tiles  # type: ignore[method-assign]
    common.BarProgress.advance = first_tile  # type: ignore[method-assign]
    sys.argv = ["fastunet-geo", "predict", params["raster"], "-m", params["ckpt"], "-o", params["out"], "--tile",
                str(TILE), "--overlap", str(OVERLAP), "--device", params["device"], "--overwrite"]
    cli.main()
    raise RuntimeError("predict ended before its first tile")


def random_batches(meta: Any, n_tiles: int, batch: int) -> list[Any]:
    """Return normalised random uint8 input for ``n_tiles`` tiles, ``batch`` per batch (last partial)."""
    import numpy as np

    rng = np.random.default_rng(0)
    sizes = [min(batch, n_tiles - i) for i in range(0, n_tiles, batch)]
    return [np.ascontiguousarray(meta.input.normalise(
        rng.integers(0, 256, size=(meta.input.n_bands, k, TILE, TILE), dtype=np.uint8)).transpose(1, 0, 2, 3))
        for k in sizes]


def child_speed(params: Json) -> Json:
    """Time the bare engine forward and ``predict`` end to end on one predictor, in this one process."""
    import rasterio

    from fastunet_core.tiling.grid import TileGrid

    predictor = _predictor(params)
    with rasterio.open(params["raster"]) as src:
        width, height = src.width, src.height
    n_tiles = TileGrid.for_raster(width, height, TILE, OVERLAP).n_tiles
    engine = predictor.engine
    batches = random_batches(predictor.loaded.meta, n_tiles, predictor.batch_size)
    engine(batches[0])  # warm-up

    def run_bare() -> None:
        for b in batches:
            engine(b)

    def run_e2e() -> None:
        res = predictor.run(params["raster"], params["out"])
        if res.tiles_total != n_tiles or res.tiles_skipped:
            raise RuntimeError(f"predict ran {res.tiles_total} tiles ({res.tiles_skipped} skipped), "
                               f"expected {n_tiles}")

    times: dict[str, list[tuple[float, float]]] = {"bare": [], "e2e": []}
    for _ in range(int(params["repeat"])):  # interleaved, so slow spells of a shared machine hit both
        times["bare"].append(timed(run_bare))
        times["e2e"].append(timed(run_e2e))
    Path(params["out"]).unlink(missing_ok=True)
    out: Json = {"width": width, "height": height, "tiles": n_tiles, "mpx": width * height / 1e6,
                 "engine": predictor.engine_name, "batch": predictor.batch_size,
                 "precision": f"{predictor.precision.precision} ({predictor.precision.reason})"}
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
               "forward": child_forward, "predict": child_predict, "speed": child_speed,
               "first_tile": child_first_tile}


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
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as fastunet-geo predict sets it (a bf16 run uses torch)
    args = parse_args(argv)
    if args.child:
        run_child_mode(args.child, args.params)
    else:
        run_benchmark(args)


if __name__ == "__main__":
    main()
