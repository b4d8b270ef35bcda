"""Which ground resolution to run a model at, and the grids that follow from it.

A CNN learns objects at the pixel size it was trained at: run at another scale, buildings and fields look
larger or smaller than anything it has seen, and results fall apart without any error. ``auto`` (the default)
runs the model at its own resolution whenever the raster's differs by more than 10 %: tiles are read
resampled (bilinear) and the class map is written on the source raster's grid; ``native`` keeps the raster's
pixels; a number (metres) runs at that resolution. Resolutions are ground sizes measured on the ellipsoid
(:func:`fastunet_core.io.raster_input.ground_resolution_m`), so rasters in degrees work too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastunet_core.errors import ConfigError
from fastunet_core.hints import hint, setting

if TYPE_CHECKING:  # parse_resolution runs in QGIS's process, which may lack rasterio's affine
    from affine import Affine

AUTO_TOLERANCE = 0.10  # auto resamples when the raster's resolution is more than this far from the model's
AUTO_MAX_RATIO = 8.0  # ... and at most this many times finer or coarser: beyond, the data likely do not suit
OUTPUT_GRIDS = ("source", "model")


@dataclass(frozen=True)
class ResolutionPlan:
    """The resolution a run uses: ``factor`` = run pixel size / raster pixel size (1: the raster's own)."""

    factor: float
    target_m: float | None
    reason: str

    @property
    def resamples(self) -> bool:
        """True when tiles are read at another resolution than the raster's."""
        return abs(self.factor - 1.0) > 1e-3


def parse_resolution(value: str | float) -> str | float:
    """Return ``auto``, ``native`` or a positive number of metres; raise a readable error otherwise."""
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        text = value.strip().lower()
        if text in ("auto", "native"):
            return text
        try:
            number = float(text.removesuffix("m"))
        except ValueError:
            raise ConfigError(f"{setting('resolution')} takes auto, native or metres (e.g. 0.3), "
                              f"got {value!r}") from None
    if not number > 0:
        raise ConfigError(f"{setting('resolution')} must be a positive number of metres, got {value!r}")
    return number


def plan_resolution(request: str | float, raster_m: float | None, model_m: float | None) -> ResolutionPlan:
    """Decide the run's resolution from the request, the raster's and the model's ground resolution."""
    wanted = parse_resolution(request)
    have = f"{raster_m:.3g} m" if raster_m else "unknown"
    if wanted == "native":
        return ResolutionPlan(1.0, raster_m, f"the raster's own ({have}), as asked ({setting('resolution', 'native')})")
    if isinstance(wanted, float):
        if not raster_m:
            raise ConfigError(f"{setting('resolution', 'METRES')} needs a raster whose ground resolution is known "
                              f"(a CRS and a geotransform); use {setting('resolution', 'native')}")
        return ResolutionPlan(wanted / raster_m, wanted, f"{wanted:.3g} m as asked (the raster has {have})")
    if not model_m:
        return ResolutionPlan(1.0, raster_m, f"the raster's own ({have}): the model does not record the "
                              f"resolution it was trained at{hint(' (give it with {})', 'model_resolution')}")
    if not raster_m:
        return ResolutionPlan(1.0, None, "the raster's own: its ground resolution is unknown (no CRS)")
    off = raster_m / model_m - 1.0
    if abs(off) <= AUTO_TOLERANCE:
        return ResolutionPlan(1.0, raster_m, f"the raster's own ({have}): within {AUTO_TOLERANCE:.0%} of the "
                              f"model's {model_m:.3g} m")
    ratio = model_m / raster_m
    if not 1 / AUTO_MAX_RATIO <= ratio <= AUTO_MAX_RATIO:
        return ResolutionPlan(1.0, raster_m, f"the raster's own ({have}): {max(ratio, 1 / ratio):.0f}x from the "
                              f"model's {model_m:.3g} m is too far to resample automatically "
                              f"({setting('resolution', f'{model_m:.3g}')} forces it)")
    return ResolutionPlan(ratio, model_m, f"the model's {model_m:.3g} m (the raster's {have} is "
                          f"{abs(off):.0%} {'finer' if off < 0 else 'coarser'})")


def scaled_grid(transform: Affine, width: int, height: int, factor: float) -> tuple[Affine, int, int]:
    """Return the grid over the same extent with pixels ``factor`` times larger (size rounded, extent kept)."""
    new_w, new_h = max(1, round(width / factor)), max(1, round(height / factor))
    from affine import Affine

    return transform @ Affine.scale(width / new_w, height / new_h), new_w, new_h
