"""``fastunet-geo vectorize``."""

from __future__ import annotations

from pathlib import Path

import click

from fastunet_core.cli._common import MAX_DEFAULT_WORKERS, BarProgress, default_workers, stop_on_sigterm
from fastunet_core.hints import counted


@click.command()
@click.argument("mask")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="Vector file to write: .gpkg (GeoPackage, the usual choice), .shp or .geojson (WGS84).")
@click.option("--classes", default=None,
              help="Classes to keep, by name or id, e.g. building,water [default: all but 'background'].")
@click.option("--simplify", "simplify_m", type=float, default=0.0, show_default=True,
              help="Simplify outlines with this tolerance in metres, keeping neighbours gap-free (0: pixel edges).")
@click.option("--min-area", "min_area_m2", type=float, default=0.0, show_default=True,
              help="Drop polygons, and fill holes, smaller than this many square metres.")
@click.option("--dissolve", is_flag=True, help="Write one multipolygon per class instead of one polygon per region.")
@click.option("--workers", type=int, default=None,
              help=f"Processes polygonising windows [default: the CPU cores, at most {MAX_DEFAULT_WORKERS}].")
@click.option("--window", "window_px", type=int, default=2048, show_default=True,
              help="Side in pixels of the windows read and polygonised at a time (memory per process).")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs (and a Shapefile's or GeoJSON's .qml style).")
@click.pass_context
def vectorize(ctx: click.Context, mask: str, output: Path, classes: str | None, simplify_m: float,
              min_area_m2: float, dissolve: bool, workers: int | None, window_px: int, overwrite: bool) -> None:
    """Turn the class raster MASK into polygons with class, area (m2) and perimeter (m).

    MASK is a one-band class raster such as 'fastunet-geo predict' writes; class names and colours come
    from it. A QGIS style with the class colours goes inside a GeoPackage (its layer_styles table, so
    read the polygons by their layer, named after the file: geopandas.read_file('b.gpkg', layer='b')),
    or beside a Shapefile or GeoJSON as a .qml file.

    \b
    Example:
      fastunet-geo vectorize classes.tif -o buildings.gpkg --classes building --simplify 0.5 --min-area 10
    """
    from fastunet_core.io.sources import raster_source
    from fastunet_core.polygons.vectorize import VectorizeOptions, class_summary_text, vectorize_raster

    quiet = (ctx.obj or {}).get("quiet", False)
    stop_on_sigterm()
    wanted = tuple(c.strip() for c in classes.split(",") if c.strip()) if classes else None
    opts = VectorizeOptions(classes=wanted, simplify_m=simplify_m, min_area_m2=min_area_m2, dissolve=dissolve,
                            overwrite=overwrite, window_px=window_px,
                            workers=workers if workers is not None else default_workers())
    with BarProgress(enabled=not quiet) as bar:
        result = vectorize_raster(raster_source(mask), output, opts, bar)
    if not quiet:
        click.echo(f"wrote {result.output} ({counted(result.features, 'feature', True)}, "
                   f"{counted(result.polygons, 'polygon', True)}) in {result.seconds:.1f} s; areas "
                   f"{result.area_method}", err=True)
        if result.classes:
            click.echo(class_summary_text(result.classes), err=True)
    for w in result.warnings:
        click.echo(f"warning: {w}", err=True)
