"""``fastunet-geo predict``."""

from __future__ import annotations

from pathlib import Path

import click

from fastunet_core.cli._common import BarProgress, parse_int_list


@click.command()
@click.argument("raster", type=click.Path(path_type=Path))
@click.option("-m", "--model", "model_path", required=True, type=click.Path(path_type=Path),
              help="Checkpoint (.safetensors) written by 'fastunet-geo init' or 'train'.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Class raster to write (GeoTIFF).")
@click.option("--tile", "tile_size", type=int, default=None, help="Tile size in pixels [default: the model's].")
@click.option("--overlap", type=int, default=None, help="Overlap between tiles in pixels [default: the model's].")
@click.option("--batch-size", type=int, default=4, show_default=True, help="Tiles per model call.")
@click.option("--device", default="auto", show_default=True, help="auto, cuda, cuda:N or cpu.")
@click.option("--blend", type=click.Choice(["cosine", "core"]), default="cosine", show_default=True,
              help="cosine: blend overlaps smoothly (no seams); core: keep each tile's centre only (faster).")
@click.option("--bands", default=None, help="Raster bands to use, in model order, e.g. 3,2,1 [default: the model's].")
@click.option("--probs", "probs_path", type=click.Path(path_type=Path), default=None,
              help="Also write per-class probabilities (percent) to this GeoTIFF.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.pass_context
def predict(ctx: click.Context, raster: Path, model_path: Path, output: Path, tile_size: int | None,
            overlap: int | None, batch_size: int, device: str, blend: str, bands: str | None,
            probs_path: Path | None, overwrite: bool) -> None:
    """Segment RASTER into a georeferenced class map.

    \b
    Example:
      fastunet-geo predict ortho.tif -m model.safetensors -o classes.tif --probs probs.tif
    """
    from fastunet_core.predict import PredictOptions, predict_raster

    quiet = ctx.obj.get("quiet", False)
    opts = PredictOptions(tile_size_px=tile_size, overlap_px=overlap, batch_size=batch_size, device=device,
                          blend=blend, bands=parse_int_list(bands, "--bands"), probs_path=probs_path,
                          overwrite=overwrite)
    bar = BarProgress(enabled=not quiet)
    try:
        result = predict_raster(raster, model_path, output, opts, bar)
    finally:
        bar.close()
    if not quiet:
        click.echo(
            f"wrote {result.output} ({result.megapixels:.1f} Mpx, {result.tiles_total} tiles, "
            f"{result.tiles_skipped} without data) in {result.seconds:.1f} s on {result.device.device}",
            err=True,
        )
    for w in result.warnings:
        click.echo(f"warning: {w}", err=True)
