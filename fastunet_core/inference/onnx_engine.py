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
import threading
from collections.abc import Callable
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


OPTIMIZED_FORMAT = 2  # 2: the weights in a file of their own beside the graph, memory-mapped when loaded
EXTERNAL_MIN_BYTES = 1024  # initializers at least this large go to the weights file
STALE_SECONDS = 3600  # weights files of earlier optimised forms are removed once this old (not while in use)


def optimized_path(model: Path) -> Path:
    """Return where ONNX Runtime's optimised form of ``model`` is kept for this CPU and ORT version.

    The optimised graph holds CPU-specific layouts (NCHWc blocks sized to the vector width), so it is
    keyed by the onnxruntime version and the CPU's feature flags. Its weights lie beside it in
    ``<name>.<token>.data`` (the graph names its own file): ONNX Runtime maps that file into memory instead of
    copying every weight out of the graph (0.1 CPU-s and 0.2 s saved per start for unet_skinny's 80 MB).
    """
    import hashlib

    ort = import_onnxruntime()

    flags = ""
    with contextlib.suppress(OSError):
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    key = f"{ort.__version__}|{platform.machine()}|{flags}|{OPTIMIZED_FORMAT}"
    tag = hashlib.blake2b(key.encode(), digest_size=6).hexdigest()
    return model.with_name(f"{model.stem}.opt-{tag}.ort.onnx")


def write_optimized(model: Path, make_options: Callable[[], Any]) -> Any:
    """Build a session from ``model``, saving the optimised graph and its weights file beside it.

    Both are written in a private folder first; the weights file gets a name of its own (a concurrent run
    may write another one) and is moved in before the graph, whose rename makes the entry visible. Where
    they cannot be written (a read-only cache, a full disk) the session is built without them.
    """
    import uuid

    ort = import_onnxruntime()
    opt = optimized_path(model)
    data_name = f"{opt.name}.{uuid.uuid4().hex[:12]}.data"
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{opt.name}.", suffix=".tmp", dir=opt.parent))
    except OSError:
        return ort.InferenceSession(str(model), make_options(), providers=["CPUExecutionProvider"])
    try:
        options = make_options()
        options.optimized_model_filepath = str(work / opt.name)
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", data_name)
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes",
                                         str(EXTERNAL_MIN_BYTES))
        options.log_severity_level = 3  # not the warning that the saved graph is CPU-specific: we know
        try:
            session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        except Exception:  # saving failed (disk full ...), or the model itself: then this raises again
            return ort.InferenceSession(str(model), make_options(), providers=["CPUExecutionProvider"])
        with contextlib.suppress(OSError):
            if (work / opt.name).is_file():
                if (work / data_name).is_file():
                    os.replace(work / data_name, opt.parent / data_name)
                os.replace(work / opt.name, opt)
                _remove_stale_weights(opt, keep=data_name)
        return session
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _remove_stale_weights(opt: Path, keep: str) -> None:
    """Remove weights files of earlier optimised forms of ``opt`` (damaged ones, lost races), once old."""
    import time

    for path in opt.parent.glob(f"{opt.name}.*.data"):
        with contextlib.suppress(OSError):
            if path.name != keep and time.time() - path.stat().st_mtime > STALE_SECONDS:
                path.unlink()


class OnnxEngine:
    """Softmax probabilities from an ONNX model (a file or its bytes) run by ONNX Runtime on the CPU.

    With ``keep_optimized`` (a model file in the cache), the graph ONNX Runtime optimised for this CPU is
    saved beside the model and loaded as it is next time (saves the optimisation passes at start-up).

    With ``background``, the session is built on a thread of its own and the constructor returns at once:
    ONNX Runtime releases the GIL while it reads the model and plans it, so the caller opens the raster and
    creates the outputs meanwhile (start to first tile; see README, "predict at default settings"). The first
    call waits for it; an error building it is raised there. A damaged optimised form is optimised again.
    """

    def __init__(self, model: str | os.PathLike[str] | bytes, threads: int | None = None,
                 arena: bool = True, mem_pattern: bool = False, spinning: bool = False,
                 keep_optimized: bool = False, background: bool = False) -> None:
        if not onnxruntime_available():
            raise ConfigError("the onnx engine needs onnxruntime: pip install onnxruntime")
        import_onnxruntime()  # here, not on the thread: the import points TMPDIR elsewhere for a moment
        self._model = model
        self._options = (threads, arena, mem_pattern, spinning, keep_optimized)
        self._session: Any = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._input_name: str | None = None
        if background:
            self._thread = threading.Thread(target=self._build_on_thread, name="fastunet-onnx-session")
            self._thread.start()
        else:
            self._session = self._build()

    def _build_on_thread(self) -> None:
        try:
            self._session = self._build()
        except BaseException as exc:  # handed to the first call, on the caller's thread
            self._error = exc

    def _build(self) -> Any:
        ort = import_onnxruntime()
        model = self._model
        threads, arena, mem_pattern, spinning, keep_optimized = self._options
        if isinstance(model, bytes) or not keep_optimized:
            source = model if isinstance(model, bytes) else str(Path(model))
            return ort.InferenceSession(source, session_options(threads, arena, mem_pattern, spinning),
                                        providers=["CPUExecutionProvider"])
        opt = optimized_path(Path(model))
        if opt.is_file():
            options = session_options(threads, arena, mem_pattern, spinning)
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            try:
                return ort.InferenceSession(str(opt), options, providers=["CPUExecutionProvider"])
            except Exception:  # a damaged optimised form (or its weights file gone): optimise the model again
                with contextlib.suppress(OSError):
                    opt.unlink()
        return write_optimized(Path(model), lambda: session_options(threads, arena, mem_pattern, spinning))

    @property
    def session(self) -> Any:
        """The ONNX Runtime session (waits for it when it is being built in the background)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            if isinstance(self._model, bytes):
                raise self._error
            what = "; it is a cached export: delete it, the next run exports the model again" \
                if self._options[-1] else ""
            raise ConfigError(f"ONNX Runtime cannot load {Path(self._model)} ({type(self._error).__name__}: "
                              f"{_first_line(self._error)}){what}") from self._error
        return self._session

    @property
    def input_name(self) -> str:
        """The model's input name."""
        if self._input_name is None:
            self._input_name = str(self.session.get_inputs()[0].name)
        return self._input_name

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Map a (N, bands, H, W) float32 batch to (N, classes, H, W) float32 logits."""
        out: np.ndarray = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]
        return out

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Map a (N, bands, H, W) float32 batch to (N, classes, H, W) float32 probabilities."""
        return softmax_channels(self.logits(batch))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
