"""Run a model on batches of tiles: numpy in, per-class probabilities out.

One engine interface, whatever runs the model, so tiling and stitching have a single code path. The
PyTorch engine uses ``torch.inference_mode``; on CUDA it adds autocast (bf16 where supported, else fp16)
and channels_last memory format; on CPUs it folds BatchNorm into the convolutions and uses channels_last, and
in bf16 keeps in fp32 the layers the checkpoint's measured plan names (:func:`.optimize.bf16_model`).
The ONNX Runtime engine (the default on CPUs) runs the checkpoint's cached ONNX export without torch.

This module imports torch only when a PyTorch engine is built or a model has to be exported.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Protocol

import numpy as np

from fastunet_core.errors import CheckpointError, ConfigError, NonFiniteError
from fastunet_core.hints import counted, hint
from fastunet_core.models.checkpoint_file import LoadedModel
from fastunet_core.runtime.device import DeviceChoice

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # auto: fp32 on CPUs, bf16 (native) or fp16 autocast on CUDA
ENGINES = ("auto", "torch", "onnx")
EXPORTED, CACHED = "exported to the cache", "cached export"  # how the ONNX engine got the checkpoint's export


class TorchEngine:
    """Softmax probabilities from a PyTorch model on the chosen device.

    Non-finite outputs (NaN, inf) raise :class:`NonFiniteError`, checked on the device before the copy
    to the host (on a GPU that costs next to nothing); callers add which model and tiles.
    """

    checks_finite = True

    def __init__(self, model: nn.Module, device: DeviceChoice, fast_cpu: bool = True, precision: str = "auto",
                 fp32_layers: tuple[str, ...] = (), owned: bool = False) -> None:
        """``owned``: ``model`` was loaded for this engine alone, so the CPU rewrites change it in place.

        Without it they work on a copy and the caller's fp32 model stays as it was (in memory beside the
        engine's bf16 or folded weights).
        """
        import torch

        from fastunet_core.inference.optimize import bf16_model, optimize_for_cpu

        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        if precision == "fp16" and not device.is_cuda:
            raise ConfigError("fp16 precision needs a CUDA GPU; on the CPU use fp32 or bf16")
        self.device = device
        self.model = model.eval().to(device.device)
        self.channels_last = device.is_cuda or fast_cpu
        self.autocast: torch.dtype | None = None
        self.cpu_dtype = torch.float32
        self.kind = "float32"  # for the run's log line
        if device.is_cuda:
            self.model = self.model.to(memory_format=torch.channels_last)
            if precision != "fp32":
                self.autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, device.autocast_dtype)
                self.kind = "autocast"
        elif fast_cpu and precision == "bf16":  # folded, channels_last, bf16 but the plan's fp32 layers
            # float32 in: each layer casts its input
            self.model = bf16_model(self.model, fp32_layers, copy_model=not owned)
            self.kind = "bfloat16" + (f", {counted(len(fp32_layers), 'layer')} in fp32" if fp32_layers else "")
        elif fast_cpu:  # BatchNorm folded into the convolutions, channels_last (see optimize.py)
            self.model = optimize_for_cpu(self.model, copy_model=not owned)
        elif precision == "bf16":  # the eager model in bf16 (a reference for tests)
            self.cpu_dtype, self.kind = torch.bfloat16, "bfloat16"
            self.model = self.model.to(torch.bfloat16)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Map a (N, bands, H, W) float32 batch to (N, classes, H, W) float32 probabilities."""
        result: np.ndarray = self.probs_tensor(batch).cpu().numpy()
        return result

    def probs_tensor(self, batch: np.ndarray) -> torch.Tensor:
        """Return the probabilities of :meth:`__call__` as a float32 tensor left on the model's device."""
        import torch

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
            if not bool(torch.isfinite(probs).all()):
                raise NonFiniteError("the model gives NaN or infinite outputs")
            return probs


class Engine(Protocol):
    """What predict needs of an engine: (N, bands, H, W) float32 in, (N, classes, H, W) float32 probabilities out.

    Implemented by :class:`TorchEngine` and :class:`fastunet_core.inference.onnx_engine.OnnxEngine`.
    """

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...  # noqa: D102


def make_engine(source: LoadedModel | nn.Module, device: DeviceChoice, sample_shape: tuple[int, int, int, int],
                engine: str = "auto", precision: str = "auto", fp32_layers: tuple[str, ...] = ()
                ) -> tuple[Engine, str]:
    """Pick the engine; return it and a one-line description.

    ``auto``: ONNX Runtime on CPUs at fp32 when onnxruntime is installed (about 2x eager), else PyTorch
    (BatchNorm folded, channels_last; autocast on CUDA; on CPUs in bf16 with ``fp32_layers`` kept in fp32, the
    checkpoint's recorded plan: :attr:`.precision.PrecisionChoice.fp32_layers`). A checkpoint whose weights are
    not loaded yet (:func:`~fastunet_core.models.checkpoint_file.open_model`) runs its export from the cache
    (:mod:`.onnx_cache`), written there on first use; a loaded model is exported in memory. An export
    that fails falls back to PyTorch (or is an error with ``engine="onnx"``).
    """
    from fastunet_core.inference.onnx_engine import onnx_available, onnxruntime_available

    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    cpu_fp32 = not device.is_cuda and precision in ("auto", "fp32")
    if engine == "onnx" and not cpu_fp32:
        raise ConfigError("the onnx engine runs on the CPU in fp32"
                          + hint("; use {} for CUDA or bf16", "engine", value="torch"))
    if engine == "onnx" or (engine == "auto" and cpu_fp32 and onnxruntime_available()):
        try:
            return _onnx_engine(source, sample_shape, onnx_available())
        except (ConfigError, CheckpointError):  # a damaged model fails in PyTorch too: said once, as an error
            raise
        except Exception as exc:  # an operator the exporter does not know: PyTorch still works
            if engine == "onnx":
                raise ConfigError(f"exporting the model to ONNX failed ({type(exc).__name__}: {exc})") from exc
            log.warning("ONNX export failed (%s: %s); running PyTorch instead", type(exc).__name__, exc)
    module, owned = _engine_module(source)
    torch_engine = TorchEngine(module, device, precision=precision, fp32_layers=fp32_layers, owned=owned)
    return torch_engine, f"pytorch ({torch_engine.kind})"


def _engine_module(source: LoadedModel | nn.Module) -> tuple[nn.Module, bool]:
    """Return the PyTorch model for an engine, and whether the engine owns it (may rewrite it in place).

    A checkpoint whose weights are not loaded yet is loaded for the engine alone, not kept in ``source``:
    the engine's rewrite (BatchNorm folded, bf16) then replaces the fp32 weights instead of adding to them
    (unet_skinny: 80 MB of fp32 weights no longer kept beside its 40 MB in bf16).
    """
    if not isinstance(source, LoadedModel):
        return source, False
    if source.model is None and source.onnx is None and source.path.is_file():
        from fastunet_core.models.checkpoint import load_checkpoint

        return load_checkpoint(source.path).torch_model(), True
    return source.torch_model(), False


def _onnx_engine(source: LoadedModel | nn.Module, sample_shape: tuple[int, int, int, int],
                 can_export: bool) -> tuple[Engine, str]:
    """Build the ONNX Runtime engine from the cached export, or from an export in memory."""
    from fastunet_core.inference.onnx_cache import cached_onnx
    from fastunet_core.inference.onnx_engine import OnnxEngine

    if isinstance(source, LoadedModel) and source.model is None and source.onnx is None:  # a checkpoint file
        try:
            entry = cached_onnx(source.path, source.meta, export=can_export)
        except OSError as exc:  # cache folder not writable: export in memory instead
            log.warning("cannot write the ONNX cache (%s); exporting in memory", exc)
            entry = None
        if entry is not None:
            how = EXPORTED if entry.exported else CACHED
            # built while the caller opens the raster and its outputs (start to first tile)
            return (OnnxEngine(entry.path, keep_optimized=True, background=True),
                    f"onnxruntime (CPU, fp32, {how})")
    if not can_export:
        raise ConfigError("the onnx engine needs the onnx package to export the model: pip install onnx")
    from fastunet_core.models.onnx_export import export_onnx_bytes

    _, bands, h, _ = sample_shape
    module = source.torch_model() if isinstance(source, LoadedModel) else source
    return OnnxEngine(export_onnx_bytes(module, bands, h)), "onnxruntime (CPU, fp32)"
