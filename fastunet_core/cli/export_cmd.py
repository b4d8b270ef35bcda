"""``fastunet-geo export``: a model for other tools (Deepness-format ONNX, or an smp save_pretrained folder)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="ONNX file to write (--format onnx) or folder (--format smp).")
@click.option("--format", "fmt", type=click.Choice(["onnx", "smp"]), default="onnx", show_default=True,
              help="onnx: Deepness-format ONNX (softmax output, dynamic batch, Deepness metadata); smp: a "
              "segmentation_models_pytorch save_pretrained folder (smp architectures only).")
@click.option("--seg-thresh", type=float, default=None, help="ONNX: a seg_thresh to store for Deepness.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
def export(model: Path, output: Path, fmt: str, seg_thresh: float | None, overwrite: bool) -> None:
    """Export MODEL (a checkpoint or smp folder) for Deepness, ONNX tools or smp.

    \b
    Example:
      fastunet-geo export model.safetensors -o model.onnx
      fastunet-geo export smp_model.safetensors --format smp -o smp_model/
    """
    from fastunet_core.models.checkpoint import load_checkpoint
    from fastunet_core.models.deepness import is_onnx_path
    from fastunet_core.models.model_export import export_deepness_onnx, export_smp_folder

    if is_onnx_path(model):
        raise click.UsageError(f"{model} is already an ONNX model; complete its metadata with 'init --from'")
    loaded = load_checkpoint(model)
    if fmt == "onnx":
        path = export_deepness_onnx(loaded, output, seg_thresh=seg_thresh, overwrite=overwrite)
    else:
        path = export_smp_folder(loaded, output, overwrite=overwrite)
    bands = loaded.meta.input.bands
    if fmt == "onnx" and tuple(bands) != tuple(range(1, len(bands) + 1)):
        click.echo(f"note: the model reads bands {','.join(map(str, bands))}; Deepness feeds bands 1.."
                   f"{len(bands)} in order, so reorder the raster for it", err=True)
    click.echo(f"wrote {path}", err=True)
