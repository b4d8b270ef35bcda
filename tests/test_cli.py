"""The CLI's happy paths: help for every command, init -> info -> predict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import rasterio
from click.testing import CliRunner

from fastunet_core import __version__
from fastunet_core.cli import cli


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_every_command_has_help_with_an_example(command: str) -> None:
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output and f"fastunet-geo {command}" in result.output


def test_init_info_predict(tmp_path: Path, rio_data: Path) -> None:
    runner = CliRunner()
    ckpt = tmp_path / "m.safetensors"
    r = runner.invoke(cli, ["init", "unet_tiny", "--classes", "background,forest=#00aa00,water", "--tile", "256",
                            "--overlap", "32", "-o", str(ckpt)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["info", str(ckpt), "--json"])
    meta = json.loads(r.stdout)
    assert meta["architecture"] == "unet_tiny" and meta["tile_size_px"] == 256
    assert meta["classes"][1] == {"id": 1, "name": "forest", "color": [0, 170, 0]}
    r = runner.invoke(cli, ["info", str(ckpt)])
    assert "forest" in r.stdout and "#00aa00" in r.stdout

    out, probs = tmp_path / "classes.tif", tmp_path / "probs.tif"
    args = ["-q", "predict", str(rio_data / "cogeo.tif"), "-m", str(ckpt), "-o", str(out), "--probs", str(probs),
            "--device", "cpu", "--blend", "core", "--batch-size", "2"]
    r = runner.invoke(cli, args)
    assert r.exit_code == 0, r.stderr
    with rasterio.open(out) as ds, rasterio.open(probs) as ps:
        assert ds.count == 1 and ps.count == 3
        assert ps.descriptions == ("p_background", "p_forest", "p_water")
        assert json.loads(ds.tags()["CLASSES"])[1]["name"] == "forest"
        assert ds.colormap(1)[1][:3] == (0, 170, 0)
    r = runner.invoke(cli, args)  # again: refused, output kept
    assert r.exit_code == 1 and "--overwrite" in r.stderr
    r = runner.invoke(cli, [*args, "--overwrite"])
    assert r.exit_code == 0, r.stderr


def test_predict_reports_device_and_reason(tmp_path: Path, rio_data: Path) -> None:
    runner = CliRunner()
    ckpt = tmp_path / "m.safetensors"
    runner.invoke(cli, ["init", "unet_tiny", "--classes", "2", "--tile", "128", "-o", str(ckpt)])
    r = runner.invoke(cli, ["predict", str(rio_data / "RGB.byte.tif"), "-m", str(ckpt), "-o",
                            str(tmp_path / "o.tif")])
    assert r.exit_code == 0, r.stderr
    from fastunet_core.runtime.device import resolve_device

    chosen = resolve_device("auto")
    assert chosen.reason and f"device: {chosen.name} ({chosen.reason})" in r.output + r.stderr  # the device and why
    assert "wrote" in r.stderr


def test_precision_and_engine_help_say_what_auto_does() -> None:
    """--help agrees with precision.choose_precision and make_engine (and the README), not an older rule."""
    from fastunet_core.inference.precision import MIN_AGREEMENT

    text = " ".join(CliRunner().invoke(cli, ["predict", "--help"]).output.split())
    assert "auto: fp32 on CPUs" not in text
    assert "auto: on CPUs bf16 where the CPU has native bf16 (AVX512-BF16 or AMX)" in text, text
    assert f"class agreement is at least {MIN_AGREEMENT:.1%}".replace("%", " %") in text, text
    assert "auto: ONNX Runtime for fp32 on CPUs" in text and "(also for bf16, which --precision auto may choose" in text


def test_info_writes_strict_json_with_null_for_a_class_absent_from_validation(
        tmp_path: Path, make_checkpoint: object) -> None:
    import dataclasses
    import math

    from fastunet_core.models.checkpoint import load_checkpoint, save_checkpoint

    loaded = load_checkpoint(make_checkpoint())  # type: ignore[operator]
    metrics = {"val_miou": 0.5, "val_iou_per_class": {"background": 0.7, "building": math.nan, "water": 0.3}}
    ckpt = save_checkpoint(tmp_path / "nan.safetensors", loaded.torch_model(),
                           dataclasses.replace(loaded.meta, metrics=metrics))
    r = CliRunner().invoke(cli, ["info", str(ckpt), "--json"])
    assert r.exit_code == 0, r.output
    assert "NaN" not in r.stdout
    meta = json.loads(r.stdout, parse_constant=lambda name: pytest.fail(f"{name} is not JSON"))
    assert meta["metrics"]["val_iou_per_class"] == {"background": 0.7, "building": None, "water": 0.3}
    r = CliRunner().invoke(cli, ["info", str(ckpt)])
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("metrics"))
    assert json.loads(line.split(":", 1)[1], parse_constant=lambda name: pytest.fail(name))["val_miou"] == 0.5


def test_a_sigterm_of_an_earlier_command_does_not_stop_the_next_one(tmp_path: Path, rio_data: Path,
                                                                     make_checkpoint: object) -> None:
    """Commands run in one process (tests, a library caller): one stopped by SIGTERM leaves the next unstopped.

    (The flag stayed set: a training run after an in-process predict stopped by SIGTERM said 'interrupted
    before the first epoch finished' at its first cancel check.)
    """
    import signal

    from fastunet_core.cli import _common

    previous = signal.getsignal(signal.SIGTERM)
    try:
        _common.stop_on_sigterm()
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGTERM)
        assert _common.sigterm_received()
        r = CliRunner().invoke(cli, ["-q", "predict", str(rio_data / "RGB.byte.tif"), "-m",
                                     str(make_checkpoint()), "-o", str(tmp_path / "c.tif")])  # type: ignore[operator]
        assert r.exit_code == 0, r.output
        assert not _common.sigterm_received()
    finally:
        signal.signal(signal.SIGTERM, previous)
