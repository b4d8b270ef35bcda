"""Model registry and architectures."""

from fastunet_core.models.registry import REGISTRY, build_model, get_architecture, size_divisor

__all__ = ["REGISTRY", "build_model", "get_architecture", "size_divisor"]
