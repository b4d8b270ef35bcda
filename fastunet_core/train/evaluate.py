"""``evaluate_checkpoint``: metrics of a trained model on a dataset split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from fastunet_core.checkpoint import load_checkpoint
from fastunet_core.device import resolve_device
from fastunet_core.errors import ConfigError
from fastunet_core.models.registry import size_divisor
from fastunet_core.train.augment import SampleTransform
from fastunet_core.train.config import load_config
from fastunet_core.train.datasets import IGNORE_INDEX, open_dataset
from fastunet_core.train.loop import dataset_spec
from fastunet_core.train.loss import JDTLoss
from fastunet_core.train.metrics import SegmentationMetrics


@dataclass
class EvaluationResult:
    """Metrics of one checkpoint on one split."""

    report: Any
    class_names: list[str]
    images: int
    loss: float
    device: str


def evaluate_checkpoint(checkpoint: str | Path, config: str | Path | None, overrides: list[str], split: str = "val",
                        batch_size: int = 4, device: str = "auto") -> EvaluationResult:
    """Run the model over a split and compute the dataset-level and the paper's per-class IoU."""
    loaded = load_checkpoint(checkpoint)
    cfg = load_config(config, overrides, base={"data": {}})
    if not cfg.data:
        raise ConfigError("say which dataset to evaluate on: --config run.yaml, or data.kind=... data.root=...")
    ds = open_dataset(dataset_spec(cfg.data), split)
    meta = loaded.meta
    if [c.id for c in ds.classes] != [c.id for c in meta.classes]:
        raise ConfigError(f"the dataset's classes {[c.name for c in ds.classes]} differ from the model's "
                          f"{[c.name for c in meta.classes]}")
    dev = resolve_device(device)
    model = loaded.model.to(dev.device).eval()
    transform = SampleTransform(meta.input, train=False, divisor=size_divisor(meta.architecture, meta.arch_args))

    def collate(items: list[tuple[Any, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = zip(*(transform(img, mask) for img, mask in items), strict=True)
        return torch.stack(xs), torch.stack(ys)

    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=collate)
    metrics = SegmentationMetrics(meta.n_classes, ignore_index=IGNORE_INDEX, device=dev.device)
    loss_fn = JDTLoss(ignore_index=IGNORE_INDEX)
    loss_sum, n = 0.0, 0
    with torch.inference_mode():
        for x, y in loader:
            x, y = x.to(dev.device), y.to(dev.device)
            logits = model(x)
            loss_sum += float(loss_fn(logits, y)) * x.shape[0]
            n += x.shape[0]
            metrics.update(logits.argmax(dim=1), y)
    return EvaluationResult(metrics.compute(), [c.name for c in meta.classes], n, loss_sum / max(n, 1), str(dev.device))
