"""What ``vectorize_raster`` takes and returns: plain data, importable without the vector libraries.

:mod:`~fastunet_core.polygons.vectorize` loads GDAL's vector side, pyogrio, shapely and pyproj (about a
second of start-up); ``predict`` needs only these dataclasses until a run really writes polygons.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_WINDOW_PX = 2048


@dataclass(frozen=True)
class VectorizeOptions:
    """How to vectorise a class raster.

    Attributes:
        classes: Class names or ids to keep; None keeps every class but one named "background".
        simplify_m: Coverage-simplification tolerance in metres (0: keep the exact pixel outlines).
        min_area_m2: Drop polygons, and fill holes, smaller than this many square metres.
        dissolve: Write one (multi)polygon per class instead of one polygon per region.
        overwrite: Replace existing output files.
        window_px: Side of the square windows the raster is read and polygonised in.
        workers: Processes polygonising windows (1: all in this process). More use more cores (about
            0.5x the time with 2 on 2 idle cores); each worker holds one window's working memory.

    """

    classes: tuple[str | int, ...] | None = None
    simplify_m: float = 0.0
    min_area_m2: float = 0.0
    dissolve: bool = False
    overwrite: bool = False
    window_px: int = DEFAULT_WINDOW_PX
    workers: int = 1


@dataclass(frozen=True)
class ClassSummary:
    """What was written for one class."""

    id: int
    name: str
    polygons: int
    area_m2: float


@dataclass
class VectorizeResult:
    """What a vectorisation did."""

    output: Path
    files: list[Path]
    features: int
    classes: tuple[ClassSummary, ...]
    windows: int
    seconds: float
    area_method: str
    warnings: list[str] = field(default_factory=list)

    @property
    def polygons(self) -> int:
        """Number of polygons (parts, when dissolved) written."""
        return sum(c.polygons for c in self.classes)
