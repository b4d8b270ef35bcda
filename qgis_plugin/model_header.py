"""Read a model's metadata in QGIS's process without the engine's packages (the engine may live in its own venv).

A checkpoint's metadata is JSON in the safetensors header (8-byte little-endian length, then that many bytes
of JSON; ``__metadata__["fastunet"]``): read here with plain file reads, nothing unpickled, no torch, no
safetensors. ONNX models need onnxruntime and are read with the core's reader.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import TYPE_CHECKING

from fastunet_core.errors import CheckpointError

if TYPE_CHECKING:
    from fastunet_core.models.metadata import ModelMeta

    from .engine_session import EngineSession

MAX_HEADER_BYTES = 100_000_000


def needs_engine(path: str | Path) -> bool:
    """Return True for the models whose metadata only the engine can read (ONNX files, smp folders)."""
    p = Path(path)
    return p.suffix.lower() == ".onnx" or p.is_dir()


def read_model_meta(path: str | Path, session: EngineSession | None = None) -> ModelMeta:
    """Return the metadata of a fastunet-geo checkpoint (or ONNX model); raise CheckpointError in plain words.

    An ONNX model or an smp folder is read by the engine (``session``: the dock's engine process), which
    takes a while: never on the GUI thread (the dock uses :mod:`.model_reader`).
    """
    p = Path(path)
    if needs_engine(p):
        return _read_with_engine(p, session)
    from fastunet_core.models.metadata import ModelMeta

    if not p.is_file():
        raise CheckpointError(f"model file not found: {p}; check the path")
    try:
        with open(p, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError("file too short")
            (size,) = struct.unpack("<Q", head)
            if not 2 <= size <= min(MAX_HEADER_BYTES, p.stat().st_size - 8):
                raise ValueError("no safetensors header")
            header = json.loads(f.read(size))
        raw = (header.get("__metadata__") or {}).get("fastunet")
        expected = 8 + size + _data_length(header)
    except (OSError, ValueError, AttributeError, UnicodeDecodeError, TypeError, IndexError) as exc:
        raise CheckpointError(f"{p} is not a fastunet-geo checkpoint (not a safetensors file: {exc}); choose a model "
                              "written by fastunet-geo (.safetensors) or a Deepness-format .onnx") from exc
    found = p.stat().st_size
    if found != expected:
        raise CheckpointError(f"{p} is damaged or was not copied whole ({found:,} bytes, its header describes "
                              f"{expected:,}); copy the model file again")
    if raw is None:
        from fastunet_core.hints import speaking
        from fastunet_core.models.bare_weights import bare_weights_message

        from .words import QGIS

        with speaking(QGIS):  # no command-line tool named in QGIS
            raise CheckpointError(bare_weights_message(p))
    try:
        return ModelMeta.from_dict(json.loads(raw))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{p}: the checkpoint metadata is not valid JSON ({exc})") from exc


def _data_length(header: dict[str, object]) -> int:
    """Bytes of tensor data after the header: the largest end offset of the tensors it lists."""
    ends = [int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)]
    return max(ends, default=0)


def _read_with_engine(path: Path, session: EngineSession | None) -> ModelMeta:
    """Read an ONNX file's or an smp folder's metadata with the engine's packages (onnx, safetensors).

    Inside the QGIS programs, or with the engine in its own venv, these packages are not (safely) importable
    in QGIS's process: the read then runs as an engine call in the engine's Python, a second or so, and only
    for these model kinds (a checkpoint's header is read above with plain file reads).
    """
    from fastunet_core.models.metadata import ModelMeta

    from .engine_process import run_engine, use_subprocess
    from .progress_bridge import QuietSink

    if use_subprocess():
        return ModelMeta.from_dict(run_engine("model_meta", {"path": str(path)}, QuietSink(), session))
    from fastunet_core.models.checkpoint_file import read_metadata

    return read_metadata(path)
