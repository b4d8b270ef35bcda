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


def test_cached_training_with_workers_equals_reading_the_sources_in_process(tmp_path: Path,
                                                                              shared_data: Path) -> None:
    from safetensors.torch import load_file

    from fastunet_core.runtime import distributed
    from fastunet_core.runtime.device import resolve_device
    from fastunet_core.runtime.progress import NullProgress
    from fastunet_core.train.config import config_from_dict
    from fastunet_core.train.datasets.cache import CachedTiles
    from fastunet_core.train.loop import _Trainer, train

    def config(name: str, cache: str, workers: int) -> dict[str, object]:
        data = {"kind": "landcoverai", "root": str(shared_data / "torchgeo-fixtures" / "landcoverai"),
                "tile_size": 32, "cache": cache}
        return {"data": data, "model": {"architecture": "unet", "args": {"widths": [8, 16], "convs": 1}},
                "optim": {"epochs": 2, "batch_size": 2, "micro_batch": 1, "lr": 0.01, "num_workers": workers},
                "device": "cpu", "output": str(tmp_path / name)}

    cached = config_from_dict(config("cached", str(tmp_path / "cache"), 2))
    trainer = _Trainer(cached, distributed.DistContext(), resolve_device("cpu"), NullProgress(), fresh=True)
    assert isinstance(trainer.train_base, CachedTiles) and trainer.workers == 2
    train(cached)
    train(config_from_dict(config("sources", "off", 0)))
    a = load_file(str(tmp_path / "cached" / "last.safetensors"))
    b = load_file(str(tmp_path / "sources" / "last.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
