"""The engine's Python packages by import name (-> pip name): what segmentation, training and smp models import.

Plain data, imported by the checks (:mod:`.deps`) and the installer's check step (:mod:`.installer`).
"""

from __future__ import annotations

# import name -> pip name, for segmentation (predict + vectorize)
SEGMENT_MODULES: dict[str, str] = {
    "numpy": "numpy",
    "torch": "torch",
    "safetensors": "safetensors",
    "rasterio": "rasterio",
    "shapely": "shapely",
    "pyogrio": "pyogrio",
    "pyproj": "pyproj",
}
# ... and for training (the installer's check step imports these: installer.plan_install)
TRAIN_MODULES: dict[str, str] = {
    **SEGMENT_MODULES,
    "yaml": "PyYAML",
    "pydantic": "pydantic",  # the training configuration's checks
    "geopandas": "geopandas",
    "albumentations": "albumentations",
    "matplotlib": "matplotlib",  # the training curves
}
# ... and for segmentation_models_pytorch models (unetplusplus, deeplabv3plus, smp.NAME): the installed engine has
# them; QGIS's own Python is not asked for them (the dock trains UNets, and most models are ours)
SMP_MODULES: dict[str, str] = {"segmentation_models_pytorch": "segmentation-models-pytorch"}
