"""A hint that names a training configuration key is typed as is: the override the command line takes.

The tester's complaint: ``evaluate --data`` said "set tile_size" and training said "use data.tile_size 128",
which the command line reads as two words and refuses (an override is ``section.key=value``). Each test here
takes the hint out of the message and reruns the same command with exactly that text appended.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import rasterio
from cli_helpers import run_cli
from rasterio.transform import from_origin

from fastunet_core.hints import CLI, CONFIG_KEYS, SETTINGS, FrontEnd, setting, setting_any, speaking

REPO = Path(__file__).resolve().parent.parent


def _hint(pattern: str, out: str) -> list[str]:
    """Return the words of the hint that ``pattern``'s group finds in the error line of ``out``."""
    [line] = [line for line in out.splitlines() if line.startswith("error:")]
    found = re.search(pattern, line)
    assert found, line
    return shlex.split(found.group(1))


def test_a_training_tile_hint_is_the_override_to_type(tmp_path: Path) -> None:
    """unet (divisor 8) on 100 px tiles: refused, naming data.tile_size=96; that very text trains."""
    command = ["-q", "train", "-c", str(REPO / "training" / "demo_spacenet.yaml"),
               f"data.root={REPO / 'data' / 'samples'}", "--output", str(tmp_path / "run"), "optim.epochs=1",
               "optim.max_batches_per_epoch=1", "data.tile_size=100"]
    code, out = run_cli(*command)
    assert code == 1, out
    pasted = _hint(r"; use (.+?) or ", out)
    code, out = run_cli(*command, *pasted)
    assert code == 0, out
    assert pasted == ["data.tile_size=96"]
    assert (tmp_path / "run" / "best.safetensors").is_file()


def _landcover_of_512_px_lists(root: Path) -> None:
    """A 1024 x 512 px sheet whose split lists name its two 512 px tiles, as LandCover.ai's split.py cuts them."""
    rng = np.random.default_rng(0)
    for folder, count in (("images", 3), ("masks", 1)):
        (root / folder).mkdir(parents=True)
        data = rng.integers(0, 256 if count == 3 else 5, (count, 512, 1024), dtype=np.uint8)
        with rasterio.open(root / folder / "S.tif", "w", driver="GTiff", width=1024, height=512, count=count,
                           dtype="uint8", crs="EPSG:2180", transform=from_origin(0, 0, 0.25, 0.25)) as dst:
            dst.write(data)
    for split in ("train", "val"):
        (root / f"{split}.txt").write_text("S_0\nS_1\n")


def test_an_evaluate_tile_hint_is_the_override_to_type(tmp_path: Path, make_checkpoint: object) -> None:
    """evaluate --data takes the model's tile size (1024 px here); the lists' 512 px is typed as the hint says."""
    root = tmp_path / "landcover"
    _landcover_of_512_px_lists(root)
    model = make_checkpoint(classes="background,building,woodland,water,road", tile=1024,  # type: ignore[operator]
                            overlap=0)
    command = ["evaluate", "-m", str(model), "--data", str(root), "--workers", "0"]
    code, out = run_cli(*command)
    assert code == 1, out
    pasted = _hint(r"made with: (.+?) for the official lists", out)
    code, out = run_cli(*command, *pasted)
    assert code == 0, out
    assert pasted == ["data.tile_size=512"] and "2 images, loss" in out


def test_the_command_line_writes_each_config_key_as_an_override() -> None:
    assert set(CONFIG_KEYS) == {key for key in SETTINGS if "." in key} and "data.tile_size" in CONFIG_KEYS
    for key in CONFIG_KEYS:
        assert setting(key, 3) == f"{key}=3"
    assert setting("tile", 448) == "--tile 448"  # a flag and its value: two words
    assert setting_any("data.tile_size", [64, 128]) == "data.tile_size=64 or data.tile_size=128"
    assert setting_any("tile", [64, 128]) == "--tile 64 or 128"
    assert CLI.render("optim.lr") == "optim.lr"  # named without a value: the key
    with speaking(FrontEnd("gui", {"data.tile_size": "'Tile size'"})):  # a dialog's field takes the value alone
        assert setting("data.tile_size", 128) == "'Tile size' 128"
        assert setting_any("data.tile_size", [64, 128]) == "'Tile size' 64 or 128"


@pytest.mark.parametrize(("overrides", "pattern"), [
    (["optim.batch_size=6", "optim.micro_batch=4"], r"; use e\.g\. (.+)$"),
    (["data.val_fraction=0"], r"; use (.+?) for the default strip$"),
])
def test_other_training_hints_are_overrides_too(tmp_path: Path, overrides: list[str], pattern: str) -> None:
    """The micro-batch that does not divide the batch, and a run without a validation strip: each hint trains."""
    command = ["-q", "train", "-c", str(REPO / "training" / "demo_spacenet.yaml"),
               f"data.root={REPO / 'data' / 'samples'}", "--output", str(tmp_path / "run"), "optim.epochs=1",
               "optim.max_batches_per_epoch=1", *overrides]
    code, out = run_cli(*command)
    assert code == 1, out
    pasted = _hint(pattern, out)
    code, out = run_cli(*command, *pasted)
    assert code == 0, out


def test_the_command_that_wraps_plain_weights_runs_as_printed(tmp_path: Path) -> None:
    """A PyTorch file of bare weights is refused with the init command that wraps them: it works as printed."""
    import torch

    from fastunet_core.models.registry import build_model

    weights = tmp_path / "w.pth"
    torch.save(build_model("unet_tiny", 3, 2).state_dict(), weights)
    code, out = run_cli("info", str(weights))
    assert code == 1, out
    words = _hint(r"Wrap plain weights with '(fastunet-geo .+?)'", out)
    assert words[0] == "fastunet-geo", words
    model = tmp_path / "wrapped.safetensors"
    filled = {"ARCH": "unet_tiny", "NAMES": "a,b", "FILE": str(weights), "OUT.safetensors": str(model)}
    code, out = run_cli(*(filled.get(word, word) for word in words[1:]))
    assert code == 0, out
    assert run_cli("info", str(model))[0] == 0
