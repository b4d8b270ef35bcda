"""Helpers shared by the CLI and dataset tests: run a command in-process, crop a real tile to a small PNG."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import rasterio
from click.testing import CliRunner
from rasterio.windows import Window

from fastunet_core.cli import cli

if TYPE_CHECKING:
    import geopandas as gpd


def run_cli(*args: str) -> tuple[int, str]:
    """Run ``fastunet-geo ARGS`` in this process; return the exit code and what it printed (stderr first)."""
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stderr + result.stdout


def crop_png(src: Path, dst: Path, size: int = 256) -> None:
    """Write the top-left ``size`` x ``size`` of a real tile as PNG (keeps CPU tests short)."""
    with rasterio.open(src) as ds:
        data = ds.read(window=Window(0, 0, size, size))
        profile = {"driver": "PNG", "width": size, "height": size, "count": ds.count, "dtype": ds.dtypes[0]}
    dst.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data)


def polygon_layer(path: Path | str) -> str:
    """Return the name of the polygon layer of a vector file (a GeoPackage also holds ``layer_styles``)."""
    import pyogrio

    return str(pyogrio.list_layers(path)[0][0])


def read_polygons(path: Path | str) -> gpd.GeoDataFrame:
    """Read the polygons we wrote, naming their layer (as the README tells users to)."""
    import geopandas as gpd

    return gpd.read_file(path, layer=polygon_layer(path))


def polygon_info(path: Path | str) -> dict[str, Any]:
    """Return pyogrio's description of the polygon layer (features, fields ...)."""
    import pyogrio

    info: dict[str, Any] = pyogrio.read_info(path, layer=polygon_layer(path))
    return info
