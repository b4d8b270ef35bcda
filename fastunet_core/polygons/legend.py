"""The classes of a class raster (ids, names, colours) and which of them to vectorise.

Names and colours come from the ``CLASSES`` tag that ``predict`` writes (JSON ``[{"id", "name", "color"}]``,
see :mod:`fastunet_core.io.raster_output`), else from the raster's colour table with names ``class_<id>``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import rasterio

from fastunet_core.errors import ConfigError, UnreadableClassesWarning

BACKGROUND_NAMES = frozenset({"background"})
_PALETTE = ((228, 26, 28), (55, 126, 184), (77, 175, 74), (152, 78, 163), (255, 127, 0), (255, 255, 51),
            (166, 86, 40), (247, 129, 191), (153, 153, 153), (102, 194, 165), (252, 141, 98), (141, 160, 203))


@dataclass(frozen=True)
class LegendClass:
    """One class of a class raster."""

    id: int
    name: str
    color: tuple[int, int, int]


@dataclass(frozen=True)
class Legend:
    """The named classes of a raster, plus its colour table for ids it does not name."""

    classes: dict[int, LegendClass]
    colors: dict[int, tuple[int, int, int]] = field(default_factory=dict)

    def get(self, class_id: int) -> LegendClass:
        """Return the class with this id, named ``class_<id>`` when the raster does not name it."""
        found = self.classes.get(class_id)
        if found is not None:
            return found
        color = self.colors.get(class_id, _PALETTE[class_id % len(_PALETTE)])
        return LegendClass(class_id, f"class_{class_id}", color)

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
    text = src.tags().get("CLASSES")
    if not text:
        return Legend({}, colors)
    try:
        classes = {}
        for entry in json.loads(text):
            cid = int(entry["id"])
            color = tuple(int(c) for c in entry.get("color", colors.get(cid, _PALETTE[cid % len(_PALETTE)])))[:3]
            classes[cid] = LegendClass(cid, str(entry["name"]), (color[0], color[1], color[2]))
    except (ValueError, TypeError, KeyError, IndexError) as exc:
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


def select_classes(legend: Legend, requested: Sequence[str | int] | None) -> Selection:
    """Turn class names or ids into a selection; by default every class but one named "background".

    Raises:
        ConfigError: a name is not one of the raster's classes.

    """
    if not requested:
        background = {c.id for c in legend.classes.values() if c.name.strip().lower() in BACKGROUND_NAMES}
        return Selection(None, frozenset(background))
    by_name = {c.name.strip().lower(): c.id for c in legend.classes.values()}
    ids = set()
    for item in requested:
        text = str(item).strip()
        if text.lstrip("-").isdigit():
            ids.add(int(text))
        elif text.lower() in by_name:
            ids.add(by_name[text.lower()])
        else:
            raise ConfigError(f"unknown class {text!r}; the raster's classes are: {legend.describe()}")
    return Selection(frozenset(ids))
