"""The Processing provider ``fastunetgeo``: segment a raster, vectorize a class raster, train a model."""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .segment import SegmentAlgorithm
from .train import TrainAlgorithm
from .vectorize import VectorizeAlgorithm

PROVIDER_ID = "fastunetgeo"
ICON = Path(__file__).resolve().parent.parent / "icons" / "icon.svg"


class FastUNetProvider(QgsProcessingProvider):
    """Algorithms that call fastunet_core; outputs are always files (the engine writes them)."""

    def id(self) -> str:
        """Return the provider id used in algorithm ids (``fastunetgeo:segment``)."""
        return PROVIDER_ID

    def name(self) -> str:
        """Return the name shown in the toolbox."""
        return "fastunet-geo"

    def longName(self) -> str:
        """Return the long name."""
        return "fastunet-geo: UNet segmentation of orthophotos"

    def icon(self) -> QIcon:
        """Return the toolbox icon."""
        return QIcon(str(ICON))

    def loadAlgorithms(self) -> None:
        """Add the algorithms."""
        for alg in (SegmentAlgorithm(), VectorizeAlgorithm(), TrainAlgorithm()):
            self.addAlgorithm(alg)

    def supportsNonFileBasedOutput(self) -> bool:
        """No: temporary outputs must be files, since the engine writes them itself."""
        return False

    def supportedOutputRasterLayerExtensions(self) -> list[str]:
        """Return the raster formats the engine writes."""
        return ["tif"]

    def defaultRasterFileExtension(self) -> str:
        """Return GeoTIFF."""
        return "tif"

    def supportedOutputVectorLayerExtensions(self) -> list[str]:
        """Return the vector formats the engine writes."""
        return ["gpkg", "shp", "geojson"]

    def defaultVectorFileExtension(self, hasGeometry: bool = True) -> str:
        """Return GeoPackage."""
        return "gpkg"
