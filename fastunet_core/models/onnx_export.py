"""Export a model to ONNX: the one exporting function of the project (cache, ``export`` command, tests).

The graph takes ``x`` (N, bands, H, W) float32, already normalised as the checkpoint's input spec says,
and returns ``logits`` (N, classes, H, W); batch, height and width are dynamic (measured: no slower in
ONNX Runtime than a graph fixed to one tile size), so one file serves every tile size. BatchNorm is left
to ONNX Runtime's graph optimiser, which folds it into the convolutions when the session is created.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import IO

import torch
from torch import nn

OPSET = 17
INPUT_NAME = "x"
OUTPUT_NAME = "logits"


def export_onnx(model: nn.Module, n_bands: int, tile_px: int, target: str | os.PathLike[str] | IO[bytes]) -> None:
    """Write ``model`` (in eval mode, on the CPU) as an ONNX graph with dynamic batch and size to ``target``.

    ``tile_px`` is the size of the example input traced through the model (a size the model accepts).
    """
    example = torch.zeros(1, n_bands, tile_px, tile_px)
    dims = {0: "batch", 2: "height", 3: "width"}
    dest: str | IO[bytes] = str(target) if isinstance(target, (str, os.PathLike)) else target
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter
        # a file object works: torch's annotation lists paths only
        torch.onnx.export(model.eval().cpu(), (example,), dest, input_names=[INPUT_NAME],  # type: ignore[arg-type]
                          output_names=[OUTPUT_NAME], opset_version=OPSET, dynamo=False,
                          dynamic_axes={INPUT_NAME: dims, OUTPUT_NAME: dims})


def export_onnx_bytes(model: nn.Module, n_bands: int, tile_px: int) -> bytes:
    """Return the ONNX export of ``model`` as bytes (see :func:`export_onnx`)."""
    buf = io.BytesIO()
    export_onnx(model, n_bands, tile_px, buf)
    return buf.getvalue()


def export_checkpoint_onnx(checkpoint: str | os.PathLike[str], target: Path) -> None:
    """Load a checkpoint and export its model to ``target`` at the checkpoint's tile size."""
    from fastunet_core.models.checkpoint import load_checkpoint

    loaded = load_checkpoint(checkpoint)
    export_onnx(loaded.torch_model(), loaded.meta.input.n_bands, loaded.meta.tile_size_px, target)
