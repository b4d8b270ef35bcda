"""What to say about a safetensors file without fastunet-geo metadata (plain Python: QGIS's process reads it too).

Most often it is the ``model.safetensors`` of an smp ``save_pretrained`` folder, picked instead of the folder
(:func:`~fastunet_core.models.smp_folder.is_smp_folder`: a folder holding ``config.json``): then the folder is
the model. Otherwise the weights need their description, which only the command line's ``init`` adds.
"""

from __future__ import annotations

from pathlib import Path

from fastunet_core.hints import hint

SMP_CONFIG = "config.json"  # what makes a folder an smp save_pretrained folder (see smp_folder.is_smp_folder)
SMP_FILES = ("model.safetensors", SMP_CONFIG)  # what such a folder holds


def smp_folder_of(path: str | Path) -> Path | None:
    """Return the smp folder that ``path`` (its ``model.safetensors`` or ``config.json``) belongs to, else None."""
    p = Path(path)
    if p.name in SMP_FILES and p.is_file() and (p.parent / SMP_CONFIG).is_file():
        return p.parent
    return None


def bare_weights_message(path: str | Path) -> str:
    """Say what to choose instead of a safetensors file without fastunet-geo metadata."""
    p = Path(path)
    folder = smp_folder_of(p)
    if folder is not None:
        return f"{p} holds only the weights of the smp model in the folder {folder}: give the folder instead"
    return (f"{p} is a safetensors file without fastunet-geo metadata; choose a fastunet-geo model, an smp "
            f"save_pretrained folder (with its {SMP_CONFIG}) or a Deepness-format .onnx"
            + hint(", or wrap these weights into a checkpoint with {}", "init_weights"))
