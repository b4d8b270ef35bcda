"""The dataset layout registry: a new layout is one module and one register_layout call."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fastunet_core.errors import ConfigError
from fastunet_core.models.metadata import InputSpec, ModelMeta, default_classes
from fastunet_core.train.datasets import DatasetSpec, open_dataset
from fastunet_core.train.datasets.folder import open_folder
from fastunet_core.train.datasets.layouts import LAYOUTS, get_layout, recognise_layout, register_layout

META = ModelMeta("test_pixel_colour", {}, InputSpec(bands=(1, 2, 3)), default_classes(["a", "b", "c"]), tile_size_px=16)


def test_a_registered_layout_is_opened_and_recognised(generated_layouts: dict[str, Path], tmp_path: Path) -> None:
    pairs = generated_layouts["folder"]
    marked = tmp_path / "marked"
    marked.mkdir()
    (marked / "LAYOUT").write_text("mine\n")

    def open_mine(spec: DatasetSpec, split: str):  # type: ignore[no-untyped-def]
        return open_folder(pairs, split, spec.tile_size, ("a", "b", "c"), val_fraction=0.25)

    def is_mine(root: Path, meta: ModelMeta) -> dict[str, object] | None:
        return {"note": "found"} if (root / "LAYOUT").is_file() else None

    register_layout("mine", open_mine, "a test layout: a LAYOUT file", is_mine)
    try:
        ds = open_dataset(DatasetSpec("mine", marked, tile_size=16, cache="off"), "train")
        reference = open_folder(pairs, "train", 16, ("a", "b", "c"), val_fraction=0.25)
        assert len(ds) == len(reference) > 0 and np.array_equal(ds[0][1], reference[0][1])
        assert recognise_layout(marked, META) == {"kind": "mine", "note": "found"}
        assert recognise_layout(generated_layouts["loveda"], META)["kind"] == "loveda"
        assert recognise_layout(pairs, META)["kind"] == "folder"  # the fallback still comes after "mine"
    finally:
        del LAYOUTS["mine"]


def test_unknown_kind_lists_the_registered_ones() -> None:
    with pytest.raises(ConfigError, match=r"choose one of loveda, landcoverai, folder, raster_vector"):
        DatasetSpec("landcover", Path("."))
    assert get_layout("folder").fallback and not get_layout("loveda").fallback
