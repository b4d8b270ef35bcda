"""Put results on the map: the class raster in the model's colours and class names, polygons by class.

Main thread only (layers are created and added to the project here). Class names and colours come from
the ``CLASSES`` tag that the core writes into every class raster (JSON ``[{"id", "name", "color"}]``), read
with QGIS's own GDAL; the polygons' style is the ``.qml`` the core writes beside them.
"""

from __future__ import annotations

import html
import shutil
from collections.abc import Sequence
from pathlib import Path

from qgis.core import (
    QgsField,
    QgsMapLayer,
    QgsPalettedRasterRenderer,
    QgsProject,
    QgsProviderRegistry,
    QgsRasterLayer,
    QgsVectorFileWriter,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QColor
from qgis.PyQt.QtXml import QDomDocument

from fastunet_core.errors import ConfigError, OutputWriteError
from fastunet_core.io.class_tag import TAG, classes_from_tags, is_background
from fastunet_core.io.vector_fields import FIELDS, SHAPEFILE_STRING_BYTES, field_names

ClassEntry = tuple[int, str, tuple[int, int, int]]  # id, name, RGB

VECTOR_DRIVERS = {".gpkg": "GPKG", ".shp": "ESRI Shapefile", ".geojson": "GeoJSON"}


def classes_from_raster(path: str | Path) -> list[ClassEntry]:
    """Read the class ids, names and colours stored in a class raster (empty if it has none)."""
    from osgeo import gdal  # QGIS's GDAL, always present where QGIS is

    ds = gdal.Open(str(path))
    if ds is None:
        return []
    text = ds.GetMetadataItem(TAG)
    ds = None
    return [(c.id, c.name, c.color) for c in classes_from_tags({TAG: text} if text else {})]


RASTER_OPACITY = 0.7


def apply_palette(layer: QgsRasterLayer, classes: Sequence[ClassEntry]) -> QgsPalettedRasterRenderer:
    """Give ``layer`` a paletted renderer with one entry per class; background and nodata stay transparent."""
    entries = []
    for cid, name, rgb in classes:
        color = QColor(*rgb)
        if is_background(name):
            color.setAlpha(0)
        entries.append(QgsPalettedRasterRenderer.Class(float(cid), color, name))
    renderer = QgsPalettedRasterRenderer(layer.dataProvider(), 1, entries)
    layer.setRenderer(renderer)
    layer.setOpacity(RASTER_OPACITY)
    layer.triggerRepaint()
    return renderer


def unique_layer_name(name: str, project: QgsProject | None = None) -> str:
    """Return ``name``, or ``name (2)``, ``name (3)``... when the project already has a layer of that name."""
    proj = project or QgsProject.instance()
    taken = {layer.name() for layer in proj.mapLayers().values()}
    if name not in taken:
        return name
    n = 2
    while f"{name} ({n})" in taken:
        n += 1
    return f"{name} ({n})"


def add_class_raster(path: str | Path, name: str, classes: Sequence[ClassEntry] | None = None,
                     project: QgsProject | None = None) -> QgsRasterLayer:
    """Add a class raster to the project, styled by class; raise if it cannot be read."""
    layer = QgsRasterLayer(str(path), unique_layer_name(name, project), "gdal")
    if not layer.isValid():
        raise OutputWriteError(f"the class raster {path} could not be opened: {layer.error().summary()}")
    found = list(classes) if classes else classes_from_raster(path)
    if found:
        apply_palette(layer, found)
    (project or QgsProject.instance()).addMapLayer(layer)
    return layer


def load_class_style(layer: QgsVectorLayer, path: str | Path) -> bool:
    """Load the style written beside a polygon file, if there is one.

    ``X.gpkg.qml`` when the core had to name it after the full file name (``X.qml`` held another output's
    style), else ``X.qml`` (see fastunet_core.io.vector_output). A GeoPackage that carries its own style
    (``layer_styles``) was styled by QGIS when it opened it; an ``X.qml`` beside it is another output's.
    """
    if _has_own_style(layer):
        return _load_own_style(layer)  # Processing opens its outputs without their default style
    qml = _style_beside(path)
    if qml is None:
        return False
    _message, ok = layer.loadNamedStyle(str(qml))
    if ok:
        layer.triggerRepaint()
    return bool(ok)


def _has_own_style(layer: QgsVectorLayer) -> bool:
    """Return True when the layer's file stores styles for it (a GeoPackage's ``layer_styles``)."""
    count = layer.listStylesInDatabase()[0]
    return bool(count and count > 0)


def _load_own_style(layer: QgsVectorLayer) -> bool:
    """Apply the default style the layer's file stores (a GeoPackage's ``layer_styles``)."""
    qml = QgsProviderRegistry.instance().loadStyle(layer.providerType(), layer.source(), "")  # the default
    doc = QDomDocument()
    if not qml or not doc.setContent(qml):
        return False
    ok, _message = layer.importNamedStyle(doc)
    if ok:
        layer.triggerRepaint()
    return bool(ok)


def _style_beside(path: str | Path) -> Path | None:
    """Return ``X.<ext>.qml`` or else ``X.qml`` beside a polygon file, whichever exists first (None: neither)."""
    p = Path(path)
    for qml in (p.with_name(p.name + ".qml"), p.with_suffix(".qml")):
        if qml.is_file():
            return qml
    return None


def add_polygons(path: str | Path, name: str, project: QgsProject | None = None) -> QgsVectorLayer:
    """Add a polygon file to the project, styled by class; raise if it cannot be read."""
    layer = QgsVectorLayer(str(path), unique_layer_name(name, project), "ogr")
    if not layer.isValid():
        raise OutputWriteError(f"the polygons {path} could not be opened")
    load_class_style(layer, path)
    (project or QgsProject.instance()).addMapLayer(layer)
    return layer


def add_result_layers(class_raster: Path, polygons: Path | None, base_name: str,
                      classes: Sequence[ClassEntry] | None = None) -> list[QgsMapLayer]:
    """Add a run's outputs (polygons above the raster, both above the rest); remove what was added if one fails."""
    added: list[QgsMapLayer] = []
    try:
        added.append(add_class_raster(class_raster, f"{base_name} classes", classes))
        if polygons is not None:
            added.append(add_polygons(polygons, f"{base_name} polygons"))
    except OutputWriteError:
        QgsProject.instance().removeMapLayers([lyr.id() for lyr in added])
        raise
    return added


def export_polygons(layer: QgsVectorLayer, path: str | Path) -> Path:
    """Write ``layer`` to a GeoPackage, Shapefile or GeoJSON with its style beside it; return the path."""
    out = Path(path)
    driver = VECTOR_DRIVERS.get(out.suffix.lower())
    if driver is None:
        raise ConfigError(f"cannot tell the format of {out.name}; use .gpkg, .shp or .geojson")
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = driver
    options.fileEncoding = "UTF-8"
    options.layerName = out.stem
    # the fields the core writes, named as it names them in this format (a Shapefile's perim_m), no source fid
    names = layer.fields().names()
    keep = [name for name in FIELDS if name in names]
    options.attributes = [names.index(name) for name in keep]
    renamed = dict(zip(FIELDS, field_names(driver == "ESRI Shapefile"), strict=True))
    options.attributesExportNames = [renamed.get(name, name) for name in names]  # by the layer's field index
    converter = _ShapefileFields()  # kept alive until the write is done
    if driver == "ESRI Shapefile":
        options.fieldValueConverter = converter
    error, message, _new_file, _new_layer = QgsVectorFileWriter.writeAsVectorFormatV3(
        layer, str(out), QgsProject.instance().transformContext(), options)
    if error != QgsVectorFileWriter.WriterError.NoError:
        raise OutputWriteError(f"could not write {out}: {message}")
    if driver == "GPKG":  # the style inside the file, as the core writes its GeoPackages
        written = QgsVectorLayer(f"{out}|layername={out.stem}", out.stem, "ogr")
        written.setRenderer(layer.renderer().clone())
        written.setOpacity(layer.opacity())
        error = written.saveStyleToDatabase(out.stem, "classes, from fastunet-geo", True, "")
        if error:
            raise OutputWriteError(f"could not store the style in {out}: {error}")
        return out
    source_qml = None if _has_own_style(layer) else _style_beside(layer.source().split("|")[0])
    if source_qml is not None:
        shutil.copyfile(source_qml, out.with_suffix(".qml"))
    else:
        layer.saveNamedStyle(str(out.with_suffix(".qml")))
    return out


_SHAPEFILE_WIDTHS = {"class_id": 9, "class_name": SHAPEFILE_STRING_BYTES}


class _ShapefileFields(QgsVectorFileWriter.FieldValueConverter):
    """Write the fields as the core does in a Shapefile.

    The class id in 9 digits (read back as a 32-bit integer); the class name as wide as a dBASE text field can be
    (QGIS asks for 255, which GDAL narrows with a warning on stderr).
    """

    def fieldDefinition(self, field: QgsField) -> QgsField:
        """Return the field as it goes into the file."""
        width = _SHAPEFILE_WIDTHS.get(field.name())
        if width is None:
            return field
        narrow = QgsField(field)
        narrow.setLength(width)
        return narrow

    def convert(self, index: int, value: object) -> object:
        """Return the value unchanged."""
        return value

    def clone(self) -> _ShapefileFields:
        """Return a copy (QGIS may ask for one)."""
        return _ShapefileFields()


def format_area(m2: float) -> str:
    """Return an area in m², ha or km², whichever reads best."""
    if m2 >= 1e6:
        return f"{m2 / 1e6:,.2f} km²"
    if m2 >= 1e4:
        return f"{m2 / 1e4:,.2f} ha"
    return f"{m2:,.1f} m²"


def class_area_html(rows: Sequence[tuple[int, str, int, float, float]],
                    classes: Sequence[ClassEntry] = ()) -> str:
    """Return an HTML table of each class's area and share (with its colour), for the dock."""
    colors = {cid: rgb for cid, _name, rgb in classes}
    lines = ["<table cellspacing='0' cellpadding='2'><tr><th></th><th align='left'>Class</th>"
             "<th align='right'>&nbsp;Area</th><th align='right'>&nbsp;Share</th></tr>"]
    for cid, name, _pixels, area, share in rows:
        rgb = colors.get(cid, (128, 128, 128))
        colour = f"<span style='background-color:rgb{tuple(rgb)}'>&nbsp;&nbsp;&nbsp;</span>"
        swatch = "" if is_background(name) else colour  # background is drawn transparent
        lines.append(f"<tr><td>{swatch}</td><td>{html.escape(name)}</td>"
                     f"<td align='right'>&nbsp;{format_area(area)}</td>"
                     f"<td align='right'>&nbsp;{100 * share:.1f} %</td></tr>")
    lines.append("</table>")
    return "".join(lines)
