"""The polygon outputs' attribute fields, per format (plain Python: the QGIS plugin's export uses them too).

Every polygon output has the same fields, in this order; a Shapefile's dBASE table holds names of at most 10
characters, so ``perimeter_m`` is ``perim_m`` there (and nowhere else), and a text field holds at most
254 bytes: ``class_name`` is written that wide (GDAL narrows a wider one itself, with a warning on stderr).
"""

from __future__ import annotations

FIELDS = ("class_id", "class_name", "area_m2", "perimeter_m")
SHAPEFILE_NAMES = {"perimeter_m": "perim_m"}  # fits the 10 characters of a dBASE field name
SHAPEFILE_STRING_BYTES = 254  # the widest text field a dBASE table holds


def field_names(shapefile: bool) -> list[str]:
    """Return the output fields' names as written to a Shapefile (``shapefile``) or any other format."""
    return [SHAPEFILE_NAMES.get(name, name) if shapefile else name for name in FIELDS]
