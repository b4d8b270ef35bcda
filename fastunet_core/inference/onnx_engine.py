"""ONNX Runtime engine for CPUs: about 2x eager PyTorch on the paper's UNets, identical argmax.

Optional: needs the ``onnx`` and ``onnxruntime`` packages (``pip install onnx onnxruntime``). The model is
exported in memory when the engine is created (under a second for the paper's UNets); nothing is written.
"""

from __future__ import annotations

import importlib.util
import io
import warnings

import numpy as np
import torch
from torch import nn

from fastunet_core.errors import ConfigError


def onnx_available() -> bool:
    """Return True when both onnx (needed by the exporter) and onnxruntime can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))


class OnnxEngine:
    """Softmax probabilities from the model exported to ONNX and run by ONNX Runtime on the CPU."""

    def __init__(self, model: nn.Module, sample_shape: tuple[int, int, int, int]) -> None:
        if not onnx_available():
            raise ConfigError("the onnx engine needs the onnx and onnxruntime packages: pip install onnx onnxruntime")
        import onnxruntime as ort

        buf = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's deprecation chatter
            torch.onnx.export(model.eval().cpu(), (torch.zeros(sample_shape),), buf, input_names=["x"],
                              output_names=["logits"], opset_version=17, dynamo=False,
                              dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        self.session = ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Map a (N, bands, H, W) float32 batch to (N, classes, H, W) float32 probabilities."""
        logits = self.session.run(None, {"x": np.ascontiguousarray(batch, dtype=np.float32)})[0]
        return torch.softmax(torch.from_numpy(logits), dim=1).numpy()
