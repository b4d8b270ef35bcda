"""``init_checkpoint``: make a checkpoint from an architecture name (random or imported weights)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from fastunet_core.models.checkpoint import load_weights, match_prefix, read_state_dict, save_checkpoint
from fastunet_core.models.metadata import DTYPE_RANGES, InputSpec, ModelMeta, parse_class_spec
from fastunet_core.models.registry import build_model, check_arch_args, check_tile_multiple, get_architecture


@dataclass(frozen=True)
class InitRequest:
    """Everything needed to describe a new model."""

    architecture: str
    classes: str
    bands: tuple[int, ...] = (1, 2, 3)
    dtype: str = "uint8"
    value_range: tuple[float, float] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    tile_size_px: int = 512
    overlap_px: int = 64
    resolution_m: float | None = None
    weights: Path | None = None
    seed: int = 0
    arch_args: dict[str, object] | None = None


def init_checkpoint(req: InitRequest, output: str | Path, overwrite: bool = False) -> Path:
    """Build the model, optionally load weights, and save a self-describing checkpoint."""
    arch = get_architecture(req.architecture)
    classes = parse_class_spec(req.classes)
    spec = InputSpec(bands=tuple(req.bands), dtype=req.dtype,
                     value_range=req.value_range or DTYPE_RANGES[req.dtype],
                     mean=tuple(req.mean or ()), std=tuple(req.std or ()))
    args = check_arch_args({**arch.defaults, **(req.arch_args or {})})
    torch.manual_seed(req.seed)
    model = build_model(arch.name, spec.n_bands, len(classes), args)
    check_tile_multiple(req.tile_size_px, arch.name, args)  # predict would refuse the model's own tile size
    if req.weights is not None:
        state = match_prefix(set(model.state_dict()), read_state_dict(req.weights))
        load_weights(model, state, source=str(req.weights))
    meta = ModelMeta(architecture=arch.name, arch_args=args, input=spec, classes=classes,
                     tile_size_px=req.tile_size_px, overlap_px=req.overlap_px, resolution_m=req.resolution_m,
                     training={"source": "imported weights" if req.weights else "untrained (random init)",
                               "seed": req.seed})
    return save_checkpoint(output, model, meta, overwrite=overwrite)
