"""The ``CLASSES`` tag of a class raster: the one place that writes and reads it, and what "background" is.

A class raster carries its classes as JSON in the GeoTIFF metadata item ``CLASSES``:
``[{"id": 0, "name": "background", "color": [r, g, b]}, ...]`` (ids are the pixel values, colours 0..255).
The colour table holds the same colours; the tag adds the names. The class named ``background`` (any case)
is the one left out of polygons by default and drawn transparent on a map.

Light on purpose (json and the metadata types only): the QGIS plugin reads tags with it on its GUI thread.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from fastunet_core.models.metadata import RGB, ClassInfo, default_color

TAG = "CLASSES"
BACKGROUND_NAMES = frozenset({"background"})


def is_background(name: str) -> bool:
    """Return True for the background class (left out of polygons, transparent on maps)."""
    return name.strip().lower() in BACKGROUND_NAMES


def encode_classes(classes: Sequence[ClassInfo]) -> str:
    """Return the tag's JSON text for ``classes``."""
    return json.dumps([{"id": c.id, "name": c.name, "color": list(c.color)} for c in classes])


def decode_classes(text: str, colors: Mapping[int, RGB] | None = None) -> tuple[ClassInfo, ...]:
    """Read the tag's JSON text; a class without a colour takes ``colors`` (the colour table), else the default.

    Raises:
        ValueError: the text is not such a list (bad JSON, a missing id or name, a bad colour).

    """
    try:
        out = []
        for entry in json.loads(text):
            cid = int(entry["id"])
            rgb = entry.get("color") or (colors or {}).get(cid) or default_color(cid)
            out.append(ClassInfo(cid, str(entry["name"]), (int(rgb[0]), int(rgb[1]), int(rgb[2]))))
        return tuple(out)
    except (TypeError, KeyError, IndexError) as exc:
        raise ValueError(f"not a list of classes with id, name and color ({type(exc).__name__}: {exc})") from exc


def classes_from_tags(tags: Mapping[str, str]) -> tuple[ClassInfo, ...]:
    """Return the classes of a raster's metadata ``tags``, or none when the tag is missing or unreadable."""
    text = tags.get(TAG)
    if not text:
        return ()
    try:
        return decode_classes(text)
    except ValueError:
        return ()
