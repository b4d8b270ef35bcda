"""``fastunet-geo init``: write an untrained (or imported) checkpoint, or convert a model from another tool."""

from __future__ import annotations

from pathlib import Path

import click

from fastunet_core.cli._common import parse_arch_args, parse_float_list, parse_int_list


@click.command()
@click.argument("architecture", required=False)
@click.option("--from", "source", type=click.Path(path_type=Path), default=None,
              help="Convert this model once instead: an smp save_pretrained folder or a checkpoint (to "
              ".safetensors), or a Deepness-format .onnx (to .onnx with its metadata completed).")
@click.option("--classes", default=None, help="Class names (name=#rrggbb for a colour) or a count, e.g. "
              "background,building=#ff0000,water [required without --from].")
@click.option("--bands", default=None, help="Raster bands the model reads, in order [default: 1,2,3].")
@click.option("--dtype", default=None, type=click.Choice(["uint8", "uint16", "int16", "float32", "float64"]),
              help="Input data type the model expects [default: uint8].")
@click.option("--value-range", default=None, help="Raw values mapped to 0..1, e.g. 0,10000 [default: the dtype's].")
@click.option("--mean", default=None, help="Per-band mean after scaling to 0..1 [default 0].")
@click.option("--std", default=None, help="Per-band std after scaling to 0..1 [default 1].")
@click.option("--tile", "tile_size", type=int, default=None, help="Default tile size in pixels [default: 512].")
@click.option("--overlap", type=int, default=None, help="Default overlap in pixels [default: 64].")
@click.option("--resolution-m", type=float, default=None, help="Ground resolution the model is meant for.")
@click.option("--seg-thresh", type=float, default=None, help="--from ONNX: the threshold to store (seg_thresh).")
@click.option("--head", type=int, default=None, help="--from ONNX with several outputs: the head --classes names.")
@click.option("--weights", type=click.Path(path_type=Path), default=None,
              help="Import weights: .safetensors or a PyTorch file (.pt/.pth/.ckpt, read weights-only; "
              "Lightning, DDP and {'model_state_dict': ...} containers are unwrapped).")
@click.option("--arch-args", "arch_args", multiple=True,
              help="Constructor arguments of the architecture: key=value items or a JSON object, e.g. "
              "encoder_name=resnet18 or '{\"widths\": [16, 32, 64]}' (repeatable).")
@click.option("--agreement-tiles", "agreement_tiles", multiple=True, type=click.Path(path_type=Path),
              help="Rasters to measure the model's bf16-vs-fp32 class agreement on, keeping up to 3 layers "
                   "in fp32 where all-bf16 falls short (recorded in the checkpoint; --precision auto runs "
                   "bf16 only when it is at least 99.9 %). Repeatable.")
@click.option("--seed", default=0, show_default=True, help="Seed for the random initial weights.")
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Model file to write.")
@click.option("--overwrite", is_flag=True, help="Replace an existing file.")
def init(architecture: str | None, source: Path | None, classes: str | None, bands: str | None, dtype: str | None,
         value_range: str | None, mean: str | None, std: str | None, tile_size: int | None, overlap: int | None,
         resolution_m: float | None, seg_thresh: float | None, head: int | None, weights: Path | None,
         arch_args: tuple[str, ...], agreement_tiles: tuple[Path, ...], seed: int, output: Path,
         overwrite: bool) -> None:
    """Write a checkpoint for ARCHITECTURE (untrained, or wrapping existing weights), or convert a model.

    ARCHITECTURE is a name from 'fastunet-geo models' or smp.NAME (any segmentation_models_pytorch
    architecture: smp.Unet, smp.FPN, smp.DeepLabV3Plus ...; encoder and other arguments with --arch-args).

    \b
    Example:
      fastunet-geo init unet_skinny --classes background,building,woodland,water,road -o lcai.safetensors
      fastunet-geo init smp.Unet --arch-args encoder_name=resnet18 --classes 6 --weights best_model.pth -o m.safetensors
      fastunet-geo init --from smp_folder/ --classes background,tree=#00ff00 --resolution-m 0.1 -o trees.safetensors
    """
    vr = parse_float_list(value_range, "--value-range")
    if vr is not None and len(vr) != 2:
        raise click.BadParameter("--value-range takes two numbers, e.g. 0,10000")
    value_pair = (vr[0], vr[1]) if vr else None
    if source is not None:
        from fastunet_core.models.convert import ConvertRequest, convert_model

        if architecture is not None or weights is not None or arch_args:
            raise click.UsageError("--from takes the architecture and weights from the model; leave out "
                                   "ARCHITECTURE, --weights and --arch-args")
        req = ConvertRequest(source=source, classes=classes, bands=parse_int_list(bands, "--bands"), dtype=dtype,
                             value_range=value_pair, mean=parse_float_list(mean, "--mean"),
                             std=parse_float_list(std, "--std"), tile_size_px=tile_size, overlap_px=overlap,
                             resolution_m=resolution_m, seg_thresh=seg_thresh, head=head)
        notes: list[str] = []
        written = convert_model(req, output, overwrite=overwrite, notes=notes)
        for note in notes:
            click.echo(f"note: {note}", err=True)
        click.echo(f"wrote {written}", err=True)
        _record_agreement(output, agreement_tiles)
        return
    if architecture is None or classes is None:
        raise click.UsageError("give ARCHITECTURE and --classes (or --from MODEL to convert a model)")
    from fastunet_core.models.model_init import InitRequest, init_checkpoint

    req_init = InitRequest(
        architecture=architecture, classes=classes, bands=parse_int_list(bands, "--bands") or (1, 2, 3),
        dtype=dtype or "uint8", value_range=value_pair, mean=parse_float_list(mean, "--mean"),
        std=parse_float_list(std, "--std"), tile_size_px=tile_size or 512,
        overlap_px=64 if overlap is None else overlap,
        resolution_m=resolution_m, weights=weights, seed=seed, arch_args=parse_arch_args(arch_args) or None,
    )
    path = init_checkpoint(req_init, output, overwrite=overwrite)
    click.echo(f"wrote {path}", err=True)
    _record_agreement(path, agreement_tiles)


def _record_agreement(path: Path, rasters: tuple[Path, ...]) -> None:
    """Measure and record the bf16 agreement of the checkpoint at ``path`` on ``rasters`` (if any)."""
    if not rasters:
        return
    if path.suffix.lower() != ".safetensors":
        raise click.UsageError("--agreement-tiles records into a fastunet-geo checkpoint (.safetensors)")
    from fastunet_core.inference.precision import MIN_AGREEMENT, record_agreement_from_rasters

    plan = record_agreement_from_rasters(path, rasters)
    verdict = "runs bf16" if plan.agreement >= MIN_AGREEMENT else "stays fp32"
    click.echo(f"bf16 class agreement with fp32: {plan.describe()}; --precision auto {verdict} on CPUs with "
               "native bf16", err=True)
