"""Model registry, architectures and their size figures.

Attributes are imported on first use, so reading a checkpoint's metadata does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"REGISTRY": "registry", "build_model": "registry", "get_architecture": "registry",
            "size_divisor": "registry", "ModelSummary": "summary", "summarize": "summary"}

__all__ = ["REGISTRY", "ModelSummary", "build_model", "get_architecture", "size_divisor", "summarize"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"fastunet_core.models.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
