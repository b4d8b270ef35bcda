"""The training data loader: worker count, persistent workers that follow the epoch, and the tile cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fastunet_core.errors import ConfigError
from fastunet_core.models.metadata import InputSpec
from fastunet_core.train import workers
from fastunet_core.train.augment import SampleTransform
from fastunet_core.train.config import load_config
from fastunet_core.train.loop import SeededSamples
from fastunet_core.train.workers import EpochSampler, make_loader, resolve_workers


class _Varied(torch.utils.data.Dataset):
    """Eight 16 x 16 RGB samples, every pixel different (so a flip or rotation always shows)."""

    def __init__(self) -> None:
        rng = np.random.default_rng(3)
        self.images = rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
        self.masks = rng.integers(0, 4, (8, 16, 16)).astype(np.int64)

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.images[i], self.masks[i]


def _epochs(n_workers: int, epochs: int = 3) -> list[torch.Tensor]:
    spec = InputSpec(bands=(1, 2, 3), dtype="uint8", value_range=(0.0, 255.0))
    ds = SeededSamples(_Varied(), SampleTransform(spec, train=True), seed=5)
    sampler = EpochSampler(range(8))
    loader = make_loader(ds, sampler, batch_size=8, workers=n_workers, pin_memory=False)
    out = []
    for epoch in range(1, epochs + 1):
        sampler.set_epoch(epoch)
        out.append(torch.cat([x for x, _ in loader]))
    return out


def test_persistent_workers_follow_the_epoch() -> None:
    in_process, in_workers = _epochs(0), _epochs(2)
    assert not torch.equal(in_process[0], in_process[1])  # each epoch augments differently
    for a, b in zip(in_process, in_workers, strict=True):
        assert torch.equal(a, b)  # and the long-lived workers see the same epoch as the main process


def test_num_workers_auto_is_usable_cores_minus_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers, "usable_cores", lambda: 16)
    assert resolve_workers("auto") == 15
    assert resolve_workers("auto", local_processes=4) == 3  # torchrun ranks on one node share the cores
    assert resolve_workers(3) == 3
    monkeypatch.setattr(workers, "usable_cores", lambda: 1)
    assert resolve_workers("auto") == 0


def test_num_workers_setting_is_checked(tmp_path: Path) -> None:
    base = {"data": {"kind": "folder", "root": str(tmp_path)}}
    assert load_config(None, base=base).optim.num_workers == "auto"
    with pytest.raises(ConfigError, match="num_workers"):
        load_config(None, ["optim.num_workers=many"], base=base)
    with pytest.raises(ConfigError, match="num_workers"):
        load_config(None, ["optim.num_workers=-1"], base=base)
