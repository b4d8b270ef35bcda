#!/usr/bin/env python
"""Benchmark the peak memory of ``vectorize --dissolve`` on class maps with millions of regions.

Run on demand (not a test)::

    env -u PROJ_DATA -u PROJ_LIB .venv/bin/python bench/bench_dissolve.py [--sizes 8000 16000] [--cell 8]

For each size, a class map of ``cell`` x ``cell`` px random cells of 4 classes (about size^2 / cell^2 * 0.6
regions: neighbouring cells of one class join) is written once; then the CLI vectorises it with and without
``--dissolve`` (GeoPackage, default workers), each in a fresh process whose peak resident memory
(``ru_maxrss`` of the vectorising process itself, the worker processes not counted) is reported together
with the time, the regions and the output size. The dissolved output is one multipolygon per class, so
its largest feature bounds what GDAL itself must hold while writing it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyogrio
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

REPO = Path(__file__).resolve().parent.parent
CLASSES = [{"id": 0, "name": "background", "color": [0, 0, 0]}, {"id": 1, "name": "building", "color": [227, 26, 28]},
           {"id": 2, "name": "water", "color": [31, 120, 180]}, {"id": 3, "name": "woodland", "color": [51, 160, 44]}]
# the child runs the CLI in its own process and reports its own peak memory (not the workers')
CHILD = ("import resource, sys\n"
         "from fastunet_core.cli import cli\n"
         "try:\n    cli(sys.argv[1:], prog_name='fastunet-geo')\n"
         "except SystemExit as e:\n    code = e.code\n"
         "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
         "sys.exit(code or 0)\n")


def make_map(path: Path, size: int, cell: int) -> None:
    """Write a size x size map of random cell x cell px cells (4 classes, EPSG:32633, 0.5 m), in strips."""
    if path.exists():
        return
    rng = np.random.default_rng(0)
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 1, "dtype": "uint8", "crs": "EPSG:32633",
               "transform": from_origin(500000, 5000000, 0.5, 0.5), "nodata": 255, "tiled": True,
               "blockxsize": 512, "blockysize": 512, "compress": "deflate"}
    strip = 512 // cell * cell
    with rasterio.open(path, "w", **profile) as dst:
        for y in range(0, size, strip):
            h = min(strip, size - y)
            cells = rng.integers(0, 4, (-(-h // cell), -(-size // cell)), dtype=np.uint8)
            data = np.kron(cells, np.ones((cell, cell), np.uint8))[:h, :size]
            dst.write(data, 1, window=Window(0, y, size, h))
        dst.update_tags(CLASSES=json.dumps(CLASSES))


def run(mask: Path, out: Path, dissolve: bool) -> tuple[float, float, str]:
    """Vectorise in a fresh process; return its peak memory (MiB), the wall time (s) and its stderr."""
    args = [sys.executable, "-c", CHILD, "-q", "vectorize", str(mask), "-o", str(out), "--overwrite"]
    args += ["--dissolve"] if dissolve else []
    env = dict(os.environ, PYTHONPATH=str(REPO))
    t0 = time.perf_counter()
    r = subprocess.run(args, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"vectorize failed: {r.stderr}")
    peak_kb = next(int(line.split()[1]) for line in r.stderr.splitlines() if line.startswith("PEAK_KB"))
    return peak_kb / 1024, seconds, r.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8000, 16000])
    parser.add_argument("--cell", type=int, default=8)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "fastunet-bench-dissolve")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"cells of {args.cell} px")
    print("| size | regions | one polygon per region: peak RSS, time | dissolved: peak RSS, time | dissolved file |")
    print("|---|---|---|---|---|")
    for size in args.sizes:
        mask = args.workdir / f"cells{size}_{args.cell}.tif"
        make_map(mask, size, args.cell)
        regions_out, dissolved_out = args.workdir / "regions.gpkg", args.workdir / "dissolved.gpkg"
        peak, t, _ = run(mask, regions_out, dissolve=False)
        regions = pyogrio.read_info(regions_out)["features"]
        peak_d, t_d, _ = run(mask, dissolved_out, dissolve=True)
        print(f"| {size} x {size} | {regions:,} | {peak:,.0f} MiB, {t:.0f} s | {peak_d:,.0f} MiB, {t_d:.0f} s | "
              f"{dissolved_out.stat().st_size / 2**20:,.0f} MiB |", flush=True)


if __name__ == "__main__":
    main()
