#!/usr/bin/env python
"""Faster-than-fp32 CPU paths (static int8, bf16, bf16 with fp32 layers) against fp32, on trained models and real tiles.

    env -u PROJ_DATA -u PROJ_LIB .venv/bin/python bench/bench_int8.py \\
        --case demo=out/demo/run/best.safetensors@data/samples/spacenet_atlanta_pan.tif \\
        --case loveda=RUN/best.safetensors@LOVEDA/0.png,LOVEDA/1.png+OEM/adelaide_2.tif \\
        [--json bench/results/int8_<date>.json]

Each case: a trained checkpoint and real rasters. Tiles of the model's own tile size (what ``predict`` uses)
are cut on a regular grid from the rasters before ``+``; every fourth one (spread over the rasters) is a
calibration tile, the others are held out; the rasters after ``+`` are held out whole (a scene the
calibration never saw). Paths, all in this process on the same tiles, batch 1 (``predict``'s CPU batch):

- ONNX Runtime fp32: the checkpoint's export, run by the engine ``predict`` uses;
- the default path: what ``predict --precision auto`` builds for this checkpoint on this CPU
  (:func:`choose_precision` and :func:`make_engine`; bf16 PyTorch where the recorded agreement allows it);
- PyTorch bf16 (BatchNorm folded, channels_last), whatever auto chose;
- PyTorch bf16 with a few layers in fp32: the plan :func:`plan_bf16` chooses on the calibration tiles (what
  training and ``init --agreement-tiles`` record), run by the engine ``predict`` builds for it; the default
  path is built from a copy of the checkpoint with this plan recorded, so it shows what ``auto`` then runs;
- PyTorch fp32 (folded, channels_last), and the same with oneDNN's implicit bf16 for fp32 convolutions
  (``torch.backends.mkldnn.conv.fp32_precision = "bf16"``: fp32 tensors, bf16 products); ``fpmath_probe``
  asks oneDNN (``ONEDNN_VERBOSE``) which kernel a convolution then runs and measures its error;
- ONNX Runtime static int8: ``quant_pre_process``, then ``quantize_static`` in QDQ format, int8 weights per
  output channel, uint8 activations calibrated (``--calibration``: MinMax, Percentile, ...) on the
  calibration tiles; run by the same engine class as fp32.

Every path is called as ``predict`` calls its engine: a (1, bands, H, W) float32 tile in, probabilities out.

Speed: megapixels per CPU-second (process CPU time, all threads) over ``--speed-tiles`` held-out tiles at the
model's tile size and at 512 px, median of ``--rounds`` rounds taken round-robin over the paths, so a
change in the machine's load falls on all of them alike. Agreement: share of pixels whose argmax class equals
fp32's, over all held-out tiles (never the calibration ones); for the bf16 paths also fp32's top-2 logit
margin at the pixels that change class, against all pixels. ``--perf`` also samples the int8 run with
``perf`` and reports the share of samples in ONNX Runtime's code that lie next to VNNI instructions
(``vpdpbusd``), and the same for the fp32 run as a control: the library is stripped, so this is how to
see which kernel ran.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
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

import numpy as np

Runner = Callable[[np.ndarray], np.ndarray]


@dataclass
class Case:
    """A trained checkpoint and the rasters its tiles come from."""

    name: str
    checkpoint: Path
    rasters: list[Path]
    extra_heldout: list[Path]


def parse_case(text: str) -> Case:
    """Parse ``NAME=CHECKPOINT@RASTER[,RASTER...][+HELDOUT[,HELDOUT...]]``."""
    name, rest = text.split("=", 1)
    ckpt, rasters = rest.split("@", 1)
    split, _, extra = rasters.partition("+")
    return Case(name, Path(ckpt), [Path(p) for p in split.split(",") if p],
                [Path(p) for p in extra.split(",") if p])


def cpu_flags() -> dict[str, bool]:
    """Return the CPU features that decide the fast paths (from /proc/cpuinfo)."""
    flags: set[str] = set()
    with contextlib.suppress(OSError):
        line = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags"))
        flags = set(line.split(":", 1)[1].split())
    model = ""
    with contextlib.suppress(OSError, StopIteration):
        model = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines()
                     if ln.startswith("model name")).split(":", 1)[1].strip()
    wanted = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
    return {"model": model, **{f: f in flags for f in wanted}}  # type: ignore[dict-item]


def grid_tiles(paths: list[Path], meta: Any, tile: int) -> list[np.ndarray]:
    """Return every full ``tile`` px tile of a regular grid over ``paths``, normalised as the model says."""
    from fastunet_core.inference.precision import raster_tiles

    m = dataclasses.replace(meta, tile_size_px=tile)
    return [t for p in paths for t in raster_tiles([p], m, max_tiles=10_000)]


def fp32_convs(model: Path, how: str) -> list[str] | None:
    """Return the convolutions to keep in fp32: ``ends`` (the ones reading the input or writing the output) or
    ``top`` (those and every convolution after the last upsampling: the full-resolution decoder stage)."""
    import onnx

    if not how:
        return None
    graph = onnx.load(str(model)).graph
    ends = {graph.input[0].name, graph.output[0].name}
    keep = [n.name for n in graph.node if n.op_type == "Conv" and ends & {*n.input, *n.output}]
    if how == "top":
        last_up = max(i for i, n in enumerate(graph.node) if n.op_type in ("ConvTranspose", "Resize"))
        keep += [n.name for n in graph.node[last_up + 1:] if n.op_type == "Conv" and n.name not in keep]
    return keep


def quantize(fp32: Path, out: Path, calib: list[np.ndarray], variant: str, exclude: list[str] | None = None,
             only: list[str] | None = None) -> float:
    """Write the static int8 (QDQ, per-channel) form of ``fp32`` to ``out``; return the seconds it took.

    ``variant``: a CalibrationMethod name, with ``:ends`` or ``:top`` to keep some convolutions in fp32
    (:func:`fp32_convs`); ``exclude``: more nodes kept in fp32; ``only``: quantise these nodes alone.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    method, _, how = variant.partition(":")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"x": t.astype(np.float32)} for t in calib])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    t0 = time.perf_counter()
    prep = out.with_name(out.stem + ".prep.onnx")
    # ORT's quantisation tools write scratch files into the working folder: run them in out's folder
    with contextlib.chdir(out.parent):
        quant_pre_process(str(fp32), str(prep), skip_symbolic_shape=True)
        quantize_static(str(prep), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, method),
                        nodes_to_exclude=(fp32_convs(prep, how) or []) + (exclude or []) or None,
                        nodes_to_quantize=only)
    return time.perf_counter() - t0


def sensitivity(name: str, fp32: Path, calib: list[np.ndarray], held: list[np.ndarray], work: Path,
                method: str, target: float, speed_tiles: list[np.ndarray]) -> dict[str, Any]:
    """How many layers must stay in fp32 for int8 to reach ``target`` agreement, and what that leaves of the speed.

    Each convolution is quantised alone and its damage (1 - class agreement with fp32) measured on the
    calibration tiles; then the most damaging ones are kept in fp32, one more at a time, until the
    agreement on the calibration tiles reaches ``target`` (the choice never looks at the held-out tiles,
    whose agreement is reported). Speed: int8 against fp32, median CPU time of three round-robin rounds.
    """
    import onnx

    from fastunet_core.inference.onnx_engine import OnnxEngine

    ort_fp32 = OnnxEngine(fp32).logits
    ref_c, ref_h = classes_of(ort_fp32, calib), classes_of(ort_fp32, held)
    probe = work / f"{name}.probe.onnx"
    quantize(fp32, probe, calib, method)
    layers = [n.name for n in onnx.load(str(probe.with_name(probe.stem + ".prep.onnx"))).graph.node
              if n.op_type in ("Conv", "ConvTranspose")]
    damage = {}
    for layer in layers:
        quantize(fp32, probe, calib, method, only=[layer])
        damage[layer] = float((classes_of(OnnxEngine(probe).logits, calib) != ref_c).mean())
    order = sorted(layers, key=lambda n: -damage[n])
    steps = []
    for k in range(len(layers)):
        quantize(fp32, probe, calib, method, exclude=order[:k])
        run = OnnxEngine(probe).logits
        agree_c = float((classes_of(run, calib) == ref_c).mean())
        t = timed_rounds({"fp32": ort_fp32, "int8": run}, speed_tiles, 3)
        steps.append({"fp32_layers": order[:k], "agreement_calibration": agree_c,
                      "agreement_heldout": float((classes_of(run, held) == ref_h).mean()),
                      "speedup_vs_fp32": t["fp32"]["cpu_s_per_tile"] / t["int8"]["cpu_s_per_tile"]})
        print(f"sensitivity {name}: {k} layers in fp32: calibration {agree_c:.4%}, held out "
              f"{steps[-1]['agreement_heldout']:.4%}, {steps[-1]['speedup_vs_fp32']:.2f}x fp32", flush=True)
        if agree_c >= target:
            break
    return {"method": method, "layers": len(layers), "damage_alone": damage, "steps": steps}


def classes_of(run: Runner, tiles: list[np.ndarray]) -> np.ndarray:
    """Return the argmax class of every pixel of ``tiles`` (batch 1)."""
    return np.concatenate([run(t).argmax(1).ravel() for t in tiles])


def timed_rounds(runners: dict[str, Runner], tiles: list[np.ndarray], rounds: int) -> dict[str, dict[str, Any]]:
    """Return per path the median CPU and wall seconds per tile over ``rounds`` round-robin rounds."""
    for run in runners.values():  # warm-up: arenas grown, kernels picked
        run(tiles[0])
    cpu: dict[str, list[float]] = {k: [] for k in runners}
    wall: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for key, run in runners.items():
            c0, w0 = time.process_time(), time.perf_counter()
            for t in tiles:
                run(t)
            cpu[key].append((time.process_time() - c0) / len(tiles))
            wall[key].append((time.perf_counter() - w0) / len(tiles))
    return {k: {"cpu_s_per_tile": statistics.median(cpu[k]), "wall_s_per_tile": statistics.median(wall[k]),
                "cpu_s_rounds": [round(v, 4) for v in cpu[k]]} for k in runners}


def perf_vnni(model: Path, tile: np.ndarray, seconds: float) -> dict[str, Any]:
    """Sample a child running ``model`` with perf; return the share of ORT's samples next to VNNI instructions.

    ONNX Runtime's Python module carries its kernels in a stripped shared object, so perf reports addresses
    only; each hot address's neighbourhood (+-256 bytes: a GEMM kernel's inner loop) is disassembled and
    searched for ``vpdpbusd``/``vpdpbusds`` (AVX512-VNNI or AVX-VNNI dot products of uint8 x int8).
    """
    import re

    if not shutil.which("perf") or not shutil.which("objdump"):
        return {"skipped": "perf or objdump not installed"}
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "tile.npy", tile)
        child = (f"import time, numpy as np, sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})\n"
                 "from fastunet_core.inference.onnx_engine import OnnxEngine\n"
                 f"e = OnnxEngine({str(model)!r}); x = np.load({str(Path(tmp) / 'tile.npy')!r}); e.logits(x)\n"
                 f"t = time.perf_counter()\nwhile time.perf_counter() - t < {seconds}: e.logits(x)\n")
        data = Path(tmp) / "perf.data"
        rec = subprocess.run(["perf", "record", "-q", "-o", str(data), "-F", "999", "--", sys.executable, "-c", child],
                             capture_output=True, text=True)
        if rec.returncode:
            return {"skipped": f"perf record failed: {rec.stderr.strip()[-200:]}"}
        report = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--sort", "dso,sym"],
                                capture_output=True, text=True).stdout
    import onnxruntime

    capi = Path(onnxruntime.__file__).parent / "capi"
    row = re.compile(r"^\s*([\d.]+)%\s+(\S+)\s+\[\.\]\s+0x([0-9a-f]+)\s*$")
    ort_share, vnni_share, checked = 0.0, 0.0, 0.0
    for line in report.splitlines():
        m = row.match(line)
        if not m or not (m.group(2).startswith("onnxruntime") or m.group(2).startswith("libonnxruntime")):
            continue
        share, lib, addr = float(m.group(1)), capi / m.group(2), int(m.group(3), 16)
        ort_share += share
        if share < 0.2 or not lib.is_file():  # the long tail: not worth a disassembly each
            continue
        checked += share
        dis = subprocess.run(["objdump", "-d", "--no-show-raw-insn", f"--start-address={max(0, addr - 256)}",
                              f"--stop-address={addr + 256}", str(lib)], capture_output=True, text=True).stdout
        if "vpdpbusd" in dis:
            vnni_share += share
    if not ort_share:
        return {"skipped": "no samples in ONNX Runtime's libraries"}
    return {"percent_of_samples_in_onnxruntime": round(ort_share, 1),
            "percent_of_samples_checked": round(checked, 1),
            "percent_of_samples_next_to_vpdpbusd": round(vnni_share, 1)}


class TorchRunner:
    """PyTorch fp32 (BatchNorm folded, channels_last) as ``predict`` calls an engine: probabilities out.

    ``fpmath``: oneDNN's math mode for fp32 convolutions and matrix products during the call (``"bf16"``:
    implicit bf16 products, fp32 tensors), restored afterwards.
    """

    def __init__(self, model: Any, fpmath: str = "none") -> None:
        from fastunet_core.inference.optimize import optimize_for_cpu

        self.model, self.fpmath = optimize_for_cpu(model.cpu().eval()), fpmath

    def logits(self, x: np.ndarray) -> Any:
        import torch

        mk: Any = torch.backends.mkldnn  # conv/matmul submodules: not in torch's stubs
        saved = mk.conv.fp32_precision, mk.matmul.fp32_precision
        mk.conv.fp32_precision = mk.matmul.fp32_precision = self.fpmath
        try:
            with torch.inference_mode():
                return self.model(torch.from_numpy(x).contiguous(memory_format=torch.channels_last))
        finally:
            mk.conv.fp32_precision, mk.matmul.fp32_precision = saved

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return torch.softmax(self.logits(x), dim=1).numpy()


def fpmath_probe() -> dict[str, Any]:
    """Ask oneDNN which kernel runs a 3x3 fp32 convolution under ``fp32_precision = "bf16"``, and its error.

    A child process runs one convolution with ``ONEDNN_VERBOSE=1`` in each mode; the verbose line names the
    implementation and shows ``attr-fpmath:bf16`` when the mode reached oneDNN; the largest error against a
    float64 convolution tells whether products were rounded to bf16 (about 1e-2 here) or not (about 1e-6).
    """
    child = ("import sys, torch\nmode = sys.argv[1]\ntorch.backends.mkldnn.conv.fp32_precision = mode\n"
             "torch.manual_seed(0)\nm = torch.nn.Conv2d(32, 32, 3, padding=1).eval()\n"
             "m = m.to(memory_format=torch.channels_last)\n"
             "x = torch.randn(1, 32, 64, 64).contiguous(memory_format=torch.channels_last)\n"
             "with torch.inference_mode():\n    y = m(x)\n"
             "    r = torch.nn.functional.conv2d(x.double(), m.weight.double(), m.bias.double(), padding=1)\n"
             "print('maxerr', float((y.double() - r).abs().max()), flush=True)\n")
    out: dict[str, Any] = {}
    for mode in ("none", "bf16"):
        proc = subprocess.run([sys.executable, "-c", child, mode], capture_output=True, text=True,
                              env={**os.environ, "ONEDNN_VERBOSE": "1"}, timeout=300)
        conv = next((ln for ln in proc.stdout.splitlines() if ",exec,cpu,convolution," in ln), "")
        err = next((ln.split()[1] for ln in proc.stdout.splitlines() if ln.startswith("maxerr")), "nan")
        out[mode] = {"implementation": conv.split(",")[6] if conv else None,
                     "attr_fpmath_bf16": "attr-fpmath:bf16" in conv, "max_abs_error": float(err)}
    return out


def margins(ref: Any, runners: dict[str, Any], tiles: list[np.ndarray]) -> dict[str, Any]:
    """fp32's top-2 logit margin at the pixels whose class ``runners`` change, against all pixels (context)."""
    import torch

    every, moved = [], {k: [] for k in runners}  # type: ignore[var-annotated]
    with torch.inference_mode():
        for t in tiles:
            z = ref.logits(t).float()
            top = z.topk(2, dim=1).values
            margin = (top[:, 0] - top[:, 1]).ravel()
            every.append(margin)
            for k, run in runners.items():
                moved[k].append(margin[torch.from_numpy(run(t).argmax(1) != z.argmax(1).numpy()).ravel()])
    allm = torch.cat(every)

    def stats(m: Any) -> dict[str, float]:
        return {"pixels": int(m.numel()), "median": float(m.median()) if m.numel() else float("nan"),
                "max": float(m.max()) if m.numel() else float("nan")}

    out: dict[str, Any] = {"all": {**stats(allm), "share_below_0.05": float((allm < 0.05).float().mean())}}
    for k, parts in moved.items():
        m = torch.cat(parts)
        out[k] = {**stats(m), "share_of_all_pixels_below_its_max": float((allm <= m.max()).float().mean())
                  if m.numel() else 0.0}
    return out


def bench_case(case: Case, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Quantise one model, time the paths and measure the agreements; return the figures."""
    from fastunet_core.inference.engine import TorchEngine, make_engine
    from fastunet_core.inference.onnx_engine import OnnxEngine
    from fastunet_core.inference.precision import choose_precision, plan_bf16, recorded_agreement, with_plan
    from fastunet_core.models.checkpoint import load_checkpoint, save_checkpoint
    from fastunet_core.models.checkpoint_file import open_model
    from fastunet_core.models.onnx_export import export_checkpoint_onnx
    from fastunet_core.runtime.device import resolve_device

    loaded = load_checkpoint(case.checkpoint)
    meta = loaded.meta
    tile = meta.tile_size_px
    grid = grid_tiles(case.rasters, meta, tile)
    calib = grid[::4][:args.max_calibration]
    held = [t for i, t in enumerate(grid) if i % 4] + grid_tiles(case.extra_heldout, meta, tile)
    big = grid_tiles(case.rasters + case.extra_heldout, meta, 512) if tile != 512 else []
    print(f"\n## {case.name}: {case.checkpoint} ({meta.architecture} {meta.arch_args}, {meta.input.n_bands} bands, "
          f"{meta.n_classes} classes, tile {tile}); {len(calib)} calibration tiles, {len(held)} held out",
          flush=True)

    fp32 = tmp / f"{case.name}.fp32.onnx"
    export_checkpoint_onnx(case.checkpoint, fp32)
    int8: dict[str, Path] = {}
    quant_s: dict[str, float] = {}
    for variant in args.calibration:
        int8[variant] = tmp / f"{case.name}.int8-{variant.replace(':', '-')}.onnx"
        quant_s[variant] = quantize(fp32, int8[variant], calib, variant)
    device = resolve_device("cpu")
    # the plan training or init --agreement-tiles would record, chosen on the calibration tiles only
    t0 = time.perf_counter()
    plan = plan_bf16(loaded.torch_model(), calib)
    plan_s = time.perf_counter() - t0
    planned = tmp / f"{case.name}.planned.safetensors"
    save_checkpoint(planned, loaded.torch_model(), with_plan(meta, plan, "bench calibration tiles"), overwrite=True)
    choice = choose_precision("auto", load_checkpoint(planned).meta, device)
    default_engine, default_name = make_engine(open_model(planned), device, (1, meta.input.n_bands, tile, tile),
                                               "auto", choice.precision, choice.fp32_layers)
    ort_fp32 = OnnxEngine(fp32)
    bf16 = TorchEngine(loaded.torch_model(), device, precision="bf16")
    bf16_plan = TorchEngine(loaded.torch_model(), device, precision="bf16", fp32_layers=plan.fp32_layers)
    torch_fp32, fpmath = TorchRunner(loaded.torch_model()), TorchRunner(loaded.torch_model(), "bf16")
    # every path as predict calls its engine: probabilities (the softmax included), batch 1
    runners: dict[str, Runner] = {"ort_fp32": ort_fp32, "default": default_engine, "torch_bf16": bf16,
                                  "torch_bf16_plan": bf16_plan, "torch_fp32": torch_fp32,
                                  "torch_fp32_fpmath_bf16": fpmath}
    for method, path in int8.items():
        runners[f"ort_int8_{method}"] = OnnxEngine(path)

    ref = classes_of(ort_fp32, held)
    agreement = {k: float((classes_of(run, held) == ref).mean()) for k, run in runners.items() if k != "ort_fp32"}
    # the calibration tiles themselves, for contrast (int8 should do no better on tiles it was fitted to)
    ref_c = classes_of(ort_fp32, calib)
    agreement_calib = {k: float((classes_of(run, calib) == ref_c).mean())
                       for k, run in runners.items() if k.startswith("ort_int8") or k.startswith("torch_bf16")}
    fpmath_logits = max(float((fpmath.logits(t) - torch_fp32.logits(t)).abs().max()) for t in held[:4])
    speed: dict[str, Any] = {}
    for size, tiles in ((tile, held), (512, big)):
        if not tiles:
            continue
        reps = (tiles * args.speed_tiles)[:args.speed_tiles]
        speed[str(size)] = timed_rounds(runners, reps, args.rounds)
        for v in speed[str(size)].values():
            v["mpx_per_cpu_s"] = size * size / v["cpu_s_per_tile"] / 1e6
    result = {
        "checkpoint": str(case.checkpoint), "architecture": meta.architecture, "arch_args": meta.arch_args,
        "tile": tile, "classes": meta.n_classes, "bands": meta.input.n_bands,
        "rasters": [str(p) for p in case.rasters], "extra_heldout": [str(p) for p in case.extra_heldout],
        "calibration_tiles": len(calib), "heldout_tiles": len(held), "heldout_pixels": int(ref.size),
        "recorded_bf16_agreement": recorded_agreement(meta),
        "bf16_plan": {"fp32_layers": list(plan.fp32_layers), "agreement_calibration": plan.agreement,
                      "bf16_only_calibration": plan.bf16_only, "tiles": plan.tiles, "seconds": plan_s},
        "default": {"precision": choice.precision, "reason": choice.reason, "engine": default_name,
                    "fp32_layers": list(choice.fp32_layers)},
        "fpmath_bf16_max_logit_change": fpmath_logits,
        "margins": margins(torch_fp32, {"torch_bf16": bf16, "torch_bf16_plan": bf16_plan}, held),
        "quantise_seconds": quant_s, "int8_file_bytes": {m: p.stat().st_size for m, p in int8.items()},
        "fp32_file_bytes": fp32.stat().st_size,
        "agreement_with_fp32_heldout": agreement, "int8_agreement_on_calibration_tiles": agreement_calib,
        "speed": speed,
    }
    if args.sensitivity:
        result["sensitivity"] = sensitivity(case.name, fp32, calib, held, tmp, args.sensitivity, 0.999,
                                            (big or held)[:args.speed_tiles])
    if args.perf:
        sample = (big or held)[0]  # the fp32 run is the control: no VNNI instruction should show there
        result["perf_vnni"] = {"int8": perf_vnni(int8[args.calibration[0]], sample, args.perf),
                               "fp32": perf_vnni(fp32, sample, args.perf)}
    print_case(result)
    return result


def print_case(r: dict[str, Any]) -> None:
    """Print one case's figures as a Markdown table."""
    print(f"default path: {r['default']['engine']} ({r['default']['precision']}: {r['default']['reason']})")
    for size, paths in r["speed"].items():
        base = paths["ort_fp32"]["mpx_per_cpu_s"]
        print(f"\n| path (tile {size}) | CPU s/tile | Mpx per CPU-s | vs fp32 | held-out class agreement with fp32 |")
        print("|---|---:|---:|---:|---:|")
        for k, v in paths.items():
            agree = r["agreement_with_fp32_heldout"].get(k, 1.0)
            print(f"| {k} | {v['cpu_s_per_tile']:.4f} | {v['mpx_per_cpu_s']:.3f} | {v['mpx_per_cpu_s'] / base:.2f}x "
                  f"| {agree:.4%} |")
    print(f"bf16 plan: {r['bf16_plan']}; fpmath bf16 changes the logits by at most "
          f"{r['fpmath_bf16_max_logit_change']:.2e}")
    print(f"fp32 top-2 logit margins (context): {r['margins']}")
    print("agreement on the calibration tiles: "
          + ", ".join(f"{k} {v:.4%}" for k, v in r["int8_agreement_on_calibration_tiles"].items()))
    if "perf_vnni" in r:
        print(f"perf: {r['perf_vnni']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--case", action="append", type=parse_case, required=True,
                    help="NAME=CHECKPOINT@RASTER[,RASTER...][+HELDOUT_RASTER[,...]]")
    ap.add_argument("--calibration", default="MinMax", type=lambda s: [m for m in s.split(",") if m],
                    help="comma-separated CalibrationMethod names (MinMax, Percentile, Entropy, Distribution); "
                         "NAME:ends keeps the first and last convolutions in fp32, NAME:top also the last "
                         "decoder stage; '' for none")
    ap.add_argument("--max-calibration", type=int, default=16)
    ap.add_argument("--speed-tiles", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--perf", type=float, default=0.0, help="seconds of perf sampling of the int8 run (0: none)")
    ap.add_argument("--sensitivity", default="", help="a CalibrationMethod: find the layers int8 must leave in "
                    "fp32 to reach 99.9 %% agreement on the calibration tiles (see sensitivity())")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--keep", type=Path, default=None, help="write the ONNX files here (default: a temporary folder)")
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as predict sets it, before torch loads
    import onnxruntime

    from fastunet_core.runtime.cpu import physical_cores

    env = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu": cpu_flags(), "threads": physical_cores(),
           "onednn_fpmath_probe": fpmath_probe(),
           "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
           "load_before": os.getloadavg(), "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}
    print(json.dumps(env))
    results: dict[str, Any] = {"env": env, "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        os.environ["FASTUNET_CACHE_DIR"] = str(Path(tmp) / "cache")  # the default path's export: not the user's
        for case in args.case:
            results["cases"][case.name] = bench_case(case, args, work.resolve())
    env["load_after"] = os.getloadavg()
    print(f"\nload average before {env['load_before']}, after {env['load_after']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1, default=str) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
