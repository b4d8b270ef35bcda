"""segmentation_models_pytorch ``save_pretrained`` folders (``config.json`` + ``model.safetensors``) as models.

smp writes the constructor arguments to ``config.json`` (``_model_class`` names the architecture) and the
weights to ``model.safetensors``: nothing is unpickled, and the encoder is built with ``encoder_weights=None``
(the folder's own weights are loaded; nothing is downloaded). What smp does not record (class names, band
order and scaling, tile size, ground resolution) is assumed and said, or given by the user. A folder written
by ``fastunet-geo export --format smp`` records all of it in ``fastunet.json``: that is used, with the classes
or resolution the user gives in its place.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from fastunet_core.errors import CheckpointError
from fastunet_core.hints import hint
from fastunet_core.models.deepness import ModelOverrides
from fastunet_core.models.metadata import ClassInfo, InputSpec, ModelMeta, default_classes, parse_class_spec
from fastunet_core.models.registry import SMP_PREFIX, TRAINING_ONLY_ARGS, get_architecture

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # what smp's pretrained encoders expect after /255 (RGB)
IMAGENET_STD = (0.229, 0.224, 0.225)
TILES_ASSUMED = "tiles 512 px, overlap 64 px"
_NOT_ARGS = ("_model_class", "classes", "in_channels", *TRAINING_ONLY_ARGS)


def is_smp_folder(path: str | os.PathLike[str]) -> bool:
    """Return True for a folder that holds an smp ``config.json``."""
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()


def read_smp_folder(path: str | os.PathLike[str],
                    overrides: ModelOverrides | None = None) -> tuple[ModelMeta, Path, tuple[str, ...]]:
    """Return the model description of an smp folder, its weights file, and what was assumed."""
    folder = Path(path)
    ov = overrides or ModelOverrides()
    try:
        config: dict[str, Any] = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{folder}/config.json is not readable JSON ({exc})") from exc
    cls_name = config.get("_model_class")
    if not isinstance(cls_name, str):
        raise CheckpointError(f"{folder}/config.json has no _model_class: not an smp save_pretrained folder")
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"{folder} has no model.safetensors (smp save_pretrained writes one); only "
                              "safetensors weights are read, never pickles")
    arch = get_architecture(SMP_PREFIX + cls_name).name
    ours = folder / "fastunet.json"  # written by 'fastunet-geo export --format smp': the full description
    if ours.is_file():  # its bands, scaling, tiles and classes; what the user gives replaces them
        try:
            recorded = ModelMeta.from_dict(json.loads(ours.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{ours} is not readable JSON ({exc})") from exc
        return _overridden(recorded, ov), weights, ()
    n_classes, in_ch = int(config.get("classes", 1)), int(config.get("in_channels", 3))
    args = {k: v for k, v in config.items() if k not in _NOT_ARGS}
    assumed = []
    classes: tuple[ClassInfo, ...]
    if ov.classes is not None:
        classes = parse_class_spec(ov.classes)
        if len(classes) != n_classes:
            raise CheckpointError(f"{len(classes)} class names given but the model has {n_classes} classes")
    else:
        classes = default_classes([f"class_{i}" for i in range(n_classes)])
        assumed.append("class names class_N"
                       + hint(" (give them with {}, or once with {})", "model_classes", "init_from"))
    if in_ch == 3:
        spec = InputSpec(bands=(1, 2, 3), dtype="uint8", value_range=(0.0, 255.0), mean=IMAGENET_MEAN,
                         std=IMAGENET_STD)
        assumed.append("RGB uint8 /255 with ImageNet mean/std (smp's encoder convention)")
    else:
        spec = InputSpec(bands=tuple(range(1, in_ch + 1)), dtype="uint8", value_range=(0.0, 255.0))
        assumed.append(f"bands 1..{in_ch}, uint8 /255, no standardisation")
    if ov.resolution_m is None:
        assumed.append("no model resolution" + hint(" (give it with {})", "model_resolution"))
    assumed.append(f"{TILES_ASSUMED} (smp records none)")
    meta = ModelMeta(architecture=arch, arch_args=args, input=spec, classes=classes, tile_size_px=512,
                     overlap_px=64, resolution_m=ov.resolution_m,
                     training={"source": f"smp save_pretrained folder ({folder.name})"})
    return meta, weights, tuple(assumed)


def _overridden(meta: ModelMeta, ov: ModelOverrides) -> ModelMeta:
    """Return the folder's recorded description with the classes and resolution the user gave."""
    if ov.classes is not None:
        classes = parse_class_spec(ov.classes)
        if len(classes) != meta.n_classes:
            raise CheckpointError(f"{len(classes)} class names given but the model has {meta.n_classes} classes")
        meta = dataclasses.replace(meta, classes=classes)
    if ov.resolution_m is not None:
        meta = dataclasses.replace(meta, resolution_m=ov.resolution_m)
    return meta
