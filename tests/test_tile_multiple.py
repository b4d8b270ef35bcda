"""One rule for the tile sizes an architecture can take, applied where a tile size is chosen.

Training refuses up front a tile size that predict would then refuse in the trained model (it trained for
minutes with unet_skinny on 100 px tiles, then every predict of that model failed); init likewise. The
errors name the nearest valid sizes, in the front end's words.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from cli_helpers import run_cli

from fastunet_core.errors import ConfigError
from fastunet_core.hints import FrontEnd, speaking
from fastunet_core.models.registry import check_tile_multiple


@pytest.mark.parametrize(("tile", "architecture", "divisor", "nearest"),
                         [(102, "unet_tiny", 4, "data.tile_size=100 or data.tile_size=104"),
                          (100, "unet_skinny", 64, "data.tile_size=64 or data.tile_size=128"),
                          (40, "unet_skinny", 64, "data.tile_size=64")])
def test_training_refuses_a_tile_size_predict_would_refuse(tmp_path: Path, tile: int, architecture: str,
                                                           divisor: int, nearest: str) -> None:
    config = tmp_path / "run.yaml"
    # the data root does not exist: the tile size is refused before any data is looked at
    config.write_text(yaml.safe_dump({"data": {"kind": "folder", "root": str(tmp_path / "absent"), "tile_size": tile},
                                      "model": {"architecture": architecture}, "device": "cpu"}))
    code, out = run_cli("train", "-c", str(config), "--output", str(tmp_path / "run"))
    assert code == 1, out
    assert out.strip() == (f"error: tile size {tile} px is not a multiple of {divisor}, which {architecture} needs "
                           f"(one halving per level); use {nearest}")
    assert not (tmp_path / "run").exists()


def test_training_takes_the_tile_sizes_the_architecture_can_take() -> None:
    from fastunet_core.train.config import check_training_tile, config_from_dict

    for tile, architecture in ((100, "unet_tiny"), (128, "unet_skinny"), (96, "unet")):  # unet: 16
        check_training_tile(config_from_dict({"data": {"kind": "folder", "root": "x", "tile_size": tile},
                                              "model": {"architecture": architecture}}))
    # the model's own arguments set the divisor: widths of 3 levels take 4 px steps
    check_training_tile(config_from_dict({"data": {"kind": "folder", "root": "x", "tile_size": 36},
                                          "model": {"architecture": "unet", "args": {"widths": [8, 16, 32]}}}))
    with pytest.raises(ConfigError, match=r"use data\.tile_size=32 or data\.tile_size=40$"):
        check_training_tile(config_from_dict({"data": {"kind": "folder", "root": "x", "tile_size": 36},
                                              "model": {"architecture": "unet", "args": {"widths": [8, 16, 32, 64]}}}))


def test_init_refuses_a_default_tile_predict_would_refuse(tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    code, text = run_cli("init", "unet_skinny", "--classes", "a,b", "--tile", "100", "-o", str(out))
    assert code == 1 and text.strip().endswith("use --tile 64 or 128"), text
    assert not out.exists()


def test_predict_names_the_same_nearest_sizes(tmp_path: Path, small_raster: Path) -> None:
    model = tmp_path / "m.safetensors"
    assert run_cli("init", "unet_tiny", "--classes", "a,b", "-o", str(model))[0] == 0
    code, text = run_cli("predict", str(small_raster), "-m", str(model), "-o", str(tmp_path / "c.tif"),
                         "--tile", "102", "--resolution", "native")
    assert code == 1 and text.strip() == ("error: tile size 102 px is not a multiple of 4, which unet_tiny needs (one "
                                          "halving per level); use --tile 100 or 104"), text


def test_each_front_end_names_its_own_setting() -> None:
    with pytest.raises(ConfigError, match=r"use the tile size 64 or 128$"), speaking(FrontEnd("gui", {})):
        check_tile_multiple(100, "unet_skinny", key="data.tile_size")
    with pytest.raises(ConfigError, match=r"use 'Tile size' 96 or 128$"), \
            speaking(FrontEnd("gui", {"tile": "'Tile size'"})):
        check_tile_multiple(100, "unet_skinny", {"widths": [8, 16, 32, 64, 128, 256]}, key="tile")  # 32
