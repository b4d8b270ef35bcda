"""The plugin's names for the settings that core messages mention (see :mod:`fastunet_core.hints`).

A core message run from the dock or Processing names the control the user changes (*Tile size*), never a
command-line flag; a setting the plugin has no control for is left out of the message. The names are the
labels the dock and the Processing dialogs show. Pure Python: the engine process imports it too.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import TypeVar

from fastunet_core.hints import FrontEnd, speaking

QGIS = FrontEnd("qgis", {
    "output": "class raster",
    "tile": "'Tile size'",
    "overlap": "'Overlap'",
    "batch_size": "'Batch size'",
    "device": "'Device'",
    "bands": "'Bands'",
    "resolution": "'Resolution'",
    "simplify": "'Simplify'",
    "min_area": "'Minimum area'",
    "train_output": "'Run folder'",
    "fresh": "'Start over'",
    "segment_tool": "'Segment raster' or the dock's Run",
    "rescale": "Raster > Conversion > Translate with -scale among its additional parameters",
    # training: the plugin trains with one batch size (micro-batch = batch, no gradient accumulation), so the
    # micro-batch is its 'Batch size' and optim.batch_size has no control of its own
    "optim.lr": "'Learning rate'",
    "optim.epochs": "'Epochs'",
    "optim.micro_batch": "'Batch size'",
    "data.tile_size": "'Tile size'",
    "data.val_fraction": "'Validation fraction'",
    "model.architecture": "'Architecture'",
}, aligned_tables=False)  # the Processing log is HTML (spaces collapse), the dock's log a proportional font

# the dock's Train tab: the run folder is <model file>_training, chosen through the model file
TRAIN_TAB = FrontEnd("qgis-train-tab", {**QGIS.names, "train_output": "'Model file'",
                                        "data.val_fraction": "'Validation share'"}, aligned_tables=False)

T = TypeVar("T")


@contextlib.contextmanager
def in_qgis_words() -> Iterator[None]:
    """Build the messages of this context (this thread) with the plugin's names for settings."""
    with speaking(QGIS):
        yield


def qgis_worded(call: Callable[..., T]) -> Callable[..., T]:
    """Wrap ``call`` so that the messages it builds name the plugin's controls."""
    @functools.wraps(call)
    def run(*args: object, **kwargs: object) -> T:
        with speaking(QGIS):
            return call(*args, **kwargs)
    return run


def sentence(text: str) -> str:
    """Start a core message with a capital for the message bar, unless it starts with a name (a file, a path).

    ``u16_4b_classes.tif holds no polygon ...`` keeps the file's own spelling; ``input raster not found`` reads
    ``Input raster not found``. A bare layer name (``atlanta``) cannot be told from a word, so the plugin's
    messages never start with one: they say ``the layer 'atlanta' ...`` (user data quoted, never re-cased).
    """
    text = text.strip()
    first = text.split(" ", 1)[0].rstrip(",:;")
    return text[:1].upper() + text[1:] if first.isalpha() and first.islower() else text
