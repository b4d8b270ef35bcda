"""``fastunet-geo init``: write an untrained (or imported) checkpoint."""

from __future__ import annotations

from pathlib import Path

import click

from fastunet_core.cli._common import parse_arch_args, parse_float_list, parse_int_list


@click.command()
@click.argument("architecture")
@click.option("--classes", required=True, help="Class names (name=#rrggbb for a colour) or a count, e.g. "
              "background,building=#ff0000,water")
@click.option("--bands", default="1,2,3", show_default=True, help="Raster bands the model reads, in order.")
@click.option("--dtype", default="uint8", show_default=True,
              type=click.Choice(["uint8", "uint16", "int16", "float32", "float64"]),
              help="Input data type the model expects.")
@click.option("--value-range", default=None, help="Raw values mapped to 0..1, e.g. 0,10000 [default: the dtype's].")
@click.option("--mean", default=None, help="Per-band mean after scaling to 0..1 [default 0].")
@click.option("--std", default=None, help="Per-band std after scaling to 0..1 [default 1].")
@click.option("--tile", "tile_size", default=512, show_default=True, help="Default tile size in pixels.")
@click.option("--overlap", default=64, show_default=True, help="Default overlap in pixels.")
@click.option("--resolution-m", type=float, default=None, help="Ground resolution the model is meant for.")
@click.option("--weights", type=click.Path(path_type=Path), default=None,
              help="Import weights: .safetensors or a weights-only PyTorch state dict (.pt/.pth).")
@click.option("--arch-args", "arch_args", multiple=True,
              help="Constructor arguments of the architecture: key=value items or a JSON object, e.g. "
              "encoder_name=resnet18 or '{\"widths\": [16, 32, 64]}' (repeatable).")
@click.option("--seed", default=0, show_default=True, help="Seed for the random initial weights.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Checkpoint to write.")
@click.option("--overwrite", is_flag=True, help="Replace an existing checkpoint.")
def init(architecture: str, classes: str, bands: str, dtype: str, value_range: str | None, mean: str | None,
         std: str | None, tile_size: int, overlap: int, resolution_m: float | None, weights: Path | None,
         arch_args: tuple[str, ...], seed: int, output: Path, overwrite: bool) -> None:
    """Write a checkpoint for ARCHITECTURE: untrained, or wrapping existing weights.

    \b
    Example:
      fastunet-geo init unet_skinny --classes background,building,woodland,water,road -o lcai.safetensors
    """
    from fastunet_core.models.model_init import InitRequest, init_checkpoint

    vr = parse_float_list(value_range, "--value-range")
    if vr is not None and len(vr) != 2:
        raise click.BadParameter("--value-range takes two numbers, e.g. 0,10000")
    req = InitRequest(
        architecture=architecture, classes=classes, bands=parse_int_list(bands, "--bands") or (1, 2, 3),
        dtype=dtype, value_range=(vr[0], vr[1]) if vr else None, mean=parse_float_list(mean, "--mean"),
        std=parse_float_list(std, "--std"), tile_size_px=tile_size, overlap_px=overlap,
        resolution_m=resolution_m, weights=weights, seed=seed, arch_args=parse_arch_args(arch_args) or None,
    )
    path = init_checkpoint(req, output, overwrite=overwrite)
    click.echo(f"wrote {path}", err=True)
