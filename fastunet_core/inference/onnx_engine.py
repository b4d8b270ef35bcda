"""ONNX Runtime engine for CPUs: about 2x eager PyTorch on the paper's UNets, identical argmax; no torch.

Needs ``onnxruntime`` to run a model and, to export one, ``onnx`` and torch (``pip install onnx
onnxruntime``). ``predict`` runs the checkpoint's cached export (see :mod:`.onnx_cache`), so a run that
finds it imports neither torch nor onnx.

Session options for streaming inference (see README, "ONNX Runtime session options" for the figures):
``intra_op_num_threads`` = the physical cores this process may use; one inter-op thread (the graph is a
chain); pool threads that sleep rather than spin when idle (spinning cost 8-15 % more CPU time per tile
here, for no gain in a pipeline that also reads and writes); the CPU memory arena on (without it every
large activation is a fresh mmap whose pages are faulted in and zeroed again each call: 10-30 % more CPU
time) and memory-pattern planning off (it pre-allocates one block for the whole plan: +160 MB at batch 1
and +670 MB at batch 4 with the arena, for no speed).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType
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


def import_onnxruntime() -> ModuleType:
    """Import onnxruntime without leaving its telemetry session file behind.

    ONNX Runtime's bundled telemetry client (1DS) writes a ``.ses`` file (first launch time, a session id)
    into ``$TMPDIR`` (else ``/tmp``) when the module is imported, and never removes it. The import runs with
    ``TMPDIR`` pointing at a private folder that is deleted right after; nothing is written later.
    """
    if "onnxruntime" in sys.modules:
        return sys.modules["onnxruntime"]
    private = tempfile.mkdtemp(prefix="fastunet-ort-")
    old = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = private
    try:
        import onnxruntime
    finally:
        if old is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = old
        shutil.rmtree(private, ignore_errors=True)
    return onnxruntime


def session_options(threads: int | None = None, arena: bool = True, mem_pattern: bool = False,
                    spinning: bool = False) -> Any:
    """Return ONNX Runtime session options for streaming inference (see the module docstring)."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    # idle pool threads sleep instead of spinning: on a machine shared with other work (reading, writing,
    # other programs) a spinning thread burns a core it does not need
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
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


def optimized_path(model: Path) -> Path:
    """Return where ONNX Runtime's optimised form of ``model`` is kept for this CPU and ORT version.

    The optimised graph holds CPU-specific layouts (NCHWc blocks sized to the vector width), so it is
    keyed by the onnxruntime version and the CPU's feature flags.
    """
    import hashlib

    ort = import_onnxruntime()

    flags = ""
    with contextlib.suppress(OSError):
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    tag = hashlib.blake2b(f"{ort.__version__}|{platform.machine()}|{flags}".encode(), digest_size=6).hexdigest()
    return model.with_name(f"{model.stem}.opt-{tag}.ort.onnx")


class OnnxEngine:
    """Softmax probabilities from an ONNX model (a file or its bytes) run by ONNX Runtime on the CPU.

    With ``keep_optimized`` (a model file in the cache), the graph ONNX Runtime optimised for this CPU is
    saved beside the model and loaded as it is next time (saves the optimisation passes at start-up).
    """

    def __init__(self, model: str | os.PathLike[str] | bytes, threads: int | None = None,
                 arena: bool = True, mem_pattern: bool = False, spinning: bool = False,
                 keep_optimized: bool = False) -> None:
        if not onnxruntime_available():
            raise ConfigError("the onnx engine needs onnxruntime: pip install onnxruntime")
        ort = import_onnxruntime()

        options = session_options(threads, arena, mem_pattern, spinning)
        source: str | bytes = model if isinstance(model, bytes) else str(Path(model))
        tmp: Path | None = None
        if keep_optimized and not isinstance(model, bytes):
            opt = optimized_path(Path(model))
            if opt.is_file():
                source = str(opt)
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            else:
                tmp = opt.with_name(f".{opt.name}.{os.getpid()}.tmp")
                options.optimized_model_filepath = str(tmp)
                options.log_severity_level = 3  # not the warning that the saved graph is CPU-specific: we know
        try:
            self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
            if tmp is not None and tmp.is_file() and not isinstance(model, bytes):
                os.replace(tmp, optimized_path(Path(model)))
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    tmp.unlink()
        self.input_name = self.session.get_inputs()[0].name

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Map a (N, bands, H, W) float32 batch to (N, classes, H, W) float32 logits."""
        out: np.ndarray = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]
        return out

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Map a (N, bands, H, W) float32 batch to (N, classes, H, W) float32 probabilities."""
        return softmax_channels(self.logits(batch))
