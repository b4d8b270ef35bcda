"""The classes of a class raster (ids, names, colours) and which of them to vectorise.

Names and colours come from the ``CLASSES`` tag that ``predict`` writes (JSON ``[{"id", "name", "color"}]``,
read and written by :mod:`fastunet_core.io.class_tag`), else from the raster's colour table with names ``class_<id>``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import rasterio

from fastunet_core.errors import ConfigError, UnreadableClassesWarning
from fastunet_core.io.class_tag import TAG, decode_classes, is_background
from fastunet_core.models.metadata import ClassInfo, default_color


@dataclass(frozen=True)
class RasterClass:
    """A class the raster holds but does not name: ``class_<id>``, coloured from its colour table or by id.

    Unlike a model's :class:`ClassInfo` (ids 0..254; 255 is the nodata of the class maps we write), the id is
    any pixel value other than the raster's nodata: a 0/255 mask from another tool holds 255 as a class.
    """

    id: int
    name: str
    color: tuple[int, int, int]


@dataclass(frozen=True)
class Legend:
    """The named classes of a raster, plus its colour table for ids it does not name."""

    classes: dict[int, ClassInfo]
    colors: dict[int, tuple[int, int, int]] = field(default_factory=dict)

    def get(self, class_id: int) -> ClassInfo | RasterClass:
        """Return the class with this id, named ``class_<id>`` when the raster does not name it."""
        found = self.classes.get(class_id)
        if found is not None:
            return found
        return RasterClass(class_id, f"class_{class_id}", self.colors.get(class_id, default_color(class_id)))

    def describe(self) -> str:
        """List the named classes, e.g. ``background (0), building (1)``."""
        if not self.classes:
            return "none named (no CLASSES tag); use class ids"
        return ", ".join(f"{c.name} ({c.id})" for c in self.classes.values())


def read_legend(src: rasterio.io.DatasetReader) -> Legend:
    """Read class names and colours from the ``CLASSES`` tag and the colour table of band 1."""
    try:
        table = src.colormap(1)
    except ValueError:  # no colour table
        table = {}
    colors = {int(k): (int(v[0]), int(v[1]), int(v[2])) for k, v in table.items() if len(v) < 4 or v[3] > 0}
    text = src.tags().get(TAG)
    if not text:
        return Legend({}, colors)
    try:
        classes = {c.id: c for c in decode_classes(text, colors)}
    except ValueError as exc:
        warnings.warn(f"ignoring the unreadable CLASSES tag of {src.name} ({exc}); classes are named by id",
                      UnreadableClassesWarning, stacklevel=2)
        return Legend({}, colors)
    return Legend(classes, colors)


@dataclass(frozen=True)
class Selection:
    """Which class ids to vectorise: ``include`` if given, else every id not in ``exclude``."""

    include: frozenset[int] | None
    exclude: frozenset[int] = frozenset()

    def wants(self, class_id: int) -> bool:
        """Return True when polygons of this class are wanted."""
        return class_id in self.include if self.include is not None else class_id not in self.exclude

    @property
    def everything(self) -> bool:
        """True when every class id is wanted (no class named to keep, none to leave out)."""
        return self.include is None and not self.exclude

    def mask(self, values: np.ndarray) -> np.ndarray:
        """Return True where ``values`` (an integer array) holds a wanted class."""
        ids = np.fromiter(self.include if self.include is not None else self.exclude, dtype=np.int64)
        if values.dtype == np.uint8:  # a lookup table beats isin for the usual uint8 class maps
            lut = np.zeros(256, dtype=bool)
            lut[ids[(ids >= 0) & (ids < 256)]] = True
            hit = lut[values]
        else:
            hit = np.isin(values, ids)
        return hit if self.include is not None else ~hit


def select_classes(legend: Legend, requested: Sequence[str | int] | None, nodata: float | None = None,
                   raster: str = "the raster") -> Selection:
    """Turn class names or ids into a selection; by default every class but one named "background".

    Args:
        legend: the raster's classes.
        requested: class names or ids, or None for the default.
        nodata: the raster's nodata value (never a class); any other id is one where the raster names none.
        raster: the raster's name, for messages.

    Raises:
        ConfigError: a name or id is not one of the raster's classes (where it names none: the nodata value).

    """
    if not requested:
        background = {c.id for c in legend.classes.values() if is_background(c.name)}
        return Selection(None, frozenset(background))
    by_name = {c.name.strip().lower(): c.id for c in legend.classes.values()}
    ids = set()
    for item in requested:
        text = str(item).strip()
        if text.lstrip("-").isdigit():
            if legend.classes and int(text) not in legend.classes:
                raise ConfigError(f"unknown class id {text}; the raster's classes are: {legend.describe()}")
            if nodata is not None and int(text) == nodata:
                raise ConfigError(f"{text} is {raster}'s nodata value, which is never vectorised; give a class id "
                                  f"of its pixels, or clear its nodata first (gdal_edit.py -unsetnodata {raster})")
            ids.add(int(text))
        elif text.lower() in by_name:
            ids.add(by_name[text.lower()])
        else:
            raise ConfigError(f"unknown class {text!r}; the raster's classes are: {legend.describe()}")
    return Selection(frozenset(ids))
