"""Deepness-format ONNX models: read (and write) the metadata the QGIS plugin Deepness defines.

Facts from Deepness (PUTvision/qgis-plugin-deepness, ``processing/models/model_base.py``, ``segmentor.py``):
- metadata is ONNX ``metadata_props``; every value is a JSON-encoded string: ``model_type`` ("Segmentor"),
  ``class_names`` (a dict ``{"0": "name", ...}`` or a list of such dicts, one per output head),
  ``resolution`` (cm/px), ``tile_size`` (px), ``tiles_overlap`` (percent), ``standardization_mean``/``_std``,
  ``seg_thresh``, ``seg_small_segment``;
- one input ``[batch, channels, H, W]`` (batch a number: fixed; a name: dynamic), RGB from bands 1..C,
  values ``/255`` then ``(x - mean) / std``;
- each output is a head: ``[N, C, H, W]`` with C > 1 is softmax (argmax, probabilities below ``seg_thresh``
  do not count), ``[N, 1, H, W]`` or ``[N, H, W]`` is a sigmoid (class 1 where ``p >= seg_thresh``) whose
  names get ``background`` in front; an output smaller than the input covers the input's centre.

Nothing here imports torch: reading needs only ``onnxruntime``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastunet_core.errors import CheckpointError, ConfigError
from fastunet_core.hints import hint, setting
from fastunet_core.models.metadata import ClassInfo, InputSpec, ModelMeta, default_classes, parse_class_spec

ARCHITECTURE = "onnx"  # ModelMeta.architecture of a model that is an ONNX file (not built from the registry)
DEFAULT_TILE_PX = 512
DEFAULT_OVERLAP_PERCENT = 15  # Deepness's own default
DEFAULT_SEG_THRESH = 0.5  # Deepness's own default


@dataclass(frozen=True)
class ModelOverrides:
    """What the user supplies for a model whose file lacks it (or to replace what it says)."""

    classes: str | None = None  # as parse_class_spec takes it; for the chosen (or first) head
    resolution_m: float | None = None
    seg_thresh: float | None = None
    head: int | None = None  # run only this output head (0-based)


@dataclass(frozen=True)
class OnnxHead:
    """One output of the ONNX model, and how its values become classes."""

    output_name: str
    kind: str  # "softmax" (C > 1 channels) or "sigmoid" (one channel, expanded to background/class)
    classes: tuple[ClassInfo, ...]
    out_size: int | None  # spatial size of the output when fixed (None: dynamic)

    @property
    def n_channels(self) -> int:
        """Channels this head contributes to the engine's output (a sigmoid gives 1 - p and p)."""
        return len(self.classes)


@dataclass(frozen=True)
class OnnxModelSpec:
    """How to run a Deepness-format ONNX file."""

    path: Path
    input_name: str
    in_channels: int
    fixed_batch: int | None  # None: dynamic batch
    input_size: int | None  # None: dynamic height/width
    heads: tuple[OnnxHead, ...]  # the heads to run (all, or the one chosen)
    seg_thresh: float
    seg_thresh_given: bool  # from the metadata or the user (softmax heads then ignore weaker probabilities)
    model_type: str | None
    assumed: tuple[str, ...] = field(default_factory=tuple)  # what was not in the file and was assumed


def is_onnx_path(path: str | os.PathLike[str]) -> bool:
    """Return True for a path that names an ONNX file."""
    return Path(path).suffix.lower() == ".onnx"


def _session(path: Path) -> Any:
    try:
        from fastunet_core.inference.onnx_engine import import_onnxruntime

        ort = import_onnxruntime()
    except ImportError as exc:
        raise ConfigError("ONNX models need onnxruntime: pip install onnxruntime") from exc
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own (non-exported) exception types
        raise CheckpointError(f"{path} is not an ONNX model onnxruntime can load ({_first_line(exc)})") from exc


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


def _json_value(props: Mapping[str, str], key: str) -> Any:
    raw = props.get(key)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        import ast

        try:  # Deepness accepts Python literals too (dicts with integer keys)
            return ast.literal_eval(raw)
        except (ValueError, SyntaxError) as exc:
            raise CheckpointError(f"ONNX metadata {key!r} is neither JSON nor a literal: {raw[:80]!r}") from exc


def _class_name_lists(value: Any, source: Path) -> list[list[str]] | None:
    if value is None:
        return None
    dicts = [value] if isinstance(value, dict) else value
    if not isinstance(dicts, list) or not all(isinstance(d, dict) for d in dicts):
        raise CheckpointError(f"{source}: metadata class_names must be a dict or a list of dicts, got {value!r}")
    out = []
    for d in dicts:
        items = sorted(((int(k), str(v)) for k, v in d.items()), key=lambda kv: kv[0])
        if [k for k, _ in items] != list(range(len(items))):
            raise CheckpointError(f"{source}: class_names keys must be 0..n-1 without gaps, got {list(d)}")
        out.append([v for _, v in items])
    return out


def _dim(value: Any) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


def read_onnx_model(path: str | os.PathLike[str],
                    overrides: ModelOverrides | None = None) -> tuple[ModelMeta, OnnxModelSpec]:
    """Read a Deepness-format ONNX file: our model description and how to run it.

    Missing metadata gets Deepness's defaults (overlap 15 %, threshold 0.5, no standardisation) or neutral
    ones (class names ``class_N``, resolution unknown: the raster's own); each is listed in ``assumed``.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"model not found: {p}")
    ov = overrides or ModelOverrides()
    sess = _session(p)
    props = dict(sess.get_modelmeta().custom_metadata_map)
    assumed: list[str] = []
    inputs = sess.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise CheckpointError(f"{p}: a segmentation model needs one input [batch, channels, height, width]; "
                              f"this one has {[(i.name, i.shape) for i in inputs]}")
    shape = inputs[0].shape
    in_channels = _dim(shape[1])
    if in_channels is None:
        raise CheckpointError(f"{p}: the input's channel count is not fixed ({shape}); it cannot be fed")
    size = _dim(shape[2]) if shape[2] == shape[3] else None
    if shape[2] != shape[3] and _dim(shape[2]) and _dim(shape[3]):
        raise CheckpointError(f"{p}: only square inputs are supported, this one is {shape[2]}x{shape[3]}")
    model_type = _json_value(props, "model_type")
    if model_type is not None and str(model_type).capitalize() != "Segmentor":
        raise CheckpointError(f"{p} is a Deepness {model_type!r} model; fastunet-geo runs segmentation models "
                              "(model_type Segmentor) only")
    names = _class_name_lists(_json_value(props, "class_names") or _json_value(props, "names"), p)
    outputs = sess.get_outputs()
    if names is not None and len(names) != len(outputs):
        raise CheckpointError(f"{p}: class_names lists {len(names)} head(s) but the model has {len(outputs)} "
                              "outputs")
    heads = []
    for k, out in enumerate(outputs):
        oshape = list(out.shape)
        if len(oshape) == 3:
            kind, channels = "sigmoid", 1
        elif len(oshape) == 4 and _dim(oshape[1]) is not None:
            channels = int(oshape[1])
            kind = "sigmoid" if channels == 1 else "softmax"
        else:
            raise CheckpointError(f"{p}: output {out.name!r} has shape {oshape}; a segmentation output is "
                                  "[N, C, H, W] or [N, H, W] with a fixed C")
        head_names = names[k] if names is not None else None
        if head_names is None:
            head_names = ["background", "class_1"] if kind == "sigmoid" else [f"class_{i}" for i in range(channels)]
        elif kind == "sigmoid" and len(head_names) == 1:
            head_names = ["background", head_names[0]]
        if len(head_names) != (2 if kind == "sigmoid" else channels):
            raise CheckpointError(f"{p}: output {out.name!r} has {channels} channel(s) but {len(head_names)} "
                                  "class names")
        heads.append(OnnxHead(out.name, kind, default_classes(head_names), _dim(oshape[-1])))
    own = _own_meta(props)  # written by 'fastunet-geo export': colours and ids, the input as trained
    if own is not None and len(heads) == 1 and ov.classes is None:
        theirs = own.classes
        if len(theirs) == len(heads[0].classes):
            heads[0] = OnnxHead(heads[0].output_name, heads[0].kind, theirs, heads[0].out_size)
    if names is None and ov.classes is None:
        assumed.append("class names class_N (the file has no class_names"
                       + hint("; give them with {}", "model_classes") + ")")
    if ov.head is not None:
        if not 0 <= ov.head < len(heads):
            raise ConfigError(f"{setting('head', ov.head)}: the model has {len(heads)} output head(s), "
                              f"0..{len(heads) - 1}")
        heads = [heads[ov.head]]
    if ov.classes is not None:
        given = parse_class_spec(ov.classes)
        if len(given) != len(heads[0].classes):
            raise ConfigError(f"{setting('model_classes')} gives {len(given)} classes but the output "
                              f"{heads[0].output_name!r} "
                              f"has {len(heads[0].classes)}")
        heads[0] = OnnxHead(heads[0].output_name, heads[0].kind, given, heads[0].out_size)

    tile = _json_value(props, "tile_size")
    tile_px = int(tile) if tile is not None else (size or DEFAULT_TILE_PX)
    if tile is None and size is None:
        assumed.append(f"tile {DEFAULT_TILE_PX} px (no tile_size and a dynamic input size)")
    if size is not None and tile_px != size:
        tile_px = size
    overlap = _json_value(props, "tiles_overlap")
    if overlap is None:
        assumed.append(f"tile overlap {DEFAULT_OVERLAP_PERCENT} % (Deepness's default)")
    overlap_px = round(tile_px * float(overlap if overlap is not None else DEFAULT_OVERLAP_PERCENT) / 100)
    res_cm = _json_value(props, "resolution")
    resolution_m = ov.resolution_m if ov.resolution_m is not None else (
        float(res_cm) / 100 if res_cm is not None else None)
    if resolution_m is None:
        assumed.append("no model resolution (the raster is used at its own"
                       + hint("; give it with {}", "model_resolution") + ")")
    mean, std = _json_value(props, "standardization_mean"), _json_value(props, "standardization_std")
    if mean is None or std is None:
        mean, std = [0.0] * in_channels, [1.0] * in_channels
    thresh = ov.seg_thresh if ov.seg_thresh is not None else _json_value(props, "seg_thresh")
    if not 0.0 <= float(thresh if thresh is not None else DEFAULT_SEG_THRESH) <= 1.0:
        raise ConfigError(f"the segmentation threshold must be within 0..1, got {thresh}")
    if thresh is None and any(h.kind == "sigmoid" for h in heads):
        assumed.append(f"threshold {DEFAULT_SEG_THRESH} for sigmoid outputs (no seg_thresh)")
    spec_in = _trained_input(own, in_channels, mean, std) or _input_spec(in_channels, mean, std, p)
    meta = ModelMeta(architecture=ARCHITECTURE, arch_args={"file": p.name}, input=spec_in, classes=heads[0].classes,
                     tile_size_px=tile_px, overlap_px=overlap_px, resolution_m=resolution_m,
                     training={"source": f"Deepness-format ONNX ({p.name})"})
    spec = OnnxModelSpec(p, inputs[0].name, in_channels, _dim(shape[0]), size, tuple(heads),
                         float(thresh if thresh is not None else DEFAULT_SEG_THRESH), thresh is not None,
                         None if model_type is None else str(model_type), tuple(assumed))
    return meta, spec


def _own_meta(props: Mapping[str, str]) -> ModelMeta | None:
    """Return the model description ``fastunet-geo export`` stores beside Deepness's fields, if it is readable."""
    ours = _json_value(props, "fastunet")
    if not isinstance(ours, dict):
        return None
    try:
        return ModelMeta.from_dict(ours)
    except (CheckpointError, ConfigError):
        return None


def _trained_input(own: ModelMeta | None, in_channels: int, mean: Sequence[Any],
                   std: Sequence[Any]) -> InputSpec | None:
    """Return the input the model was trained on, as our export recorded it, when Deepness's fields agree.

    Deepness's ``/255`` and standardisation are that input rewritten (:func:`deepness_standardisation`): the
    same numbers reach the model either way, but only the original says which bands, data type and value
    range the model expects, so that predict checks a raster against those (a 16-bit model is no 8-bit
    one). Fields edited since the export (they no longer agree) are read as Deepness reads them.
    """
    if own is None or own.input.n_bands != in_channels:
        return None
    want_mean, want_std = deepness_standardisation(own.input)
    try:
        given = [float(v) for v in (*mean, *std)]
    except (TypeError, ValueError):
        return None
    if len(given) != 2 * in_channels:
        return None
    agree = all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
                for a, b in zip(given, [*want_mean, *want_std], strict=True))
    return own.input if agree else None


def _input_spec(in_channels: int, mean: Sequence[Any], std: Sequence[Any], source: Path) -> InputSpec:
    try:
        m, s = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: standardization_mean/_std must be lists of numbers") from exc
    if len(m) != in_channels or len(s) != in_channels:
        raise CheckpointError(f"{source}: standardization_mean/_std need {in_channels} values each")
    return InputSpec(bands=tuple(range(1, in_channels + 1)), dtype="uint8", value_range=(0.0, 255.0), mean=m, std=s)


def deepness_standardisation(spec: InputSpec) -> tuple[list[float], list[float]]:
    """Return the mean and std that, after Deepness's fixed ``/255``, give the model what ``spec`` gives it.

    ``(v/255 - mean') / std'`` equals our ``((v - lo)/(hi - lo) - mean) / std`` for every raw value ``v``.
    """
    lo, hi = spec.value_range
    k = 255.0 / (hi - lo)
    return [(lo / 255.0) + m * (hi - lo) / 255.0 for m in spec.mean], [s / k for s in spec.std]


def deepness_metadata(meta: ModelMeta, seg_thresh: float | None = None) -> dict[str, str]:
    """Return Deepness's metadata for ``meta`` (values JSON-encoded, as Deepness reads them).

    Deepness always divides by 255 before standardising; for other value ranges the mean/std are rewritten
    so that ``(v/255 - mean') / std'`` equals our ``((v - lo)/(hi - lo) - mean) / std``.
    """
    mean, std = deepness_standardisation(meta.input)
    props: dict[str, Any] = {
        "model_type": "Segmentor",
        "class_names": {str(i): c.name for i, c in enumerate(meta.classes)},
        "tile_size": meta.tile_size_px,
        "tiles_overlap": round(100 * meta.overlap_px / meta.tile_size_px),
        "standardization_mean": mean,
        "standardization_std": std,
    }
    if meta.resolution_m:
        props["resolution"] = round(meta.resolution_m * 100, 4)
    if seg_thresh is not None:
        props["seg_thresh"] = seg_thresh
    return {key: json.dumps(value) for key, value in props.items()}
