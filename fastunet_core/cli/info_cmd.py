"""``fastunet-geo info``."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from fastunet_core.models.metadata import ModelMeta


def json_text(value: Any, indent: int | None = 2) -> str:
    """Return ``value`` as strict JSON: a NaN or infinite number (a class absent from validation) is null.

    Python's json writes NaN, which is not JSON: jq and other languages' parsers refuse the whole document.
    """
    return json.dumps(_finite(value), indent=indent, allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


@click.command()
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the raw metadata as JSON.")
def info(checkpoint: Path, as_json: bool) -> None:
    """Print a checkpoint's metadata (architecture, bands, classes, tile size...).

    \b
    Example:
      fastunet-geo info model.safetensors
    """
    from fastunet_core.models.checkpoint_file import read_metadata
    from fastunet_core.models.deepness import is_onnx_path

    if is_onnx_path(checkpoint):
        _onnx_info(checkpoint, as_json)
        return
    meta = read_metadata(checkpoint)
    if as_json:
        click.echo(json_text(meta.to_dict()))
    else:
        _describe(meta)
    _check_weights(checkpoint)


def _check_weights(checkpoint: Path) -> None:
    """Fail (after the metadata, which may say where the model came from) when its weights hold NaN or inf."""
    from fastunet_core.errors import CheckpointError
    from fastunet_core.models.checkpoint_file import damaged_weights_message, nonfinite_weights

    if checkpoint.is_file():  # an smp folder's weights are checked when it is loaded
        bad = nonfinite_weights(checkpoint)
        if bad:
            raise CheckpointError(damaged_weights_message(str(checkpoint), bad))


def _describe(meta: ModelMeta) -> None:
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
        click.echo(f"metrics      : {json_text(dict(meta.metrics), indent=None)}")
    if meta.versions:
        click.echo(f"written by   : {', '.join(f'{k} {v}' for k, v in meta.versions.items())}")


def _onnx_info(path: Path, as_json: bool) -> None:
    """Describe a Deepness-format ONNX model: input, heads, and what had to be assumed."""
    from fastunet_core.models.deepness import deepness_standardisation, read_onnx_model

    meta, spec = read_onnx_model(path)
    if as_json:
        d = meta.to_dict()
        d["onnx"] = {"input": spec.input_name, "fixed_batch": spec.fixed_batch, "input_size": spec.input_size,
                     "seg_thresh": spec.seg_thresh, "assumed": list(spec.assumed),
                     "heads": [{"output": h.output_name, "kind": h.kind, "classes": [c.name for c in h.classes]}
                               for h in spec.heads]}
        click.echo(json_text(d))
        return
    inp = meta.input
    batch = f"fixed batch {spec.fixed_batch}" if spec.fixed_batch else "dynamic batch"
    click.echo(f"model        : Deepness-format ONNX ({spec.model_type or 'no model_type'}), input "
               f"{spec.input_name!r}, {spec.in_channels} channels, {spec.input_size or 'any'} px, {batch}")
    mean, std = deepness_standardisation(inp)
    first = tuple(range(1, inp.n_bands + 1))
    as_deepness = inp.dtype == "uint8" and inp.value_range == (0.0, 255.0) and inp.bands == first
    if not as_deepness:  # recorded by our export: the input as trained, then what Deepness makes of it
        click.echo(f"input        : bands {','.join(map(str, inp.bands))}, {inp.dtype}, range {inp.value_range}, "
                   f"mean {list(inp.mean)}, std {list(inp.std)}")
    click.echo(f"{'input' if as_deepness else 'in Deepness':13s}: bands {','.join(map(str, first))}, values /255, "
               f"mean {mean}, std {std}")
    click.echo(f"tiles        : {meta.tile_size_px} px, overlap {meta.overlap_px} px")
    click.echo(f"resolution   : {f'{meta.resolution_m} m/px' if meta.resolution_m else 'unknown'}")
    for k, head in enumerate(spec.heads):
        thresh = f", threshold {spec.seg_thresh}" if head.kind == "sigmoid" or spec.seg_thresh_given else ""
        click.echo(f"head {k}       : output {head.output_name!r}, {head.kind}{thresh}")
        for c in head.classes:
            click.echo(f"  {c.id:3d}  #{c.color[0]:02x}{c.color[1]:02x}{c.color[2]:02x}  {c.name}")
    for a in spec.assumed:
        click.echo(f"assumed      : {a}")
