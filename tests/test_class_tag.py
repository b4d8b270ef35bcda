"""One CLASSES tag format, written by predict and read back by vectorize, the preview and the plugin."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import rasterio

from fastunet_core.inference.predict import predict_raster
from fastunet_core.io.class_tag import classes_from_tags, decode_classes, encode_classes, is_background
from fastunet_core.models.metadata import ClassInfo, default_classes, default_color, parse_class_spec
from fastunet_core.polygons.legend import read_legend


def test_round_trip_and_defaults() -> None:
    classes = parse_class_spec("background,tree=#00ff00,water")
    assert decode_classes(encode_classes(classes)) == classes
    assert decode_classes('[{"id": 3, "name": "x"}]') == (ClassInfo(3, "x", default_color(3)),)
    assert decode_classes('[{"id": 3, "name": "x"}]', {3: (1, 2, 3)})[0].color == (1, 2, 3)
    with pytest.raises(ValueError, match="id, name and color"):
        decode_classes('[{"name": "no id"}]')
    assert classes_from_tags({"CLASSES": "not json"}) == () and classes_from_tags({}) == ()
    assert [c.color for c in default_classes(["a", "b"])] == [default_color(0), default_color(1)]
    assert is_background(" Background ") and not is_background("backgrounds")


def test_what_predict_writes_is_what_the_readers_see(generated_rasters: dict[str, object],
                                                     make_checkpoint: Callable[..., Path], tmp_path: Path) -> None:
    ckpt = make_checkpoint(tile=64, overlap=8, classes="background,tree=#00ff00,water")
    out = tmp_path / "classes.tif"
    predict_raster(generated_rasters["utm_nodata"].path, ckpt, out)  # type: ignore[attr-defined]
    with rasterio.open(out) as src:
        tagged = classes_from_tags(src.tags())
        legend = read_legend(src)
    assert tagged == parse_class_spec("background,tree=#00ff00,water")
    assert tuple(legend.classes.values()) == tagged
    assert legend.get(7).name == "class_7"  # an id the tag does not name (its colour: the colour table's)
