"""Training config values: checked by type and bound, one line naming the key; YAML numbers read as numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from fastunet_core.cli import cli
from fastunet_core.errors import ConfigError
from fastunet_core.train.config import load_config, parse_override

BASE = {"data": {"kind": "folder", "root": "."}}


@pytest.mark.parametrize(("override", "needles"), [
    ("optim.epochs=abc", ("optim.epochs", "valid integer", "'abc'")),
    ("optim.epochs=2.5", ("optim.epochs", "fractional")),
    ("optim.lr=-1", ("optim.lr", "greater than 0", "-1")),
    ("optim.lr=fast", ("optim.lr", "valid number")),
    ("optim.plateau_factor=1.5", ("optim.plateau_factor", "less than 1")),
    ("loss.class_weights=[1, -2]", ("loss.class_weights.1", "greater than or equal to 0")),
    ("tile_overlap_px=-3", ("tile_overlap_px", "greater than or equal to 0")),
])
def test_bad_values_name_the_key(override: str, needles: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, [override], base=BASE)
    message = str(info.value)
    assert "\n" not in message and all(n in message for n in needles), message


def test_numbers_in_exponent_form_are_numbers(tmp_path: Path) -> None:
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("data: {kind: folder, root: .}\noptim:\n  lr: 1e-4\n  weight_decay: 5E-6\n"
                        "loss:\n  smooth: .5e-3\nmodel:\n  args: {eps: 1e-3, name: 1e3x}\n")
    cfg = load_config(cfg_file, ["optim.epochs=3", "loss.alpha=2e-1"])
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.loss.smooth, cfg.loss.alpha) == (1e-4, 5e-6, 5e-4, 0.2)
    assert cfg.optim.epochs == 3 and isinstance(cfg.optim.epochs, int)
    assert cfg.model.args == {"eps": 1e-3, "name": "1e3x"}  # free-form values too; a word stays a word
    assert parse_override("optim.lr=1e-4") == (["optim", "lr"], 1e-4)
    assert parse_override("data.root=1e-4x") == (["data", "root"], "1e-4x")


def test_cli_bad_value_is_one_line_and_exit_1(tmp_path: Path) -> None:
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("data: {kind: folder, root: .}\noptim:\n  lr: 1e-4\n")
    for override, key in (("optim.epochs=abc", "optim.epochs"), ("optim.lr=-1", "optim.lr")):
        r = CliRunner().invoke(cli, ["train", "-c", str(cfg_file), "--output", str(tmp_path / "run"), override])
        assert r.exit_code == 1, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and key in lines[0], r.stderr
    assert not (tmp_path / "run").exists()
