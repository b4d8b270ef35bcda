#!/usr/bin/env python
"""Benchmark ``fastunet_core.polygons.vectorize.vectorize_raster`` against GDAL's own ``gdal_polygonize``.

Run on demand (not a test)::

    env -u PROJ_DATA -u PROJ_LIB .venv/bin/python bench/bench_vectorize.py [--sizes 5000,10000,20000]
        [--compare-size 10000] [--workdir DIR] [--window 2048] [--workers 2] [--no-gdal] [--whole]

Input: a generated class map per size (uint8, five blobby classes, no background, tiled 512 and
deflate-compressed, a ``CLASSES`` tag like ``predict`` writes): the argmax of five smooth random fields,
each a sum of eight plane waves with periods of 20 to 72 px. A 10,000 x 10,000 map holds about 260,000
4-connected polygons. Generated block row by block row, reused when already in ``--workdir``.

Measured, each in a fresh process, both writing a GeoPackage of every class (4-connectivity):

- ``ours``: ``vectorize_raster`` in one process on every size (peak memory should stay flat as the raster
  grows), and with ``--workers`` worker processes (default 2) on the comparison size (10,000);
- ``gdal_polygonize``: Debian's ``gdal_polygonize.py`` on the comparison size;
- ``--whole``: whole-raster ``rasterio.features.shapes`` + a GeoDataFrame written by pyogrio (what one
  writes without windows) on the comparison size.

Peak memory: each measured command runs as the only child of a small probe process (this script with
``--probe``, importing nothing heavy), which reads ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` after
it ends: the peak resident set size of the largest process in that command's tree, exec'd fresh. With
worker processes that understates the total, so the run also reports parent peak + workers x the largest
worker's peak (an upper bound on their sum). Time: the command's wall time, interpreter start and imports
included, as the user sees it, and its CPU time (user + system, all processes): on a shared machine wall
times are noisy, CPU times less so. Feature counts of every output are compared.
Goals: ours <= 0.3x gdal_polygonize's time, peak <= 0.9 GB and flat as the raster grows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULT_PREFIX = "@@BENCH_RESULT "
BLOCK = 512
N_CLASSES = 5
CLASS_NAMES = ("woodland", "water", "building", "road", "field")
CLASS_COLORS = ((51, 160, 44), (31, 120, 180), (227, 26, 28), (120, 120, 120), (255, 237, 111))
WAVES = 8
PERIODS_PX = (20.0, 72.0)
TIME_GOAL = 0.3
MEMORY_GOAL_MIB = 0.9 * 1024

Json = dict[str, Any]


# --------------------------------------------------------------------------------------------- parent side


def cpu_name() -> str:
    """Return the CPU model name (from /proc/cpuinfo where available)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def python_cmd(mode: str, params: Json) -> list[str]:
    """Return the command line that runs this script in ``--child MODE``."""
    return [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--params", json.dumps(params)]


def measure(cmd: list[str]) -> Json:
    """Run ``cmd`` under a fresh probe process; return its wall time, peak RSS (MiB) and child result."""
    probe = [sys.executable, str(Path(__file__).resolve()), "--probe", json.dumps(cmd)]
    out = subprocess.run(probe, check=False, stdout=subprocess.PIPE, text=True)
    probe_result: Json | None = None
    child_result: Json = {}
    for line in out.stdout.splitlines():
        if line.startswith(RESULT_PREFIX + "probe "):
            probe_result = json.loads(line[len(RESULT_PREFIX + "probe "):])
        elif line.startswith(RESULT_PREFIX):
            child_result = json.loads(line[len(RESULT_PREFIX):])
        else:
            print("   ", line)
    if out.returncode != 0 or probe_result is None or probe_result["returncode"] != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)}")
    return {**probe_result, "result": child_result}


def run_child(mode: str, params: Json) -> Json:
    """Run a helper child (not measured) and return its result."""
    return measure(python_cmd(mode, params))["result"]


def gdal_polygonize_cmd() -> list[str]:
    """Return the gdal_polygonize command of this machine (Debian's gdal-bin), or exit with a hint."""
    for name in ("gdal_polygonize.py", "gdal_polygonize"):
        path = shutil.which(name)
        if path:
            return [path]
    raise SystemExit("gdal_polygonize not found; install gdal-bin (apt-get install gdal-bin) or pass --no-gdal")


def print_row(label: str, size: int, m: Json, features: int) -> None:
    """Print one measurement."""
    print(f"  {label:34s} {size:>6d}^2 {m['seconds']:7.1f} s wall {m['cpu_seconds']:7.1f} s CPU "
          f"{m['maxrss_mib']:7,.0f} MiB peak {features:>9,d} features")


def run_benchmark(args: argparse.Namespace) -> None:
    """Generate inputs, run every measurement in fresh processes, print the figures and a summary."""
    sizes = sorted(int(s) for s in args.sizes.split(","))
    tmp = None if args.workdir else tempfile.mkdtemp(prefix="fastunet_vbench_")
    work = Path(args.workdir or tmp or ".").resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        info = run_child("info", {})
        print("fastunet-geo vectorize benchmark")
        print(f"  CPU: {cpu_name()} ({os.cpu_count()} logical cores); load average now "
              f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}; python {platform.python_version()}")
        print(f"  rasterio {info['rasterio']} (GDAL {info['gdal']}), shapely {info['shapely']} (GEOS "
              f"{info['geos']}), pyogrio {info['pyogrio']} (GDAL {info['pyogrio_gdal']}); window {args.window} px")
        rasters = {}
        for size in sizes:
            path = work / f"classes_{size}.tif"
            gen = run_child("generate", {"path": str(path), "size": size})
            what = "reused" if gen["reused"] else f"generated in {gen['seconds']:.1f} s"
            print(f"  input {path.name}: {size} x {size} uint8, {N_CLASSES} classes, "
                  f"{gen['bytes'] / 2**20:,.1f} MiB on disk ({what})")
            rasters[size] = path
        print()
        rows: list[tuple[str, int, Json, int]] = []
        big = args.compare_size if args.compare_size in sizes else sizes[-1]
        runs = [(size, 1) for size in sizes] + ([(big, args.workers)] if args.workers > 1 else [])
        for size, workers in runs:
            out = work / f"ours_{size}_w{workers}.gpkg"
            m = measure(python_cmd("ours", {"raster": str(rasters[size]), "out": str(out), "window": args.window,
                                            "workers": workers}))
            m["maxrss_mib"] = max(m["maxrss_mib"], m["result"]["sum_bound_mib"])
            label = "ours, 1 process" if workers == 1 else f"ours, {workers} worker processes"
            rows.append((label, size, m, m["result"]["features"]))
            print_row(*rows[-1])
        if not args.no_gdal:
            out = work / f"gdal_{big}.gpkg"
            out.unlink(missing_ok=True)
            m = measure([*gdal_polygonize_cmd(), "-q", str(rasters[big]), "-f", "GPKG", str(out), "polygons",
                         "class_id"])
            rows.append(("gdal_polygonize (gdal-bin)", big, m, run_child("count", {"path": str(out)})["features"]))
            print_row(*rows[-1])
        if args.whole:
            out = work / f"whole_{big}.gpkg"
            m = measure(python_cmd("whole", {"raster": str(rasters[big]), "out": str(out)}))
            rows.append(("whole-raster shapes + geopandas", big, m, m["result"]["features"]))
            print_row(*rows[-1])
        print()
        print_summary(rows, big, info)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def print_summary(rows: list[tuple[str, int, Json, int]], big: int, info: Json) -> None:
    """Print the ratios against the goals and a Markdown table for the README."""
    single = {size: m for label, size, m, _ in rows if label == "ours, 1 process"}
    best = min((m for label, size, m, _ in rows if label.startswith("ours") and size == big),
               key=lambda m: m["seconds"])
    gdal = next((m for label, _, m, _ in rows if label.startswith("gdal")), None)
    counts = {n for _, size, _, n in rows if size == big}
    print(f"  same feature count in every {big}^2 output: {'yes' if len(counts) == 1 else f'NO {sorted(counts)}'}")
    if gdal is not None:
        for label, m in (("1 process", single[big]), ("fastest", best)):
            ratio, cpu = m["seconds"] / gdal["seconds"], m["cpu_seconds"] / gdal["cpu_seconds"]
            print(f"  ours ({label}) / gdal_polygonize: wall {ratio:.2f}, CPU {cpu:.2f} (goal <= {TIME_GOAL}: "
                  f"{'OK' if ratio <= TIME_GOAL else 'ABOVE GOAL'})")
    peak = max(m["maxrss_mib"] for label, _, m, _ in rows if label.startswith("ours"))
    print(f"  peak memory of ours: {peak:,.0f} MiB (goal <= {MEMORY_GOAL_MIB:,.0f}: "
          f"{'OK' if peak <= MEMORY_GOAL_MIB else 'ABOVE GOAL'})")
    if len(single) > 1:
        small, large = min(single), max(single)
        growth = single[large]["maxrss_mib"] / single[small]["maxrss_mib"]
        print(f"  peak {large}^2 / {small}^2 (1 process): {growth:.2f} for {large**2 / small**2:.0f}x the pixels")
    print()
    print("Summary (Markdown):")
    print()
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; rasterio {info['rasterio']} / GDAL {info['gdal']}, "
          f"gdal_polygonize from GDAL {info['system_gdal']}")
    print()
    print("| run | raster | features | wall s | CPU s | peak RSS MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, size, m, n in rows:
        print(f"| {label} | {size:,} x {size:,} | {n:,} | {m['seconds']:.1f} | {m['cpu_seconds']:.1f} | "
              f"{m['maxrss_mib']:,.0f} |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--sizes", default="5000,10000,20000",
                   help="raster sides in pixels, comma-separated [5000,10000,20000]")
    p.add_argument("--workdir", type=Path, default=None,
                   help="folder for generated rasters and outputs (kept, rasters reused); default: a temp dir")
    p.add_argument("--compare-size", type=int, default=10000,
                   help="size for the gdal_polygonize / --whole / --workers runs (one of --sizes, else the "
                   "largest) [10000]")
    p.add_argument("--window", type=int, default=2048, help="vectorize window size in pixels [2048]")
    p.add_argument("--workers", type=int, default=2, help="worker processes for the extra run on the largest "
                   "size (1: skip it) [2]")
    p.add_argument("--no-gdal", action="store_true", help="skip gdal_polygonize")
    p.add_argument("--whole", action="store_true", help="also time whole-raster shapes + geopandas")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--params", default="{}", help=argparse.SUPPRESS)
    p.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------- probe side


def probe(cmd_json: str) -> None:
    """Run one command as this process's only child; print its wall time and peak RSS, pass its output on."""
    cmd = json.loads(cmd_json)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, check=False)
    seconds = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # of the one command (and its own children)
    kib = usage.ru_maxrss / 1024 if sys.platform == "darwin" else usage.ru_maxrss  # Linux: KiB
    print(RESULT_PREFIX + "probe " + json.dumps({"seconds": seconds, "maxrss_mib": kib / 1024,
                                                  "cpu_seconds": usage.ru_utime + usage.ru_stime,
                                                  "returncode": done.returncode}), flush=True)


# ---------------------------------------------------------------------------------------------- child side


def child_info(params: Json) -> Json:
    """Report library versions."""
    import pyogrio
    import rasterio
    import shapely

    try:
        system_gdal = subprocess.run(["gdalinfo", "--version"], check=False, capture_output=True, text=True).stdout
    except FileNotFoundError:
        system_gdal = ""
    return {"rasterio": rasterio.__version__, "gdal": rasterio.__gdal_version__, "shapely": shapely.__version__,
            "geos": shapely.geos_version_string, "pyogrio": pyogrio.__version__,
            "pyogrio_gdal": pyogrio.__gdal_version_string__,
            "system_gdal": system_gdal.split(",")[0].replace("GDAL", "").strip() or "(gdalinfo not found)"}


def class_block(size: int, row0: int, rows: int, seed: int = 0) -> Any:
    """Return (rows, size) uint8 class ids ``row0..row0+rows`` of the generated map.

    Class ``c`` wins where its field, a sum of ``WAVES`` plane waves with random direction, period and
    phase, is the largest. ``sin(u x + v y + p) = sin(u x) cos(v y + p) + cos(u x) sin(v y + p)`` makes each
    wave two outer products, so a block costs no trigonometry per pixel and any block can be made alone.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    y = np.arange(row0, row0 + rows, dtype=np.float64)
    x = np.arange(size, dtype=np.float64)
    best = np.full((rows, size), -np.inf, dtype=np.float32)
    out = np.zeros((rows, size), dtype=np.uint8)
    acc = np.empty((rows, size), dtype=np.float32)
    tmp = np.empty((rows, size), dtype=np.float32)
    for c in range(N_CLASSES):
        acc.fill(0)
        for _ in range(WAVES):
            angle, period, phase = rng.uniform(0, np.pi), rng.uniform(*PERIODS_PX), rng.uniform(0, 2 * np.pi)
            u, v = 2 * np.pi / period * np.cos(angle), 2 * np.pi / period * np.sin(angle)
            np.multiply(np.cos(v * y + phase).astype(np.float32)[:, None], np.sin(u * x).astype(np.float32), out=tmp)
            acc += tmp
            np.multiply(np.sin(v * y + phase).astype(np.float32)[:, None], np.cos(u * x).astype(np.float32), out=tmp)
            acc += tmp
        better = acc > best
        out[better] = c
        np.copyto(best, acc, where=better)
    return out


def child_generate(params: Json) -> Json:
    """Write the class map block row by block row (bounded memory), unless a matching one exists."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    path, size = Path(params["path"]), int(params["size"])
    t0 = time.perf_counter()
    if path.exists():
        with rasterio.open(path) as src:
            if (src.width, src.height, src.dtypes[0], src.tags().get("BENCH_GENERATOR")) == (size, size, "uint8",
                                                                                          generator_id()):
                return {"reused": True, "seconds": 0.0, "bytes": path.stat().st_size}
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 1, "dtype": "uint8", "nodata": 255,
               "crs": "EPSG:32633", "transform": from_origin(500_000.0, 5_600_000.0, 0.5, 0.5), "tiled": True,
               "blockxsize": BLOCK, "blockysize": BLOCK, "compress": "deflate", "bigtiff": "if_safer"}
    classes = [{"id": i, "name": n, "color": list(c)} for i, (n, c) in enumerate(zip(CLASS_NAMES, CLASS_COLORS,
                                                                                     strict=True))]
    tmp = path.with_name(f".{path.name}.tmp")
    with rasterio.Env(GDAL_CACHEMAX=64), rasterio.open(tmp, "w", **profile) as dst:
        for row0 in range(0, size, BLOCK):
            rows = min(BLOCK, size - row0)
            dst.write(class_block(size, row0, rows), 1, window=Window(0, row0, size, rows))
        dst.update_tags(CLASSES=json.dumps(classes), BENCH_GENERATOR=generator_id())
    os.replace(tmp, path)
    return {"reused": False, "seconds": time.perf_counter() - t0, "bytes": path.stat().st_size}


def generator_id() -> str:
    """Identify the generator's parameters, so that a stale input is made again."""
    return f"waves{WAVES}-periods{PERIODS_PX[0]:g}-{PERIODS_PX[1]:g}-classes{N_CLASSES}-seed0"


def child_ours(params: Json) -> Json:
    """Vectorise with ``vectorize_raster`` (every class, GeoPackage); report own and workers' peaks."""
    from fastunet_core.polygons.vectorize import VectorizeOptions, vectorize_raster

    opts = VectorizeOptions(window_px=int(params["window"]), workers=int(params["workers"]), overwrite=True)
    res = vectorize_raster(params["raster"], params["out"], opts)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest worker's peak
    return {"features": res.features, "seconds": res.seconds, "own_mib": own, "worker_mib": workers,
            "sum_bound_mib": own + opts.workers * workers if opts.workers > 1 else own}


def child_whole(params: Json) -> Json:
    """Vectorise the whole raster in one go: rasterio shapes -> GeoDataFrame -> GeoPackage (no windows)."""
    import geopandas as gpd
    import rasterio
    from rasterio.features import shapes
    from shapely.geometry import shape

    with rasterio.open(params["raster"]) as src:
        data = src.read(1)
        found = [(shape(g), int(v)) for g, v in shapes(data, mask=data != src.nodata, transform=src.transform)]
        crs = src.crs.to_wkt()
    frame = gpd.GeoDataFrame({"class_id": [v for _, v in found]}, geometry=[g for g, _ in found], crs=crs)
    frame["area_m2"] = frame.area
    frame.to_file(params["out"], driver="GPKG", layer="polygons")
    return {"features": len(frame)}


def child_count(params: Json) -> Json:
    """Count the features of an output."""
    import pyogrio

    return {"features": int(pyogrio.read_info(params["path"])["features"])}


CHILD_MODES = {"info": child_info, "generate": child_generate, "ours": child_ours, "whole": child_whole,
               "count": child_count}


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark (or, with the hidden ``--child``/``--probe``, one step of it)."""
    # rasterio's wheel brings its own PROJ: a PROJ_DATA/PROJ_LIB pointing at the system's breaks EPSG lookups.
    os.environ.pop("PROJ_DATA", None)
    os.environ.pop("PROJ_LIB", None)
    args = parse_args(argv)
    if args.probe:
        probe(args.probe)
    elif args.child:
        result = CHILD_MODES[args.child](json.loads(args.params))
        print(RESULT_PREFIX + json.dumps(result), flush=True)
    else:
        run_benchmark(args)


if __name__ == "__main__":
    main()
