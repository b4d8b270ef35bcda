"""Checkpoints whose header length starts like a pickle, and reading metadata without torch (the dock's way)."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

from fastunet_core.models.checkpoint import load_checkpoint, read_metadata
from fastunet_core.models.checkpoint_file import read_metadata as read_checkpoint_header


def _with_header_length(src: Path, dst: Path, low_byte: int) -> Path:
    """Copy a safetensors file, padding its JSON header with spaces (as safetensors does) to a chosen length."""
    data = src.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header, body = data[8:8 + size], data[8 + size:]
    new_size = size + ((low_byte - size) % 256)
    dst.write_bytes(struct.pack("<Q", new_size) + header + b" " * (new_size - size) + body)
    return dst


def test_header_length_starting_like_a_pickle_is_still_a_checkpoint(make_checkpoint: object,
                                                                    tmp_path: Path) -> None:
    """A header of 0x..80 bytes begins with b"\\x80", a raw pickle's first byte: it was refused as a pickle."""
    path = _with_header_length(make_checkpoint(), tmp_path / "m.safetensors", 0x80)  # type: ignore[operator]
    assert path.read_bytes()[:1] == b"\x80"
    assert read_metadata(path) == read_checkpoint_header(path)
    assert load_checkpoint(path).meta.classes


def test_reading_the_header_imports_no_torch(make_checkpoint: object) -> None:
    path = make_checkpoint()  # type: ignore[operator]
    code = ("import sys; from fastunet_core.models.checkpoint_file import read_metadata; "
            f"m = read_metadata({str(path)!r}); print(m.tile_size_px, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["128", "False"], done.stderr
