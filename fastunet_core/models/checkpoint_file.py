"""Read a checkpoint file without PyTorch: its metadata, and a digest of its weights.

A checkpoint is a safetensors file (see :mod:`fastunet_core.models.checkpoint`). What ``predict`` needs
before it runs anything (the metadata, and which weights these are, to find the cached ONNX export) is
read here with the safetensors header and plain file reads, so an ONNX Runtime run never imports torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
from safetensors import SafetensorError, safe_open

from fastunet_core.errors import CheckpointError, ConfigError, UnsafeCheckpointError
from fastunet_core.hints import hint
from fastunet_core.models.bare_weights import bare_weights_message
from fastunet_core.models.deepness import ModelOverrides, OnnxModelSpec, is_onnx_path, read_onnx_model
from fastunet_core.models.metadata import ModelMeta
from fastunet_core.models.smp_folder import is_smp_folder, read_smp_folder

if TYPE_CHECKING:
    from torch import nn

METADATA_KEY = "fastunet"
_PICKLE_MAGICS = (b"PK\x03\x04", b"\x80")  # torch.save zip archive, raw pickle protocol >= 2
_HEADER_LIMIT = 100_000_000


@dataclass
class LoadedModel:
    """A model with its metadata: a checkpoint (weights loaded now or on first use) or an ONNX file.

    ``model`` is None until :meth:`torch_model` loads the weights (which imports torch), and always for an
    ONNX file run as it is; ``onnx`` then says how.
    """

    model: nn.Module | None
    meta: ModelMeta
    path: Path
    onnx: OnnxModelSpec | None = None
    assumed: tuple[str, ...] = ()  # what a foreign model file did not say and was assumed

    def torch_model(self) -> nn.Module:
        """Return the PyTorch model (loading the checkpoint's weights the first time), or raise for ONNX."""
        if self.model is None:
            if self.onnx is not None or not self.path.is_file():
                raise ConfigError(f"{self.path.name} is an ONNX model; this needs a PyTorch checkpoint (.safetensors)")
            from fastunet_core.models.checkpoint import load_checkpoint

            self.model = load_checkpoint(self.path).torch_model()
        return self.model


def open_model(path: str | os.PathLike[str], overrides: ModelOverrides | None = None) -> LoadedModel:
    """Read a model's metadata (an ONNX file's run description) and leave the weights on disk (no torch)."""
    p = Path(path)
    if is_onnx_path(p):
        onnx_meta, spec = read_onnx_model(p, overrides)
        return LoadedModel(None, onnx_meta, p, spec, spec.assumed)
    if is_smp_folder(p):  # an smp model needs torch anyway: load it now
        from fastunet_core.models.checkpoint import load_checkpoint

        return load_checkpoint(p, overrides)
    return LoadedModel(None, read_metadata(p), p)


def read_metadata(path: str | os.PathLike[str], overrides: ModelOverrides | None = None) -> ModelMeta:
    """Read only the metadata of a model (fast: the weights are not loaded).

    A model is a fastunet-geo checkpoint, a Deepness-format ONNX file (``.onnx``) or an smp
    ``save_pretrained`` folder; ``overrides`` supply
    what a foreign file lacks (see :class:`~fastunet_core.models.deepness.ModelOverrides`).
    """
    if is_onnx_path(path):
        return read_onnx_model(path, overrides)[0]
    if is_smp_folder(path):
        return read_smp_folder(path, overrides)[0]
    if Path(path).is_dir():
        raise CheckpointError(f"{path} is a folder without config.json; a model is a .safetensors checkpoint, a "
                              "Deepness-format .onnx file or an smp save_pretrained folder")
    p = check_checkpoint_file(Path(path))
    try:
        with safe_open(str(p), framework="numpy") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{p} is not a fastunet-geo checkpoint (not a readable safetensors file: {exc})") from exc
    if raw is None:
        raise CheckpointError(bare_weights_message(p))
    try:
        return ModelMeta.from_dict(json.loads(raw))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{p}: the checkpoint metadata is not valid JSON ({exc})") from exc


def _read_tensor_header(f: BinaryIO, p: Path) -> tuple[dict[str, Any], int]:
    """Read a safetensors file's tensor table (metadata left out) and its length, leaving ``f`` at the data."""
    (n,) = struct.unpack("<Q", f.read(8))
    try:
        header = json.loads(f.read(n))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{p} is not a fastunet-geo checkpoint (bad safetensors header: {exc})") from exc
    header.pop("__metadata__", None)
    return header, n


def weights_file_digest(path: str | os.PathLike[str]) -> str:
    """Return a digest of the weights stored in a checkpoint: tensor names, types, shapes and bytes.

    The metadata is left out, so recording figures in a checkpoint (e.g. its bf16 agreement) keeps the
    digest; any change to a weight changes it.
    """
    p = check_checkpoint_file(Path(path))
    h = hashlib.blake2b(digest_size=16)
    with p.open("rb") as f:
        header, _ = _read_tensor_header(f, p)
        h.update(json.dumps(header, sort_keys=True).encode())
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# a float is NaN or infinite when all its exponent bits are set: the mask of those bits per safetensors dtype
_EXPONENT_BITS = {"F64": (np.uint64, 0x7FF0000000000000), "F32": (np.uint32, 0x7F800000),
                  "F16": (np.uint16, 0x7C00), "BF16": (np.uint16, 0x7F80)}


def nonfinite_weights(path: str | os.PathLike[str]) -> list[str]:
    """Return the names of a checkpoint's floating-point tensors holding NaN or inf, in file order (no torch).

    Read from the file as it is (memory-mapped, the exponent bits of each value tested), so ``info`` can
    say that a model is damaged without loading it.
    """
    p = check_checkpoint_file(Path(path))
    with p.open("rb") as f:
        header, n = _read_tensor_header(f, p)
    size = p.stat().st_size - 8 - n
    if size <= 0:
        return []
    data = np.memmap(p, dtype=np.uint8, mode="r", offset=8 + n, shape=(size,))
    bad = []
    for name, entry in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
        kind = _EXPONENT_BITS.get(entry["dtype"])
        start, end = entry["data_offsets"]
        if kind is None or end <= start:
            continue
        dtype, mask = kind
        bits = data[start:end].view(dtype)
        if bool(((bits & dtype(mask)) == dtype(mask)).any()):
            bad.append(name)
    return bad


def describe_nonfinite(names: list[str]) -> str:
    """Say which tensors are affected, e.g. ``3 tensors (e.g. enc.0.weight)``."""
    return f"{len(names)} tensor{'s' if len(names) != 1 else ''} (e.g. {names[0]})"


def damaged_weights_message(source: str, bad: list[str]) -> str:
    """Say that ``source``'s tensors ``bad`` hold NaN or inf: the model cannot be used."""
    return (f"{source}: {describe_nonfinite(bad)} {'hold' if len(bad) > 1 else 'holds'} NaN or infinite values; "
            "the weights are damaged (e.g. saved from a diverged training run) and cannot be used")


def looks_like_pickle(p: Path) -> bool:
    """Return True when the file starts like a PyTorch pickle (``torch.save``); never for a safetensors file.

    A safetensors file starts with its header's length (8 bytes, little-endian), so a header of 0x380 bytes
    starts with ``80 03``, a raw pickle's protocol-3 magic: such a file is recognised by its JSON header.
    """
    with p.open("rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] <= p.stat().st_size - 8:
        return False  # a safetensors header follows
    return any(head.startswith(m) for m in _PICKLE_MAGICS)


def check_checkpoint_file(p: Path, allow_pickle: bool = False) -> Path:
    """Raise a readable error unless ``p`` is an existing safetensors file (or, if allowed, a pickle)."""
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {p}")
    if not p.is_file():
        raise CheckpointError(f"checkpoint path is not a file: {p}")
    if not allow_pickle and looks_like_pickle(p):
        beside = [q for q in (p.parent / "best.safetensors", p.parent / "last.safetensors") if q.is_file()]
        raise UnsafeCheckpointError(
            f"{p} is a PyTorch pickle file, not a fastunet-geo checkpoint; it is refused unread because "
            "unpickling can run arbitrary code"
            # a training run's resume state: its models lie beside it
            + (f". The model of this run is {beside[0]}" if beside
               else hint(". Wrap plain weights with {}", "init_weights"))
        )
    with p.open("rb") as f:
        head = f.read(8)
    if len(head) < 8 or struct.unpack("<Q", head)[0] > min(p.stat().st_size, _HEADER_LIMIT):
        raise CheckpointError(f"{p} is not a fastunet-geo checkpoint (not a safetensors file)")
    return p
