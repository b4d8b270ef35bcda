#!/usr/bin/env python
"""Compare the reduced-precision CPU paths against fp32: speed (CPU seconds per tile) and class agreement.

    env -u PROJ_DATA -u PROJ_LIB .venv/bin/python bench/bench_precision.py [--model unet_skinny] [--tiles 6]

Tiles: 512 x 512 windows of a real orthophoto (Deepness's drone image, mirror-tiled as in bench_predict),
normalised as the checkpoint says. Model: ``--checkpoint`` (a trained one), else the architecture with
BatchNorm statistics as after training (5 classes). Paths, each timed on the same tiles in this process
(batch 1, after a warm-up; process CPU time, all threads; the load average is printed):

- ONNX Runtime fp32 (the default engine);
- PyTorch bf16 with oneDNN: BatchNorm folded, channels_last, bf16 weights and activations;
- ONNX Runtime static int8 (QDQ, per-channel weights, activations calibrated on other tiles of the image);
- ONNX Runtime dynamic int8 (weights int8, activations quantised per call).

Agreement: share of pixels whose argmax class equals fp32's, over all tiles.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_predict import ORTHO, ortho_block


def tiles_from_ortho(n: int, offset: int, n_bands: int) -> np.ndarray:
    """Return ``n`` (3, 512, 512) uint8 tiles cut from the mirror-tiled orthophoto, starting at tile ``offset``."""
    import rasterio

    with rasterio.open(ORTHO) as src:
        ortho = src.read((1, 2, 3))
    big = ortho_block(ortho, 0, 2048, 2048)
    out = []
    for k in range(offset, offset + n):
        y, x = divmod(k, 4)
        out.append(big[:n_bands, y * 512:(y + 1) * 512, x * 512:(x + 1) * 512])
    return np.stack(out)


def cpu_time(fn, xs: np.ndarray) -> tuple[float, list[np.ndarray]]:
    """Return CPU seconds per tile (batch 1, after one warm-up call) and the outputs."""
    fn(xs[:1])
    c0 = time.process_time()
    outs = [fn(xs[i:i + 1]) for i in range(len(xs))]
    return (time.process_time() - c0) / len(xs), outs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="unet_skinny")
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--tiles", type=int, default=6)
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as fastunet-geo predict sets it, before torch loads
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    from fastunet_core.inference.onnx_engine import session_options
    from fastunet_core.inference.optimize import optimize_for_cpu
    from fastunet_core.models.metadata import InputSpec
    from fastunet_core.models.onnx_export import export_onnx
    from fastunet_core.models.registry import build_model
    from fastunet_core.runtime.cpu import bf16_support, physical_cores

    torch.set_num_threads(physical_cores())
    if args.checkpoint:
        from fastunet_core.models.checkpoint import load_checkpoint

        loaded = load_checkpoint(args.checkpoint)
        model, spec, name = loaded.torch_model(), loaded.meta.input, args.checkpoint.name
    else:
        torch.manual_seed(0)
        model = build_model(args.model, 3, 5).eval()
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d) and m.running_mean is not None and m.running_var is not None:
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.5, 2.0)
        spec = InputSpec((1, 2, 3), mean=(0.4, 0.4, 0.4), std=(0.25, 0.25, 0.25))
        name = f"{args.model} (BatchNorm as after training)"
    n_bands = spec.n_bands

    def norm(t: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.stack([spec.normalise(x) for x in t]), dtype=np.float32)

    xs = norm(tiles_from_ortho(args.tiles, 0, n_bands))
    calib = norm(tiles_from_ortho(4, 16 - 4, n_bands))  # tiles the timed ones do not include
    print(f"model {name}; {args.tiles} tiles of {ORTHO.name}; CPU bf16: {bf16_support().describe()}; "
          f"threads {physical_cores()}; load {os.getloadavg()}")
    # ORT's quantisation tools write scratch files (an 80 MB .data, sym_shape_infer_temp.onnx) into the working folder
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
        fp32 = Path(tmp) / "fp32.onnx"
        export_onnx(model, n_bands, 512, fp32)
        prep = Path(tmp) / "prep.onnx"
        from onnxruntime.quantization.shape_inference import quant_pre_process

        quant_pre_process(str(fp32), str(prep), skip_symbolic_shape=True)

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.items = iter([{"x": calib[i:i + 1]} for i in range(len(calib))])

            def get_next(self) -> dict | None:
                return next(self.items, None)

        s8 = Path(tmp) / "static_int8.onnx"
        quantize_static(str(prep), str(s8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        d8 = Path(tmp) / "dynamic_int8.onnx"
        quantize_dynamic(str(prep), str(d8), weight_type=QuantType.QInt8)

        def ort_path(p: Path):
            sess = ort.InferenceSession(str(p), session_options(), providers=["CPUExecutionProvider"])
            return lambda x: sess.run(None, {"x": x})[0]

        bf16_model = optimize_for_cpu(model).to(torch.bfloat16)

        def torch_bf16(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                t = torch.from_numpy(x).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
                return bf16_model(t).float().numpy()

        paths = [("ONNX Runtime fp32 (default)", ort_path(fp32)), ("PyTorch bf16 + oneDNN", torch_bf16),
                 ("ONNX Runtime static int8 (QDQ, calibrated)", ort_path(s8)),
                 ("ONNX Runtime dynamic int8", ort_path(d8))]
        ref = None
        print("| path | CPU s/tile | speed-up | class agreement with fp32 |")
        print("|---|---:|---:|---:|")
        for label, fn in paths:
            try:
                sec, outs = cpu_time(fn, xs)
            except Exception as exc:  # a path this CPU or ORT build cannot run
                print(f"| {label} | failed: {type(exc).__name__}: {str(exc)[:80]} | | |")
                continue
            classes = np.concatenate([o.argmax(1) for o in outs])
            if ref is None:
                ref, ref_sec = classes, sec
            print(f"| {label} | {sec:.3f} | {ref_sec / sec:.2f}x | {(classes == ref).mean():.4%} |", flush=True)
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
