"""The ONNX export of each checkpoint, cached in the user's cache folder so runs after the first skip torch.

Exporting traces the whole model through PyTorch (seconds, and torch's ~300 MB); a run that finds the
export in the cache loads it straight into ONNX Runtime and never imports torch. The cache key is a digest
of the checkpoint's weights (not its metadata, see
:func:`~fastunet_core.models.checkpoint_file.weights_file_digest`), its architecture and constructor
arguments, and the export format; a retrained or edited checkpoint gets a new entry. Entries are written
to a temporary file and renamed, so a crash or two runs at once never leave a half-written model.

Folder: ``$FASTUNET_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/fastunet-geo`` (``~/.cache/fastunet-geo``),
``~/Library/Caches/fastunet-geo`` on macOS, ``%LOCALAPPDATA%\\fastunet-geo\\Cache`` on Windows; the
exports live in its ``onnx`` folder and can be deleted at any time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fastunet_core.models.checkpoint_file import weights_file_digest
from fastunet_core.models.metadata import ModelMeta

CACHE_FORMAT = 1  # bump when the exported graph changes (opset, input/output names, dynamic axes)


def cache_root() -> Path:
    """Return the user's cache folder for fastunet-geo (not created here)."""
    if os.environ.get("FASTUNET_CACHE_DIR"):
        return Path(os.environ["FASTUNET_CACHE_DIR"])
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "fastunet-geo" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "fastunet-geo"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fastunet-geo"


def cached_weights_digest(checkpoint: Path) -> str:
    """Return :func:`weights_file_digest` of ``checkpoint``, remembered per file version in the cache.

    Hashing the weights reads the whole file (0.1-0.3 s for unet_skinny's 80 MB); the digest is kept in a
    small index keyed by the file's resolved path, size, inode and modification time, so an unchanged
    checkpoint is hashed once. A damaged or unwritable index is ignored.
    """
    st = checkpoint.stat()
    ident = f"{checkpoint.resolve()}|{st.st_size}|{st.st_ino}|{st.st_mtime_ns}"
    index = cache_root() / "onnx" / "digests.json"
    try:
        known = json.loads(index.read_text())
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    if isinstance(known.get(ident), str):
        return str(known[ident])
    digest = weights_file_digest(checkpoint)
    known[ident] = digest
    with contextlib.suppress(OSError):
        index.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".digests.", suffix=".tmp", dir=index.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(dict(list(known.items())[-200:]), f)  # the most recent entries
        os.replace(tmp, index)
    return digest


def onnx_cache_key(checkpoint: Path, meta: ModelMeta) -> str:
    """Return the cache key of a checkpoint's export (weights digest + architecture + format)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(cached_weights_digest(checkpoint).encode())
    h.update(json.dumps({"arch": meta.architecture, "args": meta.arch_args, "bands": meta.input.n_bands,
                         "classes": meta.n_classes, "format": CACHE_FORMAT}, sort_keys=True, default=list).encode())
    return h.hexdigest()


@dataclass(frozen=True)
class CachedOnnx:
    """Where a checkpoint's ONNX export lies, and whether this call had to export it."""

    path: Path
    exported: bool


def cached_onnx(checkpoint: str | os.PathLike[str], meta: ModelMeta, export: bool = True) -> CachedOnnx | None:
    """Return the cached ONNX export of ``checkpoint``, exporting it first if it is not there yet.

    With ``export=False`` a missing entry gives None. Raises ``OSError`` when the cache folder cannot be
    written (the caller then exports in memory).
    """
    ckpt = Path(checkpoint)
    folder = cache_root() / "onnx"
    target = folder / f"{meta.architecture}-{onnx_cache_key(ckpt, meta)}.onnx"
    if target.is_file():
        return CachedOnnx(target, exported=False)
    if not export:
        return None
    from fastunet_core.models.onnx_export import export_checkpoint_onnx  # imports torch: only on a miss

    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".tmp", dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        export_checkpoint_onnx(ckpt, tmp)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return CachedOnnx(target, exported=True)
