"""``fastunet-geo models``: the registered architectures and their size figures."""

from __future__ import annotations

from collections.abc import Sequence

import click

_HEADERS = ("architecture", "parameters", "GFLOPs", "footprint MB", "divisor", "description")
_RIGHT_ALIGNED = {1, 2, 3, 4}


@click.command()
@click.option("--classes", "num_classes", default=5, show_default=True, type=click.IntRange(min=1),
              help="Number of output classes.")
@click.option("--bands", default=3, show_default=True, type=click.IntRange(min=1),
              help="Number of input bands.")
@click.option("--size", default=512, show_default=True, type=click.IntRange(min=1),
              help="Tile size in pixels (square) for GFLOPs and the footprint.")
def models(num_classes: int, bands: int, size: int) -> None:
    """List the architectures with parameters, GFLOPs and memory footprint.

    GFLOPs are FLOPs (2 x multiply-accumulates) of one tile's forward pass. The footprint is the paper's
    torchsummary-style estimate: twice the summed float32 output sizes of the layers at batch 1, in MB.
    The divisor is the number tile sides must be a multiple of.

    \b
    Example:
      fastunet-geo models --classes 5 --bands 4 --size 512
    """
    from fastunet_core.models.registry import REGISTRY

    rows = [_row(name, bands, num_classes, size) for name in REGISTRY]
    click.echo(f"{bands} bands x {size} x {size} px, {num_classes} classes, batch 1")
    for line in format_table(_HEADERS, rows):
        click.echo(line)
    from fastunet_core.models.registry import SMP_ARCHITECTURES, SMP_PREFIX

    names = ", ".join(SMP_PREFIX + n for n in SMP_ARCHITECTURES)
    click.echo(f"also smp.NAME, any segmentation_models_pytorch architecture ({names}), with its arguments: "
               "fastunet-geo init smp.Unet --arch-args encoder_name=resnet18 ...")


def _row(name: str, bands: int, num_classes: int, size: int) -> tuple[str, ...]:
    """Return one table row; GFLOPs and footprint are '-' where the size does not suit the model."""
    from fastunet_core.errors import ConfigError
    from fastunet_core.models.registry import get_architecture, size_divisor
    from fastunet_core.models.summary import architecture_parameters, summarize

    description = get_architecture(name).description
    divisor = size_divisor(name)
    params = f"{architecture_parameters(name, bands, num_classes):,}"
    if size % divisor:
        return name, params, "-", "-", str(divisor), f"{description} (size must be a multiple of {divisor})"
    try:
        s = summarize(name, bands, num_classes, size)
    except ConfigError as exc:
        return name, params, "-", "-", str(divisor), str(exc)
    return name, params, f"{s.gflops:.2f}", f"{s.footprint_mb:.2f}", str(divisor), description


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Return the rows as aligned text lines, numbers right-aligned, the last column left free."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def fmt(row: Sequence[str]) -> str:
        cells = []
        for i, cell in enumerate(row):
            if i == len(row) - 1:
                cells.append(cell)
            elif i in _RIGHT_ALIGNED:
                cells.append(cell.rjust(widths[i]))
            else:
                cells.append(cell.ljust(widths[i]))
        return "  ".join(cells).rstrip()

    rule = ["-" * w for w in widths[:-1]] + ["-" * len(headers[-1])]
    return [fmt(headers), fmt(rule), *(fmt(r) for r in rows)]
