#!/usr/bin/env python
"""Choose ONNX Runtime's session options for streaming inference by measurement.

    env -u PROJ_DATA -u PROJ_LIB .venv/bin/python bench/bench_onnx_options.py [--model unet_skinny] [--tiles 8]

unet_skinny (5 classes, BatchNorm statistics as after training) is exported once; then every combination
of CPU memory arena on/off, memory-pattern planning on/off, spinning pool threads on/off, intra-op threads
(``--threads``) and batch size (``--batches``) runs ``--tiles`` 512 x 512 tiles in a fresh process that
imports only numpy and onnxruntime. Each child reports its CPU seconds per tile (after one warm-up batch)
and its peak RSS (VmHWM). The load average is printed with the figures: this machine is shared.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHILD = r"""
import json, os, sys, time
import numpy as np
from fastunet_core.inference.onnx_engine import OnnxEngine
path, arena, pattern, spin = sys.argv[1], sys.argv[2] == "1", sys.argv[3] == "1", sys.argv[4] == "1"
threads, batch, tiles = map(int, sys.argv[5:])
engine = OnnxEngine(path, threads=threads, arena=arena, mem_pattern=pattern, spinning=spin)
x = np.random.default_rng(0).standard_normal((batch, 3, 512, 512), dtype=np.float32)
engine(x)
c0, t0 = time.process_time(), time.perf_counter()
for _ in range(max(1, tiles // batch)):
    engine(x)
n = max(1, tiles // batch) * batch
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
cpu, wall = time.process_time() - c0, time.perf_counter() - t0
print("@@" + json.dumps({"cpu_per_tile": cpu / n, "wall_per_tile": wall / n, "peak_mib": hwm / 1024}))
sys.stdout.flush()
os._exit(0)
"""


def export(model: str, folder: Path) -> Path:
    """Export a trained-like model once (this parent imports torch; the children do not)."""
    from bench_cpu_path import trained_like  # the benches' model with non-trivial BatchNorm statistics

    from fastunet_core.models.onnx_export import export_onnx

    path = folder / f"{model}.onnx"
    export_onnx(trained_like(model), 3, 512, path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="unet_skinny")
    ap.add_argument("--tiles", type=int, default=8)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--batches", default="1,2,4")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = export(args.model, Path(tmp))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        print(f"load before: {os.getloadavg()}")
        print("| arena | mem pattern | spinning | threads | batch | CPU s/tile | wall s/tile | peak RSS MiB |")
        print("|---|---|---|---:|---:|---:|---:|---:|")
        combos = itertools.product(map(int, args.batches.split(",")), map(int, args.threads.split(",")), (0, 1),
                                   (0, 1), (0, 1))
        for batch, threads, spin, arena, pattern in combos:
            out = subprocess.run([sys.executable, "-c", CHILD, str(path), str(arena), str(pattern), str(spin),
                                  str(threads), str(batch), str(args.tiles)], env=env, capture_output=True, text=True,
                                 check=True)
            r = json.loads(next(x for x in out.stdout.splitlines() if x.startswith("@@"))[2:])
            on = {0: "off", 1: "on"}
            print(f"| {on[arena]} | {on[pattern]} | {on[spin]} | {threads} | {batch} | "
                  f"{r['cpu_per_tile']:.3f} | {r['wall_per_tile']:.3f} | {r['peak_mib']:.0f} |", flush=True)
        print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
