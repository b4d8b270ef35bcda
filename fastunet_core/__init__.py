"""fastunet-geo core: tiling, models, streaming inference, training and vectorisation.

This package never imports Qt or QGIS; the CLI and the QGIS plugin are thin callers of its functions.
"""

__version__ = "0.1.0"
