"""``--precision auto``: bf16 where the CPU runs it natively and the model is known to give the same answer.

bf16 keeps fp32's exponent range but only 8 bits of mantissa, so logits move by about 1 %: pixels whose two
best classes are that close may change class. Whether that matters is a property of the model, so it is
measured, not assumed: the share of pixels whose class is the same in bf16 as in fp32 (BatchNorm folded
in both, PyTorch with oneDNN), on the model's own validation tiles at the end of training, or on tiles the
user gives (``fastunet-geo init --agreement-tiles``). It is stored in the checkpoint's metrics as
``bf16_agreement`` (``{"value", "tiles", "source"}``). ``auto`` runs bf16 on a CPU with native bf16
(AVX512-BF16 or AMX) when that agreement is at least :data:`MIN_AGREEMENT`, and fp32 otherwise; the run
says which and why.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fastunet_core.hints import hint
from fastunet_core.models.metadata import ModelMeta
from fastunet_core.runtime.cpu import bf16_support
from fastunet_core.runtime.device import DeviceChoice

if TYPE_CHECKING:
    from torch import nn

AGREEMENT_KEY = "bf16_agreement"
MIN_AGREEMENT = 0.999


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a run uses (``fp32``, ``bf16``, or ``auto`` on CUDA: autocast) and why."""

    precision: str
    reason: str


def recorded_agreement(meta: ModelMeta) -> float | None:
    """Return the bf16-vs-fp32 class agreement recorded in the checkpoint, or None."""
    rec = meta.metrics.get(AGREEMENT_KEY) if meta.metrics else None
    value = rec.get("value") if isinstance(rec, dict) else rec
    return float(value) if isinstance(value, (int, float)) else None


def choose_precision(requested: str, meta: ModelMeta, device: DeviceChoice) -> PrecisionChoice:
    """Resolve ``--precision`` for this model on this device."""
    if requested != "auto":
        return PrecisionChoice(requested, "requested")
    if device.is_cuda:
        return PrecisionChoice("auto", "autocast on CUDA")
    cpu = bf16_support()
    if not cpu.native:
        return PrecisionChoice("fp32", "this CPU has no native bf16 (AVX512-BF16 or AMX)")
    agreement = recorded_agreement(meta)
    if agreement is None:
        return PrecisionChoice("fp32", f"CPU has {cpu.describe()}, but the model has no recorded bf16 agreement"
                                       + hint(" ({} measures it)", "agreement_tiles"))
    if agreement < MIN_AGREEMENT:
        return PrecisionChoice("fp32", f"the model's bf16 class agreement is {agreement:.3%}, below "
                                       f"{MIN_AGREEMENT:.1%}")
    return PrecisionChoice("bf16", f"CPU has {cpu.describe()} and the model's bf16 class agreement is "
                                   f"{agreement:.3%} (>= {MIN_AGREEMENT:.1%})")


def bf16_agreement(model: nn.Module, batches: Iterable[Any]) -> tuple[float, int]:
    """Return the share of pixels with the same argmax class in bf16 as in fp32, and the tiles compared.

    ``batches``: normalised (N, bands, H, W) float32 tensors or arrays (e.g. a validation loader's images).
    Both runs use the CPU inference path (BatchNorm folded, channels_last), as ``predict`` does.
    """
    import torch

    from fastunet_core.inference.optimize import optimize_for_cpu

    fp32 = optimize_for_cpu(model.cpu().eval())
    bf16 = optimize_for_cpu(model.cpu().eval()).to(torch.bfloat16)
    same, total, tiles = 0, 0, 0
    with torch.inference_mode():
        for batch in batches:
            x = torch.as_tensor(np.asarray(batch, dtype=np.float32)).contiguous(memory_format=torch.channels_last)
            a = fp32(x).argmax(1)
            b = bf16(x.to(torch.bfloat16)).float().argmax(1)
            same += int((a == b).sum())
            total += a.numel()
            tiles += x.shape[0]
    if total == 0:
        raise ValueError("no tiles to measure the bf16 agreement on")
    return same / total, tiles


def with_agreement(meta: ModelMeta, value: float, tiles: int, source: str) -> ModelMeta:
    """Return ``meta`` with the measured bf16 agreement recorded in its metrics."""
    metrics = {**meta.metrics, AGREEMENT_KEY: {"value": round(value, 6), "tiles": tiles, "source": source}}
    return dataclasses.replace(meta, metrics=metrics)


def raster_tiles(rasters: Iterable[str | Path], meta: ModelMeta, max_tiles: int = 16) -> list[np.ndarray]:
    """Cut up to ``max_tiles`` full tiles (the model's tile size) from ``rasters``, normalised as the model says.

    Tiles are taken on a regular grid spread over each raster (not only its first rows), up to an equal
    share per raster; a raster smaller than one tile gives none.
    """
    import rasterio
    from rasterio.windows import Window

    from fastunet_core.errors import InputRasterError

    paths = [Path(p) for p in rasters]
    tile, out = meta.tile_size_px, []
    per_raster = max(1, max_tiles // max(1, len(paths)))
    for path in paths:
        try:
            src = rasterio.open(path)
        except rasterio.errors.RasterioIOError as exc:
            raise InputRasterError(f"cannot read {path} for the bf16 agreement: {exc}") from exc
        with src:
            ny, nx = src.height // tile, src.width // tile
            cells = [(r, c) for r in range(ny) for c in range(nx)]
            step = max(1, len(cells) // per_raster)
            for r, c in cells[::step][:per_raster]:
                raw = src.read(list(meta.input.bands), window=Window(c * tile, r * tile, tile, tile))
                out.append(meta.input.normalise(raw)[None])
    return out


def record_agreement_from_rasters(checkpoint: str | Path, rasters: Iterable[str | Path],
                                  max_tiles: int = 16) -> float:
    """Measure a checkpoint's bf16 agreement on tiles of ``rasters`` and record it in the checkpoint."""
    from fastunet_core.errors import ConfigError
    from fastunet_core.models.checkpoint import load_checkpoint, save_checkpoint

    loaded = load_checkpoint(checkpoint)
    tiles = raster_tiles(rasters, loaded.meta, max_tiles)
    if not tiles:
        raise ConfigError(f"the agreement tiles hold no full {loaded.meta.tile_size_px} px tile; give larger rasters")
    value, n = bf16_agreement(loaded.torch_model(), tiles)
    save_checkpoint(checkpoint, loaded.torch_model(), with_agreement(loaded.meta, value, n, "user tiles"),
                    overwrite=True)
    return value
