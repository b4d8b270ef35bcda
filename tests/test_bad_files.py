"""Damaged or mismatched data files: one line naming the file, exit 1, found as early as possible.

Training on an image/mask folder: a mask of another size or a truncated PNG is refused when the dataset
is opened (a truncated PNG read whole decodes its missing rows as zeros without any error: the tile cache
trained on made-up labels); a file that breaks inside a DataLoader worker reaches the user as one line,
not a worker traceback. Predicting a VRT whose source is missing names the missing file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from cli_helpers import crop_png as _crop_png
from click.testing import CliRunner

from fastunet_core.cli import cli
from fastunet_core.errors import DatasetLayoutError
from fastunet_core.train.datasets.folder import open_folder

CLASS_NAMES = ["nodata", "background", "building", "road", "water", "barren", "forest", "agriculture"]




@pytest.fixture()
def pairs(tmp_path: Path, shared_data: Path) -> Path:
    """Four real 256 x 256 image/mask pairs (pseudo-LoveDA crops) in images/ and masks/."""
    src = shared_data / "mmseg-remote-sensing-samples" / "pseudo_loveda_dataset"
    root = tmp_path / "pairs"
    for i in range(4):
        for folder, kind in (("img_dir", "images"), ("ann_dir", "masks")):
            _crop_png(src / folder / f"{i % 2}.png", root / kind / f"{i}.png", 256)
    return root


def _train(tmp_path: Path, root: Path, cache: str, workers: int = 2) -> tuple[int, str]:
    cfg = {"data": {"kind": "folder", "root": str(root), "tile_size": 128, "class_names": CLASS_NAMES,
                    "val_fraction": 0.25, "cache": cache},
           "model": {"architecture": "unet", "args": {"widths": [8, 16, 32], "convs": 1}},
           "optim": {"epochs": 1, "batch_size": 2, "micro_batch": 2, "lr": 0.01, "num_workers": workers},
           "device": "cpu", "output": str(tmp_path / "run")}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(cfg))
    result = CliRunner().invoke(cli, ["-q", "train", "-c", str(config)])
    return result.exit_code, result.stderr


def _one_line(code: int, stderr: str, *needles: str) -> str:
    assert code == 1, stderr
    assert "Traceback" not in stderr and "Caught" not in stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_mask_of_another_size_is_refused_when_the_dataset_opens(tmp_path: Path, pairs: Path) -> None:
    _crop_png(pairs / "masks" / "0.png", pairs / "masks" / "3.png", 200)
    with pytest.raises(DatasetLayoutError, match="200 x 200"):
        open_folder(pairs, "train", 128, CLASS_NAMES, val_fraction=0.25)  # not only when a worker reads it
    code, err = _train(tmp_path, pairs, "off")
    _one_line(code, err, str(pairs / "masks" / "3.png"), "200 x 200", "256 x 256")
    assert not (tmp_path / "run" / "last.safetensors").exists()


@pytest.mark.parametrize("cache", ["off", "folder"])
def test_truncated_mask_png_is_named(tmp_path: Path, pairs: Path, cache: str) -> None:
    mask = pairs / "masks" / "3.png"
    data = mask.read_bytes()
    mask.write_bytes(data[: len(data) // 2])
    code, err = _train(tmp_path, pairs, "off" if cache == "off" else str(tmp_path / "cache"))
    _one_line(code, err, str(mask), "truncated")


def test_damaged_mask_in_a_worker_is_one_line(tmp_path: Path, pairs: Path) -> None:
    mask = pairs / "masks" / "3.png"
    data = bytearray(mask.read_bytes())
    middle = len(data) // 3
    data[middle:middle + 40] = bytes(b ^ 0xFF for b in data[middle:middle + 40])  # compressed data broken
    mask.write_bytes(bytes(data))
    code, err = _train(tmp_path, pairs, "off", workers=2)
    _one_line(code, err, str(mask), "damaged")


def test_vrt_with_a_missing_source_names_it(tmp_path: Path, rio_data: Path,
                                            make_checkpoint: object) -> None:
    from rasterio.shutil import copy as rio_copy

    source = Path(shutil.copy(rio_data / "cogeo.tif", tmp_path / "sheet.tif"))
    vrt = tmp_path / "mosaic.vrt"
    rio_copy(source, vrt, driver="VRT")
    source.unlink()
    model = make_checkpoint()  # type: ignore[operator]
    result = CliRunner().invoke(cli, ["-q", "predict", str(vrt), "-m", str(model), "-o", str(tmp_path / "c.tif")])
    _one_line(result.exit_code, result.stderr, "mosaic.vrt", str(source), "No such file")
