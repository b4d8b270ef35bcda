"""BatchNorm and micro-batches of one tile at a 1 x 1 px bottleneck (FINDINGS4 M2).

PyTorch cannot compute batch statistics from one value per channel ("Expected more than 1 value per channel
when training"): a run that would always be in that case is refused with one line; a stray pass in that case
(the last micro-batch of an epoch holding one tile) normalises with the running statistics instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from fastunet_core.cli import cli
from fastunet_core.train.batch_norm import running_stats_for_single_values
from fastunet_core.train.config import config_from_dict
from fastunet_core.train.loop import train

REPO = Path(__file__).resolve().parent.parent


def test_a_single_value_pass_uses_the_running_statistics() -> None:
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(4)
    running_stats_for_single_values(bn)
    bn.train()
    one = torch.randn(1, 4, 1, 1) * 3 + 1
    out = bn(one)  # without the hooks: ValueError
    assert bn.training and torch.equal(bn.running_mean, torch.zeros(4)) and int(bn.num_batches_tracked) == 0
    assert torch.allclose(out, one / (1 + bn.eps) ** 0.5)  # normalised with mean 0, variance 1 (the running ones)
    bn(torch.randn(2, 4, 1, 1) + 5)  # two values per channel: trains as usual
    assert bn.training and (bn.running_mean > 0.1).all() and int(bn.num_batches_tracked) == 1


def test_a_last_micro_batch_of_one_tile_trains(tmp_path: Path, shared_data: Path) -> None:
    """40 training tiles in micro-batches of 3: the epoch's last holds one tile, at a 1 x 1 px bottleneck."""
    cfg = config_from_dict({
        "data": {"kind": "raster_vector", "root": str(shared_data / "solaris-spacenet"),
                 "raster": "sample_geotiff.tif", "vector": "geotiff_labels.geojson",
                 "class_names": ["background", "building"], "tile_size": 128, "val_fraction": 0.4},
        "input": {"value_range": [0, 2047]},
        "model": {"architecture": "unet", "args": {"widths": [4, 4, 4, 4, 4, 4, 4, 8], "convs": 1}},  # divisor 128
        "optim": {"epochs": 1, "batch_size": 3, "micro_batch": 3, "num_workers": 0},
        "device": "cpu", "output": str(tmp_path / "run")})
    result = train(cfg)
    [epoch] = result.history
    assert round(epoch.images_per_s * epoch.seconds) == 40 and 40 % 3 == 1  # the last micro-batch: one tile
    assert torch.isfinite(torch.tensor(epoch.train_loss)) and result.best_checkpoint.exists()


def test_a_run_of_one_tile_batches_at_a_1px_bottleneck_is_refused(tmp_path: Path) -> None:
    """The tester's command: unet_skinny at 64 px tiles, one tile at a time ended in an internal error (exit 3)."""
    result = CliRunner().invoke(cli, [
        "-q", "train", "-c", str(REPO / "training" / "demo_spacenet.yaml"), f"data.root={REPO / 'data' / 'samples'}",
        "--output", str(tmp_path / "run"), "model.architecture=unet_skinny", "model.args={}", "data.tile_size=64",
        "optim.micro_batch=1", "optim.batch_size=2", "optim.epochs=1"])
    assert result.exit_code == 1, result.output
    [line] = result.stderr.strip().splitlines()
    assert line == ("error: unet_skinny has a 1 x 1 px bottleneck at 64 px tiles, and its BatchNorm layers cannot "
                    "learn from one tile at a time (micro-batches of 1); use data.tile_size=128 (or more), or "
                    "optim.micro_batch=2 (or more, with optim.batch_size a multiple of it)")
    assert not (tmp_path / "run" / "best.safetensors").exists()


def test_only_runs_that_cannot_train_batch_norm_are_refused() -> None:
    from fastunet_core.errors import ConfigError
    from fastunet_core.train.batch_norm import check_single_value_batches

    with_bn, without = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)), nn.Conv2d(3, 4, 1)
    with pytest.raises(ConfigError, match="1 x 1 px bottleneck at 64 px"):
        check_single_value_batches(with_bn, "unet_skinny", 64, 64, 1)
    check_single_value_batches(with_bn, "unet_skinny", 128, 64, 1)  # a 2 x 2 bottleneck: 4 values per channel
    check_single_value_batches(with_bn, "unet_skinny", 64, 64, 2)  # two tiles: 2 values per channel
    check_single_value_batches(without, "test_pixel_colour", 64, 64, 1)  # nothing to normalise
