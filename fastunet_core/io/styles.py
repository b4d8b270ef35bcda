"""Where an output's QGIS style (``.qml``) goes, so that outputs of one name never take each other's style.

QGIS applies ``X.qml`` to any layer it opens from a file ``X.*`` (``QgsMapLayer::styleURI``: the file's
complete base name + ``.qml``), whatever the format, and no other file automatically (not ``X.gpkg.qml``).
So a style is written as ``X.qml`` whenever that is free or already holds the very same style (outputs of
one name in several formats with equal styles rightly share it). When ``X.qml`` holds another style (the
class raster ``X.tif`` and the polygons ``X.gpkg`` of one run, a GeoJSON of other classes, a style the user
made), it is left alone and this output's style goes to ``X.<ext>.qml`` (named after the full file name, so
it cannot collide) with a warning that says how to load it; the plugin loads it. ``--overwrite`` replaces
``X.qml`` only when no other output of that name is beside it (then it was this output's own style).

A GeoPackage carries its style inside instead (:func:`embed_style`): the ``layer_styles`` table that QGIS's
"Save style to database" writes, as the layer's default style. QGIS applies it whenever it opens the file,
before and instead of any ``X.qml`` beside it, so ``X.tif`` and ``X.gpkg`` of one run never compete for one
``X.qml``, and the file keeps its colours when copied alone. (``pyogrio.list_layers`` and ``ogrinfo`` then
list ``layer_styles`` as a second, non-spatial layer; read the polygons with ``layer=`` to skip
geopandas' "more than one layer" note.)
"""

from __future__ import annotations

import contextlib
import sqlite3
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


# QGIS's own layer_styles table (QgsOgrProviderMetadata::saveStyle), so QGIS reads and updates it as its own
_LAYER_STYLES = """CREATE TABLE IF NOT EXISTS layer_styles (
    id INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, f_table_catalog TEXT(256), f_table_schema TEXT(256),
    f_table_name TEXT(256), f_geometry_column TEXT(256), styleName TEXT(30), styleQML TEXT, styleSLD TEXT,
    useAsDefault BOOLEAN, description TEXT, owner TEXT(30), ui TEXT(30), update_time DATETIME DEFAULT
    (strftime('%Y-%m-%dT%H:%M:%fZ','now')))"""


def embed_style(gpkg: Path, layer: str, qml: str, description: str = "classes, from fastunet-geo") -> None:
    """Store ``qml`` in the GeoPackage ``gpkg`` as the default style of ``layer`` (replacing an earlier default).

    The table is registered in ``gpkg_contents`` as an attribute table, as GDAL registers the one QGIS creates.
    """
    with contextlib.closing(sqlite3.connect(gpkg)) as db, db:
        row = db.execute("SELECT column_name FROM gpkg_geometry_columns WHERE table_name = ?", (layer,)).fetchone()
        if row is None:
            raise RuntimeError(f"{gpkg} has no geometry layer {layer!r} to style")
        db.execute(_LAYER_STYLES)
        db.execute("INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier, description) "
                   "VALUES ('layer_styles', 'attributes', 'layer_styles', '')")
        db.execute("UPDATE layer_styles SET useAsDefault = 0 WHERE f_table_name = ?", (layer,))
        db.execute("INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, f_geometry_column, "
                   "styleName, styleQML, styleSLD, useAsDefault, description, owner, ui) "
                   "VALUES ('', '', ?, ?, ?, ?, '', 1, ?, '', '')", (layer, row[0], layer, qml, description))


def embedded_style(gpkg: Path, layer: str) -> str | None:
    """Return the default style stored in the GeoPackage ``gpkg`` for ``layer`` (None: it stores none)."""
    with contextlib.closing(sqlite3.connect(f"file:{gpkg}?mode=ro", uri=True)) as db:
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'layer_styles'").fetchone() is None:
            return None
        row = db.execute("SELECT styleQML FROM layer_styles WHERE f_table_name = ? AND useAsDefault "
                         "ORDER BY id DESC LIMIT 1", (layer,)).fetchone()
    return str(row[0]) if row else None
