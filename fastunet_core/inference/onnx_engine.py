"""ONNX Runtime engine for CPUs: about 2x eager PyTorch on the paper's UNets, identical argmax; no torch.

Needs ``onnxruntime`` to run a model and, to export one, ``onnx`` and torch (``pip install onnx
onnxruntime``). ``predict`` runs the checkpoint's cached export (see :mod:`.onnx_cache`), so a run that
finds it imports neither torch nor onnx.

Session options for streaming inference (see README, "ONNX Runtime session options" for the figures):
``intra_op_num_threads`` = the physical cores this process may use; one inter-op thread (the graph is a
chain); the CPU memory arena and memory-pattern planning off, since every batch has the same shape and
the default allocator already reuses the freed blocks, while the arena and the planner keep their
high-water mark of every shape seen for the session's lifetime.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from fastunet_core.errors import ConfigError
from fastunet_core.runtime.cpu import physical_cores


def onnxruntime_available() -> bool:
    """Return True when onnxruntime can be imported (enough to run a cached export)."""
    return importlib.util.find_spec("onnxruntime") is not None


def onnx_available() -> bool:
    """Return True when onnx (needed by the exporter) and onnxruntime can both be imported."""
    return onnxruntime_available() and importlib.util.find_spec("onnx") is not None


def session_options(threads: int | None = None, arena: bool = False, mem_pattern: bool = False) -> Any:
    """Return ONNX Runtime session options for streaming inference (see the module docstring)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or physical_cores()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.enable_cpu_mem_arena = arena
    options.enable_mem_pattern = mem_pattern
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def softmax_channels(logits: np.ndarray) -> np.ndarray:
    """Return the softmax over axis 1 of a (N, C, H, W) float32 array, computed in place."""
    logits -= logits.max(axis=1, keepdims=True)
    np.exp(logits, out=logits)
    logits /= logits.sum(axis=1, keepdims=True)
    return logits


class OnnxEngine:
    """Softmax probabilities from an ONNX model (a file or its bytes) run by ONNX Runtime on the CPU."""

    def __init__(self, model: str | os.PathLike[str] | bytes, threads: int | None = None,
                 arena: bool = False, mem_pattern: bool = False) -> None:
        if not onnxruntime_available():
            raise ConfigError("the onnx engine needs onnxruntime: pip install onnxruntime")
        import onnxruntime as ort

        source = model if isinstance(model, bytes) else str(Path(model))
        self.session = ort.InferenceSession(source, session_options(threads, arena, mem_pattern),
                                            providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Map a (N, bands, H, W) float32 batch to (N, classes, H, W) float32 logits."""
        out: np.ndarray = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]
        return out

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Map a (N, bands, H, W) float32 batch to (N, classes, H, W) float32 probabilities."""
        return softmax_channels(self.logits(batch))
