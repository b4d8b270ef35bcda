"""``init --from``: convert a model from another tool once, with what its file lacks, into a self-describing one.

- an smp ``save_pretrained`` folder or a fastunet-geo checkpoint -> a fastunet-geo checkpoint (.safetensors)
  with the classes, colours, bands, scaling, tiles and resolution given;
- a Deepness-format ONNX file -> the same ONNX graph with Deepness metadata completed (class names, resolution,
  tiles, standardisation, threshold), so Deepness and fastunet-geo both read it without asking again.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from fastunet_core.errors import ConfigError
from fastunet_core.hints import setting
from fastunet_core.io.atomic import atomic_output
from fastunet_core.models.checkpoint import load_checkpoint, save_checkpoint
from fastunet_core.models.deepness import ModelOverrides, deepness_metadata, is_onnx_path, read_onnx_model
from fastunet_core.models.metadata import DTYPE_RANGES, InputSpec, ModelMeta, parse_class_spec
from fastunet_core.models.smp_folder import TILES_ASSUMED


@dataclass(frozen=True)
class ConvertRequest:
    """What to change; ``None`` keeps what the source says (or assumed)."""

    source: Path
    classes: str | None = None
    bands: tuple[int, ...] | None = None
    dtype: str | None = None
    value_range: tuple[float, float] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    tile_size_px: int | None = None
    overlap_px: int | None = None
    resolution_m: float | None = None
    seg_thresh: float | None = None
    head: int | None = None


def completed_meta(meta: ModelMeta, req: ConvertRequest) -> ModelMeta:
    """Return ``meta`` with every field the request gives replaced."""
    classes = meta.classes
    if req.classes is not None:
        classes = parse_class_spec(req.classes)
        if len(classes) != meta.n_classes:
            raise ConfigError(f"{setting('init_classes')} gives {len(classes)} classes but the model has "
                              f"{meta.n_classes}")
    inp = meta.input
    bands = req.bands or inp.bands
    if len(bands) != inp.n_bands:
        raise ConfigError(f"{setting('init_bands')} lists {len(bands)} bands but the model takes {inp.n_bands}")
    dtype = req.dtype or inp.dtype
    value_range = req.value_range or (DTYPE_RANGES[dtype] if req.dtype else inp.value_range)
    spec = InputSpec(bands=tuple(bands), dtype=dtype, value_range=value_range, mean=req.mean or inp.mean,
                     std=req.std or inp.std)
    return dataclasses.replace(
        meta, classes=classes, input=spec, tile_size_px=req.tile_size_px or meta.tile_size_px,
        overlap_px=meta.overlap_px if req.overlap_px is None else req.overlap_px,
        resolution_m=req.resolution_m if req.resolution_m is not None else meta.resolution_m,
        training={**meta.training, "converted_from": req.source.name})


def convert_model(req: ConvertRequest, output: str | Path, overwrite: bool = False,
                  notes: list[str] | None = None) -> Path:
    """Write the completed model to ``output`` (atomically); return its path.

    ``notes`` receives what the written model holds by assumption (the source did not record it and the
    request did not give it), e.g. an smp folder's ImageNet scaling, for the user to check.
    """
    out = Path(output)
    overrides = ModelOverrides(classes=req.classes, resolution_m=req.resolution_m, seg_thresh=req.seg_thresh,
                               head=req.head)
    if is_onnx_path(req.source):
        if not is_onnx_path(out):
            raise ConfigError("an ONNX model converts to an ONNX file with its metadata completed: give -o NAME.onnx")
        return _complete_onnx(req, overrides, out, overwrite)
    if is_onnx_path(out):
        raise ConfigError("to write an ONNX file from a PyTorch model use 'fastunet-geo export MODEL -o NAME.onnx'")
    loaded = load_checkpoint(req.source, overrides)
    meta = completed_meta(loaded.meta, req)
    if notes is not None:
        notes += [f"assumed {_for_init(a)}" for a in loaded.assumed if not _given(a, req)]
    return save_checkpoint(out, loaded.torch_model(), meta, overwrite=overwrite)


def _given(assumption: str, req: ConvertRequest) -> bool:
    """Return True when the request gives what ``assumption`` (an smp folder's, see smp_folder) stood for."""
    if assumption.startswith(("RGB uint8", "bands 1..")):
        return req.mean is not None and req.std is not None
    if assumption.startswith(TILES_ASSUMED):
        return req.tile_size_px is not None and req.overlap_px is not None
    return False  # class names and resolution were given to the loader already (not assumed then)


def _for_init(assumption: str) -> str:
    """Return ``assumption`` naming init's setting where it names predict's."""
    if assumption.startswith("no model resolution"):
        return f"no model resolution (give it with {setting('init_resolution')})"
    return assumption


def _complete_onnx(req: ConvertRequest, overrides: ModelOverrides, out: Path, overwrite: bool) -> Path:
    import onnx

    meta, spec = read_onnx_model(req.source, overrides)
    if req.dtype or req.value_range or req.bands:
        raise ConfigError("Deepness-format ONNX models read RGB bands 1..3 divided by 255; "
                          f"{setting('init_bands')}, {setting('init_dtype')} and {setting('init_value_range')} cannot "
                          "be stored in them")
    meta = completed_meta(meta, req)
    props = deepness_metadata(meta, spec.seg_thresh if (spec.seg_thresh_given or req.seg_thresh) else None)
    props["fastunet"] = json.dumps(meta.to_dict())  # colours and ids too: Deepness's class_names are names only
    model = onnx.load(str(req.source))
    old = {p.key: p.value for p in model.metadata_props}
    if len(model.graph.output) > 1:  # keep every head's names; replace the chosen head's
        _, every = read_onnx_model(req.source)
        heads = [{str(i): c.name for i, c in enumerate(h.classes)} for h in every.heads]
        heads[req.head or 0] = json.loads(props["class_names"])
        props["class_names"] = json.dumps(heads)
    merged = {**old, **props}
    del model.metadata_props[:]
    for key, value in merged.items():
        model.metadata_props.add(key=key, value=value)
    with atomic_output(out, overwrite=overwrite) as tmp:
        onnx.save(model, str(tmp))
    return out

