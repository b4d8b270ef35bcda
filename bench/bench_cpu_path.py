"""The CPU paths (BatchNorm folded + channels_last; ONNX Runtime) against eager PyTorch, on real imagery.

Prints per model: seconds per 512 x 512 tile (batch 1) eager and on the fast path, the speed-up, the largest
logit difference and the argmax agreement. BatchNorm statistics are randomised as after training (an
untrained model's BN is the identity, which would make folding trivially exact).

    .venv/bin/python bench/bench_cpu_path.py [unet_skinny unet_lessconv ...]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

from fastunet_core.inference.onnx_engine import OnnxEngine, onnx_available
from fastunet_core.inference.optimize import optimize_for_cpu
from fastunet_core.models.onnx_export import export_onnx_bytes
from fastunet_core.models.registry import build_model

IMAGE = Path(__file__).resolve().parents[1] / "data" / "samples" / "cogeo.tif"


def trained_like(arch: str) -> torch.nn.Module:
    """Build ``arch`` with non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    model = build_model(arch, 3, 5).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d) and m.running_mean is not None and m.running_var is not None:
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model


def seconds_per_call(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                     repeat: int = 3) -> tuple[float, torch.Tensor]:
    """Best time of ``repeat`` calls after a warm-up, and the output."""
    with torch.inference_mode():
        out = model(x)
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            out = model(x)
            best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    archs = sys.argv[1:] or ["unet_skinny", "unet_lessconv", "deeplabv3plus"]
    with rasterio.open(IMAGE) as src:
        x = torch.from_numpy(src.read(window=Window(0, 0, 512, 512)).astype(np.float32) / 255.0)[None]
    print(f"torch threads {torch.get_num_threads()}, one 512 x 512 tile of {IMAGE.name}, batch 1")
    print("| model | path | s/tile | speed-up over eager | max logit diff | argmax agreement |")
    print("|---|---|---:|---:|---:|---:|")
    for arch in archs:
        model = trained_like(arch)
        te, oe = seconds_per_call(model, x)
        print(f"| {arch} | eager PyTorch | {te:.3f} | 1.00x | - | - |")
        paths: list[tuple[str, Callable[[torch.Tensor], torch.Tensor], torch.Tensor]] = [
            ("BatchNorm folded + channels_last", optimize_for_cpu(model),
             x.contiguous(memory_format=torch.channels_last))]
        if onnx_available():
            session = OnnxEngine(export_onnx_bytes(model, x.shape[1], x.shape[2]))

            def run_onnx(z: torch.Tensor, s: OnnxEngine = session) -> torch.Tensor:
                return torch.from_numpy(s.session.run(None, {"x": z.numpy()})[0])

            paths.append(("ONNX Runtime (the default when installed)", run_onnx, x))
        for name, fn, xin in paths:
            t, o = seconds_per_call(fn, xin)
            agree = (oe.argmax(1) == o.argmax(1)).float().mean().item()
            print(f"| {arch} | {name} | {t:.3f} | {te / t:.2f}x | {(oe - o).abs().max().item():.1e} | "
                  f"{agree:.4%} |", flush=True)

if __name__ == "__main__":
    main()
