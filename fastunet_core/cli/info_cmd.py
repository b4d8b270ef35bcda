"""``fastunet-geo info``."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the raw metadata as JSON.")
def info(checkpoint: Path, as_json: bool) -> None:
    """Print a checkpoint's metadata (architecture, bands, classes, tile size...).

    \b
    Example:
      fastunet-geo info model.safetensors
    """
    from fastunet_core.models.checkpoint import read_metadata

    meta = read_metadata(checkpoint)
    if as_json:
        click.echo(json.dumps(meta.to_dict(), indent=2))
        return
    inp = meta.input
    click.echo(f"architecture : {meta.architecture} {json.dumps(dict(meta.arch_args))}")
    click.echo(f"input        : bands {','.join(map(str, inp.bands))}, {inp.dtype}, range {inp.value_range}, "
               f"mean {list(inp.mean)}, std {list(inp.std)}")
    click.echo(f"tiles        : {meta.tile_size_px} px, overlap {meta.overlap_px} px")
    if meta.resolution_m:
        click.echo(f"resolution   : {meta.resolution_m} m/px")
    click.echo("classes      :")
    for c in meta.classes:
        click.echo(f"  {c.id:3d}  #{c.color[0]:02x}{c.color[1]:02x}{c.color[2]:02x}  {c.name}")
    if meta.metrics:
        click.echo(f"metrics      : {json.dumps(dict(meta.metrics))}")
    if meta.versions:
        click.echo(f"written by   : {', '.join(f'{k} {v}' for k, v in meta.versions.items())}")
