"""Model registry, architectures and their size figures."""

from fastunet_core.models.registry import REGISTRY, build_model, get_architecture, size_divisor
from fastunet_core.models.summary import ModelSummary, summarize

__all__ = ["REGISTRY", "ModelSummary", "build_model", "get_architecture", "size_divisor", "summarize"]
