"""Where an output's QGIS style (``.qml``) goes, so that outputs of one name never take each other's style.

QGIS applies ``X.qml`` to any layer it opens from a file ``X.*`` (``QgsMapLayer::styleURI``: the file's
complete base name + ``.qml``), whatever the format, and no other file automatically (not ``X.gpkg.qml``).
So a style is written as ``X.qml`` whenever that is free or already holds the very same style (outputs of
one name in several formats with equal styles rightly share it). When ``X.qml`` holds another style (the
class raster ``X.tif`` and the polygons ``X.gpkg`` of one run, a GeoJSON of other classes, a style the user
made), it is left alone and this output's style goes to ``X.<ext>.qml`` (named after the full file name, so
it cannot collide) with a warning that says how to load it; the plugin loads it. ``--overwrite`` replaces
``X.qml`` only when no other output of that name is beside it (then it was this output's own style).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STYLED_SUFFIXES = (".tif", ".tiff", ".gpkg", ".shp", ".geojson", ".json")


def own_style_path(target: Path) -> Path:
    """Return the style named after the full output file name, e.g. ``X.geojson.qml``."""
    return target.with_name(target.name + ".qml")


def style_for(target: Path) -> Path | None:
    """Return the style that belongs to an output: ``X.<ext>.qml`` if there is one, else ``X.qml``, else None."""
    for path in (own_style_path(target), target.with_suffix(".qml")):
        if path.is_file():
            return path
    return None


@dataclass(frozen=True)
class StylePlan:
    """Where to write an output's style (None: the same style is already in place) and what to tell the user."""

    path: Path | None
    warning: str | None = None


def plan_style(target: Path, text: str, overwrite: bool = False) -> StylePlan:
    """Decide where ``target``'s style ``text`` goes (see the module doc); remove a superseded own-named style."""
    shared, own = target.with_suffix(".qml"), own_style_path(target)
    if not shared.exists():
        own.unlink(missing_ok=True)
        return StylePlan(shared)
    if shared.read_text(encoding="utf-8", errors="replace") == text:
        own.unlink(missing_ok=True)
        return StylePlan(None)
    siblings = sorted(p.name for p in target.parent.iterdir()
                      if p.stem == target.stem and p.suffix.lower() in STYLED_SUFFIXES and p.name != target.name)
    if overwrite and not siblings:
        own.unlink(missing_ok=True)
        return StylePlan(shared)
    holder = f"the style of {', '.join(siblings)}" if siblings else "another style"
    return StylePlan(own, f"{shared.name} already holds {holder} (QGIS applies it to every {target.stem}.* file), so "
                          f"the style of {target.name} is written as {own.name}: load it in QGIS with Layer "
                          "Properties > Style > Load Style, or give the outputs different names")
