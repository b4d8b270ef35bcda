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

from fastunet_core.device import DeviceChoice
from fastunet_core.optimize import optimize_for_cpu


class TorchEngine:
    """Softmax probabilities from a PyTorch model on the chosen device."""

    def __init__(self, model: nn.Module, device: DeviceChoice, fast_cpu: bool = True) -> None:
        self.device = device
        self.model = model.eval().to(device.device)
        self.channels_last = device.is_cuda or fast_cpu
        if device.is_cuda:
            self.model = self.model.to(memory_format=torch.channels_last)
        elif fast_cpu:  # BatchNorm folded into the convolutions, channels_last (see optimize.py)
            self.model = optimize_for_cpu(self.model)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Map a (N, bands, H, W) float32 batch to (N, classes, H, W) float32 probabilities."""
        dev = self.device.device
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(dev, non_blocking=True)
            amp: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if self.device.is_cuda:
                amp = torch.autocast("cuda", dtype=self.device.autocast_dtype)
            with amp:
                logits = self.model(x)
            probs = torch.softmax(logits.float(), dim=1)
            return probs.cpu().numpy()
