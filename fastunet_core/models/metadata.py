"""The self-describing model metadata stored inside every checkpoint.

Everything ``predict``, the QGIS dock and the Processing algorithms need to run a model comes from here:
the architecture and its constructor arguments, which raster bands to feed and how to scale them, the
classes with their names and colours, and the tile size and overlap the model was meant for.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastunet_core.errors import CheckpointError, ConfigError
from fastunet_core.hints import setting

FORMAT_NAME = "fastunet-geo"
FORMAT_VERSION = 1
OUTPUT_NODATA = 255  # class id written where the input has no data; class ids must stay below it

# Default value range per input data type: the range that maps to [0, 1] before mean/std.
DTYPE_RANGES: dict[str, tuple[float, float]] = {
    "uint8": (0.0, 255.0),
    "uint16": (0.0, 65535.0),
    "int16": (-32768.0, 32767.0),
    "float32": (0.0, 1.0),
    "float64": (0.0, 1.0),
}

RGB = tuple[int, int, int]
DEFAULT_PALETTE: tuple[RGB, ...] = (  # the one default class palette (classes given without a colour)
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
)


def default_color(class_id: int) -> RGB:
    """Return the default colour of a class id (the palette repeats every 12 ids)."""
    return DEFAULT_PALETTE[class_id % len(DEFAULT_PALETTE)]


MIN_DISTANCE_TO_GIVEN = 150.0
"""How far (:func:`colour_distance`) an automatic colour keeps from a colour the user gave another class.

#e31a1c and the palette's first red #e6194b are 68 apart and look the same on a map; the palette's own
closest pair (pink and lavender) is 80 apart, a pair of clearly different colours ~200-300.
"""


def colour_distance(a: RGB, b: RGB) -> float:
    """Return how different two colours look: the "redmean" weighted RGB distance (0 .. about 765).

    A cheap approximation of perceptual difference (www.compuphase.com/cmetric.htm): green weighs most,
    red more in reds, blue more in blues.
    """
    rmean = (a[0] + b[0]) / 2
    dr, dg, db = a[0] - b[0], a[1] - b[1], a[2] - b[2]
    return math.sqrt((2 + rmean / 256) * dr * dr + 4 * dg * dg + (2 + (255 - rmean) / 256) * db * db)


def automatic_colours(n_classes: int, given: dict[int, RGB]) -> dict[int, RGB]:
    """Return colours for the class ids in ``range(n_classes)`` not in ``given`` (the user's own colours).

    Each takes the next palette colour not taken yet that is at least :data:`MIN_DISTANCE_TO_GIVEN` from every
    given colour; when none is left so far, the free palette colour farthest from all colours taken so far.
    Without given colours this is the palette in order (:func:`default_color`). Past the palette's 12 colours,
    the palette repeats.
    """
    out: dict[int, RGB] = {}
    for cid in range(n_classes):
        if cid in given:
            continue
        free = [c for c in DEFAULT_PALETTE if c not in out.values()]
        far = [c for c in free if all(colour_distance(c, g) >= MIN_DISTANCE_TO_GIVEN for g in given.values())]
        taken = [*given.values(), *out.values()]
        if far:
            out[cid] = far[0]
        elif free:
            out[cid] = max(free, key=lambda c: min(colour_distance(c, t) for t in taken))
        else:
            out[cid] = default_color(cid)
    return out


@dataclass(frozen=True)
class ClassInfo:
    """One output class: the id written to the class raster, a name and an RGB colour."""

    id: int
    name: str
    color: tuple[int, int, int]

    def __post_init__(self) -> None:
        if not 0 <= self.id < OUTPUT_NODATA:
            raise ConfigError(f"class id {self.id} for {self.name!r} must be in 0..{OUTPUT_NODATA - 1}")
        if len(self.color) != 3 or not all(0 <= int(c) <= 255 for c in self.color):
            raise ConfigError(f"class {self.name!r} colour must be three values 0..255, got {self.color}")


@dataclass(frozen=True)
class InputSpec:
    """Which raster bands the model reads, and how raw values become model input.

    ``value = (raw - value_range[0]) / (value_range[1] - value_range[0])``, then
    ``(value - mean[b]) / std[b]`` per band. ``dtype`` is the data type the model was trained on; it is a
    check, not a conversion: a raster of another type gets a warning, since its range likely differs.
    """

    bands: tuple[int, ...]
    dtype: str = "uint8"
    value_range: tuple[float, float] = (0.0, 255.0)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not self.bands or any(b < 1 for b in self.bands):
            raise ConfigError(f"bands are 1-based raster band numbers, got {list(self.bands)}")
        lo, hi = self.value_range
        if not hi > lo:
            raise ConfigError(f"value range must have max > min, got {self.value_range}")
        n = len(self.bands)
        if not self.mean:
            object.__setattr__(self, "mean", (0.0,) * n)
        if not self.std:
            object.__setattr__(self, "std", (1.0,) * n)
        if len(self.mean) != n or len(self.std) != n:
            raise ConfigError(f"mean and std need one value per band ({n}), got {self.mean} and {self.std}")
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"std values must be positive, got {self.std}")

    @property
    def n_bands(self) -> int:
        """Number of input channels."""
        return len(self.bands)

    def fill_values(self) -> np.ndarray:
        """Return the raw value of each band that :meth:`normalise` maps to 0 (the training mean), float32.

        Pixels without data (nodata, NaN, +/-inf) are given this value before they reach a model, in
        training and evaluation as in predict, so the model sees the same neutral input everywhere.
        """
        lo, hi = self.value_range
        return (np.float32(lo) + np.asarray(self.mean, dtype=np.float32) * np.float32(hi - lo)).astype(np.float32)

    def normalise(self, raw: np.ndarray) -> np.ndarray:
        """Scale a (bands, ...) raw array to model input, float32."""
        lo, hi = self.value_range
        x = raw.astype(np.float32)
        x -= np.float32(lo)
        x *= np.float32(1.0 / (hi - lo))
        shape = (-1,) + (1,) * (raw.ndim - 1)
        x -= np.asarray(self.mean, dtype=np.float32).reshape(shape)
        x /= np.asarray(self.std, dtype=np.float32).reshape(shape)
        return x


@dataclass(frozen=True)
class ModelMeta:
    """Everything needed to rebuild and run a model, stored as JSON in the checkpoint."""

    architecture: str
    arch_args: Mapping[str, Any]
    input: InputSpec
    classes: tuple[ClassInfo, ...]
    tile_size_px: int = 512
    overlap_px: int = 64
    resolution_m: float | None = None
    training: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    versions: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.classes:
            raise ConfigError("a model needs at least one class")
        ids = [c.id for c in self.classes]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"class ids must be unique, got {ids}")

    @property
    def n_classes(self) -> int:
        """Number of output channels."""
        return len(self.classes)

    @property
    def class_ids(self) -> np.ndarray:
        """Map from output channel to class id (uint8)."""
        return np.asarray([c.id for c in self.classes], dtype=np.uint8)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        d = dataclasses.asdict(self)
        d["format"] = FORMAT_NAME
        d["format_version"] = FORMAT_VERSION
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelMeta:
        """Rebuild from :meth:`to_dict` output; raise :class:`CheckpointError` on anything malformed."""
        try:
            if d.get("format") != FORMAT_NAME:
                raise CheckpointError(f"metadata format is {d.get('format')!r}, expected {FORMAT_NAME!r}")
            if int(d.get("format_version", 0)) > FORMAT_VERSION:
                raise CheckpointError(
                    f"checkpoint format version {d['format_version']} is newer than this fastunet-geo "
                    f"understands ({FORMAT_VERSION}); upgrade fastunet-geo"
                )
            inp = d["input"]
            return cls(
                architecture=str(d["architecture"]),
                arch_args=dict(d.get("arch_args", {})),
                input=InputSpec(
                    bands=tuple(int(b) for b in inp["bands"]),
                    dtype=str(inp.get("dtype", "uint8")),
                    value_range=(float(inp["value_range"][0]), float(inp["value_range"][1])),
                    mean=tuple(float(v) for v in inp.get("mean", ())),
                    std=tuple(float(v) for v in inp.get("std", ())),
                ),
                classes=tuple(
                    ClassInfo(int(c["id"]), str(c["name"]), _rgb(c["color"])) for c in d["classes"]
                ),
                tile_size_px=int(d.get("tile_size_px", 512)),
                overlap_px=int(d.get("overlap_px", 64)),
                resolution_m=None if d.get("resolution_m") is None else float(d["resolution_m"]),
                training=dict(d.get("training", {})),
                metrics=dict(d.get("metrics", {})),
                versions=dict(d.get("versions", {})),
            )
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise CheckpointError(f"checkpoint metadata is malformed ({type(exc).__name__}: {exc})") from exc


def _rgb(value: Sequence[int]) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in value)
    return (r, g, b)


def default_classes(names: Sequence[str]) -> tuple[ClassInfo, ...]:
    """Classes with ids 0..n-1 and distinct default colours."""
    return tuple(ClassInfo(i, n, default_color(i)) for i, n in enumerate(names))


def parse_class_spec(spec: str) -> tuple[ClassInfo, ...]:
    """Parse ``"background,building=#ff0000,water"`` or ``"3"`` into classes.

    A bare number gives that many classes named ``class_0`` ...; names may carry ``=#rrggbb`` colours.
    """
    spec = spec.strip()
    if spec.isdigit():
        return default_classes([f"class_{i}" for i in range(int(spec))])
    items = [s.strip() for s in spec.split(",") if s.strip()]
    if not items:
        raise ConfigError(f"{setting('init_classes')} needs a count or a comma-separated list of names")
    names = [i.split("=")[0] for i in items]
    given: dict[int, RGB] = {}
    for cid, (name, item) in enumerate(zip(names, items, strict=True)):
        if "=" in item:
            hexcol = item.split("=", 1)[1].lstrip("#")
            if len(hexcol) != 6:
                raise ConfigError(f"colour for class {name!r} must be #rrggbb, got {item.split('=', 1)[1]!r}")
            try:
                given[cid] = _rgb([int(hexcol[i : i + 2], 16) for i in (0, 2, 4)])
            except ValueError as exc:
                raise ConfigError(f"colour for class {name!r} is not hex: {hexcol!r}") from exc
    colours = {**automatic_colours(len(names), given), **given}  # automatic ones far from the user's
    return tuple(ClassInfo(cid, name, colours[cid]) for cid, name in enumerate(names))
