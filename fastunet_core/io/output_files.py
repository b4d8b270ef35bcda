"""Which files an output consists of: a vector format's sidecars, each output head's file name.

Plain path rules with no GDAL or numpy behind them, so that the QGIS dock can ask before a run whether it
would replace existing files (:mod:`fastunet_core.io.vector_output` and the predictor write by them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastunet_core.errors import ConfigError


@dataclass(frozen=True)
class VectorFormat:
    """One output format: its GDAL driver and the files it consists of."""

    name: str
    driver: str
    sidecars: tuple[str, ...] = ()  # suffixes of the files written beside the main one
    stale: tuple[str, ...] = ()  # suffixes of older sidecars to remove when overwriting


FORMATS = {
    ".gpkg": VectorFormat("GeoPackage", "GPKG"),
    ".shp": VectorFormat("Shapefile", "ESRI Shapefile", (".shx", ".dbf", ".prj", ".cpg"),
                         (".sbn", ".sbx", ".qix", ".shp.xml")),
    ".geojson": VectorFormat("GeoJSON", "GeoJSON"),
    ".json": VectorFormat("GeoJSON", "GeoJSON"),
}


def vector_format(path: Path) -> VectorFormat:
    """Return the format for an output path's suffix, or raise a ConfigError naming the choices."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(f"cannot tell the vector format of {path.name}; use one of "
                          f"{', '.join(sorted(FORMATS))} (.gpkg is the default choice)")
    return fmt


def output_paths(target: Path) -> list[Path]:
    """Return the files an output's data consists of: the main file and its sidecars (not the style)."""
    fmt = vector_format(target)
    return [target, *(target.with_suffix(s) for s in fmt.sidecars)]


def head_path(path: Path, k: int) -> Path:
    """Return the output of head ``k`` of a model with several output heads: ``X_headK.ext`` beside ``X.ext``."""
    return path.with_name(f"{path.stem}_head{k}{path.suffix}")
