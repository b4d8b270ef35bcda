"""Run an ONNX file as it is (a Deepness-format model): batches in, per-head probabilities out.

The engine hands the tiling code one array per batch, like every engine: the heads' probabilities one after
the other along the channel axis (a sigmoid head as ``1 - p`` and ``p``). A model with a fixed batch size
gets the batch in chunks of that size (the last one padded), so any ``--batch-size`` works. An output
smaller than the input covers the input's centre (valid padding); ``margin`` says how many pixels each
side loses, and the predictor marks them as "no prediction" so that neighbouring tiles cover them.
"""

from __future__ import annotations

import numpy as np

from fastunet_core.errors import ConfigError
from fastunet_core.hints import setting
from fastunet_core.models.deepness import OnnxModelSpec
from fastunet_core.runtime.device import DeviceChoice


class OnnxFileEngine:
    """Probabilities of every selected head of a Deepness-format ONNX model, on the CPU or CUDA."""

    def __init__(self, spec: OnnxModelSpec, device: DeviceChoice, tile: int, threads: int | None = None) -> None:
        from fastunet_core.inference.onnx_engine import import_onnxruntime

        ort = import_onnxruntime()

        if spec.input_size is not None and tile != spec.input_size:
            raise ConfigError(f"{spec.path.name} takes {spec.input_size} x {spec.input_size} px tiles only; "
                              f"use {setting('tile', spec.input_size)}")
        self.spec = spec
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        if device.is_cuda and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(spec.path), options, providers=providers)
        self.output_names = [h.output_name for h in spec.heads]
        self.provider = self.session.get_providers()[0]
        probe = self._run(np.zeros((spec.fixed_batch or 1, spec.in_channels, tile, tile), np.float32))
        out = probe.shape[-1]
        if out > tile or (tile - out) % 2:
            raise ConfigError(f"{spec.path.name}: an output of {out} px from a {tile} px input cannot be placed "
                              "on the input (it must be smaller by an even number of pixels)")
        self.margin = (tile - out) // 2

    def _run(self, batch: np.ndarray) -> np.ndarray:
        outs = self.session.run(self.output_names, {self.spec.input_name: batch})
        parts = []
        for head, arr in zip(self.spec.heads, outs, strict=True):
            a = np.asarray(arr, dtype=np.float32)
            if a.ndim == 3:
                a = a[:, None]
            if head.kind == "sigmoid":
                a = np.concatenate([1.0 - a, a], axis=1)
            parts.append(a)
        if len({p.shape[-2:] for p in parts}) != 1:
            raise ConfigError(f"{self.spec.path.name}: its outputs differ in size; run one with {setting('head')}")
        return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Map a (N, bands, H, W) float32 batch to (N, channels, h, w) float32 probabilities."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        fixed = self.spec.fixed_batch
        if fixed is None or len(x) == fixed:
            return self._run(x)
        chunks = []
        for i in range(0, len(x), fixed):
            part = x[i : i + fixed]
            n = len(part)
            if n < fixed:
                part = np.concatenate([part, np.zeros((fixed - n, *part.shape[1:]), np.float32)])
            chunks.append(self._run(part)[:n])
        return np.concatenate(chunks)
