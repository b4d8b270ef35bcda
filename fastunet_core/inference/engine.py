"""Run a model on batches of tiles: numpy in, per-class probabilities out.

One engine interface, whatever runs the model, so tiling and stitching have a single code path. The
PyTorch engine uses ``torch.inference_mode``; on CUDA it adds autocast (bf16 where supported, else fp16)
and channels_last memory format; on CPUs it folds BatchNorm into the convolutions and uses channels_last.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from fastunet_core.errors import ConfigError
from fastunet_core.inference.optimize import optimize_for_cpu
from fastunet_core.runtime.device import DeviceChoice

PRECISIONS = ("auto", "fp32", "bf16")  # auto: fp32 on CPUs, bf16/fp16 autocast on CUDA


class TorchEngine:
    """Softmax probabilities from a PyTorch model on the chosen device."""

    def __init__(self, model: nn.Module, device: DeviceChoice, fast_cpu: bool = True, precision: str = "auto") -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        self.device = device
        self.model = model.eval().to(device.device)
        self.channels_last = device.is_cuda or fast_cpu
        self.autocast: torch.dtype | None = None
        self.cpu_dtype = torch.float32
        if device.is_cuda:
            self.model = self.model.to(memory_format=torch.channels_last)
            if precision != "fp32":
                self.autocast = torch.bfloat16 if precision == "bf16" else device.autocast_dtype
        else:
            if fast_cpu:  # BatchNorm folded into the convolutions, channels_last (see optimize.py)
                self.model = optimize_for_cpu(self.model)
            if precision == "bf16":  # opt-in: bf16 weights and activations, logits back in float32
                self.cpu_dtype = torch.bfloat16
                self.model = self.model.to(torch.bfloat16)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Map a (N, bands, H, W) float32 batch to (N, classes, H, W) float32 probabilities."""
        dev = self.device.device
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(dev, non_blocking=True).to(self.cpu_dtype)
            amp: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if self.autocast is not None:
                amp = torch.autocast("cuda", dtype=self.autocast)
            with amp:
                logits = self.model(x)
            probs = torch.softmax(logits.float(), dim=1)
            return probs.cpu().numpy()


ENGINES = ("auto", "torch", "onnx")


def make_engine(model: nn.Module, device: DeviceChoice, sample_shape: tuple[int, int, int, int],
                engine: str = "auto", precision: str = "auto") -> tuple[object, str]:
    """Pick the engine; return it and a one-line description.

    ``auto``: ONNX Runtime on CPUs at fp32 when onnx and onnxruntime are installed (about 2x eager), else
    PyTorch (BatchNorm folded, channels_last; autocast on CUDA). An export that fails falls back to PyTorch.
    """
    from fastunet_core.inference.onnx_engine import OnnxEngine, onnx_available

    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    cpu_fp32 = not device.is_cuda and precision in ("auto", "fp32")
    if engine == "onnx" and not cpu_fp32:
        raise ConfigError("the onnx engine runs on the CPU in fp32; use --engine torch for CUDA or bf16")
    if engine == "onnx" or (engine == "auto" and cpu_fp32 and onnx_available()):
        try:
            return OnnxEngine(model, sample_shape), "onnxruntime (CPU, fp32)"
        except ConfigError:
            raise
        except Exception as exc:  # an operator the exporter does not know: PyTorch still works
            if engine == "onnx":
                raise ConfigError(f"exporting the model to ONNX failed ({type(exc).__name__}: {exc})") from exc
    torch_engine = TorchEngine(model, device, precision=precision)
    kind = "autocast" if torch_engine.autocast is not None else str(torch_engine.cpu_dtype).replace("torch.", "")
    return torch_engine, f"pytorch ({kind})"
