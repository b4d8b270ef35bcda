"""The dock's and Processing's band check says which band is tagged alpha and what choosing it means."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from qgis.core import QgsRasterLayer
from rasterio.transform import from_origin

from fastunet_core.errors import ConfigError
from qgis_plugin.qgis_inputs import check_bands


def test_band_check_names_the_alpha_band(tmp_path: Path) -> None:
    path = tmp_path / "naip.tif"
    with rasterio.open(path, "w", driver="GTiff", width=16, height=16, count=4, dtype="uint8", crs="EPSG:32633",
                       transform=from_origin(500000, 6000000, 1, 1), photometric="RGB", alpha="YES") as dst:
        dst.write(np.full((4, 16, 16), 7, dtype=np.uint8))
    layer = QgsRasterLayer(str(path), "naip")
    assert layer.isValid()
    with pytest.raises(ConfigError, match=r"band 4 is tagged alpha.*choose it under Bands"):
        check_bands(layer, (1, 2, 3, 4), None)
    assert check_bands(layer, (1, 2, 3, 4), (1, 2, 3, 4)) == (1, 2, 3, 4)
