"""``evaluate_checkpoint``: metrics of a trained model on a dataset split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fastunet_core.errors import ConfigError, DatasetLayoutError
from fastunet_core.models.checkpoint import load_checkpoint
from fastunet_core.models.metadata import ModelMeta
from fastunet_core.models.registry import size_divisor
from fastunet_core.runtime.device import resolve_device
from fastunet_core.train.augment import SampleTransform
from fastunet_core.train.config import load_config
from fastunet_core.train.datasets import IGNORE_INDEX, open_dataset
from fastunet_core.train.datasets.layouts import recognise_layout
from fastunet_core.train.loop import dataset_spec
from fastunet_core.train.loss import JDTLoss
from fastunet_core.train.metrics import MetricsReport, SegmentationMetrics


@dataclass
class EvaluationResult:
    """Metrics of one checkpoint on one split.

    ``report``: IoU per class, mIoU and the paper's mIoU; ``class_names`` in channel order; ``images``: how many
    were evaluated; ``loss``: the mean JDT loss per image; ``device``: where it ran.
    """

    report: MetricsReport
    class_names: list[str]
    images: int
    loss: float
    device: str


def data_section_for(root: Path, meta: ModelMeta) -> dict[str, Any]:
    """Recognise a dataset folder's layout and describe it for ``meta``'s model (classes, tile size).

    Each registered layout is asked in turn (:func:`~fastunet_core.train.datasets.layouts.recognise_layout`):
    LoveDA's Train/, Val/ or Test/ folders; LandCover.ai's images/ and masks/ with train/val/test lists;
    anything else is read as a folder of image/mask pairs whose mask codes are the model's class ids.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetLayoutError(f"dataset folder not found: {root}")
    return {"root": str(root), "tile_size": meta.tile_size_px, **recognise_layout(root, meta)}


def evaluate_checkpoint(checkpoint: str | Path, config: str | Path | None, overrides: list[str], split: str = "val",
                        batch_size: int = 4, device: str = "auto", data_root: Path | None = None) -> EvaluationResult:
    """Run the model over a split and compute the dataset-level and the paper's per-class IoU.

    The dataset comes from ``config``'s data section, from ``data.*`` overrides, or from ``data_root``,
    a dataset folder whose layout is recognised (see :func:`data_section_for`).
    """
    loaded = load_checkpoint(checkpoint)
    if data_root is not None and config is not None:
        raise ConfigError("give the dataset either with --config or with --data, not both")
    base = {"data": data_section_for(data_root, loaded.meta) if data_root is not None else {}}
    cfg = load_config(config, overrides, base=base)
    if not cfg.data:
        raise ConfigError("say which dataset to evaluate on: --data DATASET_FOLDER, --config run.yaml, or "
                          "data.kind=... data.root=...")
    ds = open_dataset(dataset_spec(cfg.data), split)
    meta = loaded.meta
    if [c.id for c in ds.classes] != [c.id for c in meta.classes]:
        raise ConfigError(f"the dataset's classes {[c.name for c in ds.classes]} differ from the model's "
                          f"{[c.name for c in meta.classes]}")
    dev = resolve_device(device)
    model = loaded.torch_model().to(dev.device).eval()
    transform = SampleTransform(meta.input, train=False, divisor=size_divisor(meta.architecture, meta.arch_args))

    def collate(items: list[tuple[Any, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = zip(*(transform(img, mask) for img, mask in items), strict=True)
        return torch.stack(xs), torch.stack(ys)

    samples = cast("Dataset[tuple[np.ndarray, np.ndarray]]", ds)  # every layout's dataset is a torch Dataset
    loader = DataLoader(samples, batch_size=batch_size, shuffle=False, collate_fn=collate)
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
