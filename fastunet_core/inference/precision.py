"""``--precision auto``: bf16 where the CPU runs it natively and the model is known to give the same answer.

bf16 keeps fp32's exponent range but only 8 bits of mantissa, so logits move by about 1 %: pixels whose two
best classes are that close may change class. Whether that matters is a property of the model, so it is
measured, not assumed: the share of pixels whose class is the same in bf16 as in fp32 (BatchNorm folded
in both, PyTorch with oneDNN), on the model's own validation tiles at the end of training, or on tiles the
user gives (``fastunet-geo init --agreement-tiles``).

Where all-bf16 agrees too little, a few layers are kept in fp32 (:func:`plan_bf16`): the layers at either end
of the network are tried (the first ones read the input, whose rounding to bf16 merges neighbouring grey
levels; the last ones write the logits), one more at a time, the one that raises the agreement most first,
until it reaches :data:`MIN_AGREEMENT`. The plan and its agreement are stored in the checkpoint's metrics
as ``bf16_agreement`` (``{"value", "tiles", "source", "fp32_layers", "bf16_only"}``; a checkpoint recorded
before plans existed has no ``fp32_layers``: all-bf16, which is what its value measured). ``auto`` runs
that plan (:func:`fastunet_core.inference.optimize.bf16_model`, the one function measuring and predicting
build the model with) on a CPU with native bf16 (AVX512-BF16 or AMX) when its agreement is at least
:data:`MIN_AGREEMENT`, and fp32 otherwise; the run says which and why.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fastunet_core.hints import counted, hint
from fastunet_core.models.metadata import ModelMeta
from fastunet_core.runtime.cpu import bf16_support
from fastunet_core.runtime.device import DeviceChoice

if TYPE_CHECKING:
    import torch
    from torch import nn

AGREEMENT_KEY = "bf16_agreement"
MIN_AGREEMENT = 0.999
END_LAYERS = 3  # layers tried in fp32 at each end of the network
MAX_FP32_LAYERS = 3  # at most this many layers kept in fp32 (beyond that the speed-up shrinks)
PLAN_SECONDS = 60.0  # no new trial starts after this long (a large model on many tiles)
EMULATED_BF16 = ("this CPU has no native bf16 (AVX512-BF16 or AMX): bf16 is emulated, many times slower than fp32 "
                 "(precision auto picks fp32 on this CPU)")


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a run uses (``fp32``, ``bf16``, or ``auto`` on CUDA: autocast) and why.

    ``fp32_layers``: for bf16 on the CPU, the layers kept in fp32 (the checkpoint's recorded plan).
    """

    precision: str
    reason: str
    fp32_layers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Bf16Plan:
    """Layers kept in fp32 in the CPU bf16 path and the measured class agreement with fp32."""

    fp32_layers: tuple[str, ...]
    agreement: float  # with those layers in fp32
    tiles: int
    bf16_only: float  # with every layer in bf16

    def describe(self) -> str:
        """Say the agreement and the layers kept in fp32, in a few words."""
        return f"{self.agreement:.3%}" + (f" {plan_words(self.fp32_layers)} (all-bf16: {self.bf16_only:.3%})"
                                          if self.fp32_layers else "")


def plan_words(fp32_layers: Sequence[str]) -> str:
    """Return ``with N layers kept in fp32 (a, b)``, or an empty string for all-bf16."""
    return f"with {counted(len(fp32_layers), 'layer')} kept in fp32 ({', '.join(fp32_layers)})" if fp32_layers else ""


def recorded_agreement(meta: ModelMeta) -> float | None:
    """Return the bf16-vs-fp32 class agreement recorded in the checkpoint, or None."""
    rec = meta.metrics.get(AGREEMENT_KEY) if meta.metrics else None
    value = rec.get("value") if isinstance(rec, dict) else rec
    return float(value) if isinstance(value, (int, float)) else None


def recorded_fp32_layers(meta: ModelMeta) -> tuple[str, ...]:
    """Return the layers the recorded plan keeps in fp32 (none for all-bf16 and for older records)."""
    rec = meta.metrics.get(AGREEMENT_KEY) if meta.metrics else None
    layers = rec.get("fp32_layers") if isinstance(rec, dict) else None
    return tuple(str(layer) for layer in layers) if isinstance(layers, list) else ()


def choose_precision(requested: str, meta: ModelMeta, device: DeviceChoice) -> PrecisionChoice:
    """Resolve ``--precision`` for this model on this device (bf16 on the CPU: with the recorded plan)."""
    layers = recorded_fp32_layers(meta)
    if requested != "auto":
        if requested != "bf16" or device.is_cuda:
            return PrecisionChoice(requested, "requested")
        emulated = "" if bf16_support().native else f"; {EMULATED_BF16}"
        if layers:
            return PrecisionChoice("bf16", f"requested; {plan_words(layers)}, as recorded{emulated}", layers)
        return PrecisionChoice("bf16", f"requested{emulated}")
    if device.is_cuda:
        return PrecisionChoice("auto", "autocast on CUDA")
    cpu = bf16_support()
    if not cpu.native:
        return PrecisionChoice("fp32", "this CPU has no native bf16 (AVX512-BF16 or AMX)")
    agreement = recorded_agreement(meta)
    if agreement is None:
        return PrecisionChoice("fp32", f"CPU has {cpu.describe()}, but the model has no recorded bf16 agreement"
                                       + hint(" ({} measures it)", "agreement_tiles"))
    what = "bf16 class agreement" + (f", {plan_words(layers)}," if layers else "")
    if agreement < MIN_AGREEMENT:
        return PrecisionChoice("fp32", f"the model's {what} is {agreement:.3%}, below {MIN_AGREEMENT:.1%}")
    return PrecisionChoice("bf16", f"CPU has {cpu.describe()} and the model's {what} is {agreement:.3%} "
                                   f"(>= {MIN_AGREEMENT:.1%})", layers)


def _as_tensor(batch: Any) -> torch.Tensor:
    import torch

    return torch.as_tensor(np.asarray(batch, dtype=np.float32)).contiguous(memory_format=torch.channels_last)


def plan_bf16(model: nn.Module, batches: Iterable[Any], target: float = MIN_AGREEMENT,
              max_layers: int = MAX_FP32_LAYERS, max_seconds: float = PLAN_SECONDS,
              clock: Callable[[], float] = time.perf_counter) -> Bf16Plan:
    """Measure the CPU bf16 path's class agreement with fp32; keep layers in fp32 until it reaches ``target``.

    ``batches``: normalised (N, bands, H, W) float32 tensors or arrays (e.g. a validation loader's images).
    Both runs use the CPU inference path (BatchNorm folded, channels_last), as ``predict`` does. All-bf16 is
    measured first; below ``target``, each of the :data:`END_LAYERS` first and last layers with weights is
    tried in fp32 and the best one kept, then the next, up to ``max_layers`` (and while it still helps).
    No new trial starts after ``max_seconds``. The agreement recorded is the one on these tiles.
    """
    import torch

    from fastunet_core.inference.optimize import bf16_model, optimize_for_cpu, weighted_layers

    model = model.cpu().eval()
    tiles = [_as_tensor(b) for b in batches]
    if not tiles or not sum(t.shape[0] for t in tiles):
        raise ValueError("no tiles to measure the bf16 agreement on")
    fp32 = optimize_for_cpu(model)
    with torch.inference_mode():
        refs = [fp32(x).argmax(1) for x in tiles]

    def agreement(layers: tuple[str, ...]) -> float:
        run, same, total = bf16_model(model, layers), 0, 0
        with torch.inference_mode():
            for x, ref in zip(tiles, refs, strict=True):
                same += int((run(x).float().argmax(1) == ref).sum())
                total += ref.numel()
        return same / total

    names = weighted_layers(fp32)
    candidates = list(dict.fromkeys(names[:END_LAYERS] + names[-END_LAYERS:]))
    plan: tuple[str, ...] = ()
    best = bf16_only = agreement(plan)
    t0 = clock()
    while best < target and len(plan) < min(max_layers, len(candidates)) and clock() - t0 <= max_seconds:
        trials: dict[str, float] = {}
        for layer in (c for c in candidates if c not in plan):
            trials[layer] = agreement((*plan, layer))
            if clock() - t0 > max_seconds:
                break
        layer = max(trials, key=lambda k: trials[k])
        if trials[layer] <= best:  # no layer helps: more would only cost speed
            break
        plan, best = (*plan, layer), trials[layer]
    return Bf16Plan(plan, best, sum(t.shape[0] for t in tiles), bf16_only)


def with_plan(meta: ModelMeta, plan: Bf16Plan, source: str) -> ModelMeta:
    """Return ``meta`` with the measured bf16 plan and its agreement recorded in its metrics."""
    record = {"value": round(plan.agreement, 6), "tiles": plan.tiles, "source": source,
              "fp32_layers": list(plan.fp32_layers), "bf16_only": round(plan.bf16_only, 6)}
    return dataclasses.replace(meta, metrics={**meta.metrics, AGREEMENT_KEY: record})


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
                                  max_tiles: int = 16) -> Bf16Plan:
    """Measure a checkpoint's bf16 plan and agreement on tiles of ``rasters`` and record them in the checkpoint."""
    from fastunet_core.errors import ConfigError
    from fastunet_core.models.checkpoint import load_checkpoint, save_checkpoint

    loaded = load_checkpoint(checkpoint)
    tiles = raster_tiles(rasters, loaded.meta, max_tiles)
    if not tiles:
        raise ConfigError(f"the agreement tiles hold no full {loaded.meta.tile_size_px} px tile; give larger rasters")
    plan = plan_bf16(loaded.torch_model(), tiles)
    save_checkpoint(checkpoint, loaded.torch_model(), with_plan(loaded.meta, plan, "user tiles"), overwrite=True)
    return plan
