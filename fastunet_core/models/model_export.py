"""Models out: a Deepness-format ONNX file, or an smp ``save_pretrained`` folder.

The ONNX graph is the project's one export (:func:`fastunet_core.models.onnx_export.export_onnx_bytes`) with a
softmax over the classes appended, a dynamic batch, and Deepness's metadata (class names, resolution in
cm/px, tile size, overlap in percent, standardisation rewritten for Deepness's fixed /255). So Deepness, or any
ONNX tool, runs fastunet-geo models with the probabilities our engine computes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from fastunet_core.errors import ConfigError
from fastunet_core.hints import setting
from fastunet_core.io.atomic import atomic_output, check_writable
from fastunet_core.models.checkpoint_file import LoadedModel
from fastunet_core.models.deepness import deepness_metadata
from fastunet_core.models.registry import SMP_PREFIX

EXPORT_INPUT = "input"
EXPORT_OUTPUT = "output"
FORMATS = ("onnx", "smp")
FASTUNET_JSON = "fastunet.json"  # our metadata beside smp's config.json: the folder reads back as it was


def export_deepness_onnx(loaded: LoadedModel, target: str | os.PathLike[str], seg_thresh: float | None = None,
                         overwrite: bool = False) -> Path:
    """Write ``loaded`` as a Deepness-format ONNX file (softmax output, dynamic batch); return its path."""
    import onnx
    from onnx import helper

    from fastunet_core.models.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx_bytes

    meta = loaded.meta
    graph_bytes = export_onnx_bytes(loaded.torch_model(), meta.input.n_bands, meta.tile_size_px)
    model = onnx.load_from_string(graph_bytes)
    graph = model.graph
    for node in graph.node:  # Deepness shows the input's name; "input" and "output" are its usual ones
        node.input[:] = [EXPORT_INPUT if n == INPUT_NAME else n for n in node.input]
    graph.input[0].name = EXPORT_INPUT
    graph.node.append(helper.make_node("Softmax", [OUTPUT_NAME], [EXPORT_OUTPUT], axis=1, name="class_softmax"))
    old_out = graph.output[0]
    new_out = helper.make_tensor_value_info(EXPORT_OUTPUT, old_out.type.tensor_type.elem_type, None)
    new_out.type.CopyFrom(old_out.type)
    del graph.output[:]
    graph.output.append(new_out)
    props = deepness_metadata(meta, seg_thresh)
    props["fastunet"] = json.dumps(meta.to_dict())  # everything else, for fastunet-geo and readers who want it
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    out = Path(target)
    with atomic_output(out, overwrite=overwrite) as tmp:
        onnx.save(model, str(tmp))
    return out


def export_smp_folder(loaded: LoadedModel, target: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Write an smp model as a ``save_pretrained`` folder (config.json, model.safetensors, fastunet.json)."""
    meta = loaded.meta
    if not (meta.architecture.startswith(SMP_PREFIX) or meta.architecture in ("unetplusplus", "deeplabv3plus")):
        raise ConfigError(f"{meta.architecture} is not a segmentation_models_pytorch architecture; "
                          f"{setting('export_format', 'smp')} exports smp.NAME models only (use "
                          f"{setting('export_format', 'onnx')} for any model)")
    out = Path(target)
    check_writable(out, overwrite)
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        loaded.torch_model().save_pretrained(str(tmp))  # type: ignore[operator]
        (tmp / FASTUNET_JSON).write_text(json.dumps(meta.to_dict(), indent=2))
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
