"""A GeoPackage of polygons carries its class style inside (layer_styles): QGIS shows the colours wherever it opens."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
from qgis.core import QgsCategorizedSymbolRenderer, QgsVectorLayer

pytestmark = pytest.mark.qgis


def test_geopackage_opens_in_qgis_with_its_class_colours(qgis_model: Path, small_raster: Path,
                                                         tmp_path: Path) -> None:
    """The README's own naming, X.tif and X.gpkg: each keeps its style, with no warning; the copy too."""
    from fastunet_core.errors import FastUNetWarning
    from fastunet_core.inference.segment import segment_raster
    from fastunet_core.models.checkpoint_file import read_metadata
    from fastunet_core.polygons.vectorize import VectorizeOptions

    with warnings.catch_warnings():
        warnings.simplefilter("error", FastUNetWarning)
        segment_raster(small_raster, qgis_model, tmp_path / "X.tif", vector_output=tmp_path / "X.gpkg",
                       vectorize=VectorizeOptions(workers=1))
    assert not (tmp_path / "X.gpkg.qml").exists() and (tmp_path / "X.qml").is_file()  # the raster's
    elsewhere = tmp_path / "copied" / "renamed.gpkg"  # alone, under another name: the style goes with it
    elsewhere.parent.mkdir()
    (tmp_path / "out").mkdir()
    shutil.copy(tmp_path / "X.gpkg", elsewhere)
    expected = {str(c.id): (c.name, "#{:02x}{:02x}{:02x}".format(*c.color)) for c in read_metadata(qgis_model).classes}
    from qgis_plugin.results import export_polygons

    exported = export_polygons(QgsVectorLayer(str(tmp_path / "X.gpkg"), "p", "ogr"), tmp_path / "out" / "export.gpkg")
    assert sorted(p.name for p in exported.parent.iterdir()) == ["export.gpkg"]  # the dock's Export: style inside
    for path in (tmp_path / "X.gpkg", elsewhere, exported):
        layer = QgsVectorLayer(str(path), "polygons", "ogr")  # fresh, as QGIS opens a file
        assert layer.isValid() and layer.featureCount() > 0
        renderer = layer.renderer()
        assert isinstance(renderer, QgsCategorizedSymbolRenderer), renderer.type()
        assert renderer.classAttribute() == "class_id"
        got = {str(c.value()): (c.label(), c.symbol().color().name()) for c in renderer.categories()}
        assert got == expected
