"""``evaluate_checkpoint``: metrics of a trained model on a dataset split."""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fastunet_core.errors import ConfigError, DatasetLayoutError, NonFiniteError
from fastunet_core.hints import setting
from fastunet_core.models.checkpoint import load_checkpoint
from fastunet_core.models.metadata import ModelMeta
from fastunet_core.models.registry import size_divisor
from fastunet_core.runtime.device import resolve_device
from fastunet_core.train.augment import SampleTransform
from fastunet_core.train.config import LossConfig, OptimConfig, load_config
from fastunet_core.train.datasets import IGNORE_INDEX, open_dataset
from fastunet_core.train.datasets.layouts import data_section_for
from fastunet_core.train.loop import dataset_spec, split_batch
from fastunet_core.train.loss import JDTLoss
from fastunet_core.train.metrics import MetricsReport, SegmentationMetrics
from fastunet_core.train.workers import end_quietly_on_sigterm, resolve_workers, unwrap_worker_errors

DEFAULT_BATCH = 4
"""Images per batch for a model without a run of its own (see :func:`run_batch_size`)."""


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
    loss_settings: str = "defaults"  # where the JDT loss settings came from: "the run's", "the config's", "defaults"
    batch_size: int = 4  # images per batch: the batch-reduced JDT loss depends on it (the IoUs do not)
    batch_source: str = "default"  # "the run's" (its validation batch), "given", "default"


class _Transformed(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """A split's samples through the model's input transform (a class, so DataLoader workers can receive it)."""

    def __init__(self, base: Dataset[tuple[np.ndarray, np.ndarray]], transform: SampleTransform) -> None:
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.base[index]
        x, y = self.transform(image, mask)  # the CPU path: (input, mask)
        return x, y


def loss_settings(meta: ModelMeta, configured: LossConfig) -> tuple[LossConfig, str]:
    """Return the JDT loss settings to report: the config's when it sets any, else the run's own, else defaults.

    A checkpoint written by ``train`` stores its run's configuration, so ``evaluate`` reports the loss the run
    optimised and validated (e.g. with gamma 2 or log_loss), not the default one.
    """
    if configured != LossConfig():
        return configured, "the config's"
    stored = (meta.training or {}).get("config", {})
    run = stored.get("loss") if isinstance(stored, dict) else None
    if isinstance(run, dict):
        known = {f.name for f in dataclasses.fields(LossConfig)}
        return LossConfig(**{k: v for k, v in run.items() if k in known}), "the run's"
    return configured, "defaults"


def run_batch_size(meta: ModelMeta) -> int | None:
    """Return the batch the run validated with (its micro-batch, one process), or None for a model without a run.

    The JDT loss sums its counts over a batch (``loss.reduction: batch``, the default), so a loss is the run's
    validation loss only with the run's batches: ``evaluate`` uses this one unless told otherwise.
    """
    stored = (meta.training or {}).get("config", {})
    optim = stored.get("optim") if isinstance(stored, dict) else None
    if not isinstance(optim, dict):
        return None
    default = OptimConfig()
    try:
        return split_batch(int(optim.get("batch_size", default.batch_size)),
                           int(optim.get("micro_batch", default.micro_batch)), 1)[0]
    except (TypeError, ValueError):  # written by something else: no run batch to follow
        return None


def evaluate_checkpoint(checkpoint: str | Path, config: str | Path | None, overrides: list[str], split: str = "val",
                        batch_size: int | None = None, device: str = "auto", data_root: Path | None = None,
                        num_workers: int | str = "auto") -> EvaluationResult:
    """Run the model over a split and compute the dataset-level and the paper's per-class IoU.

    ``batch_size`` None: the run's own validation batch (:func:`run_batch_size`), so the loss equals the run's
    validation loss on the same split; DEFAULT_BATCH for a model that was not trained here.

    The dataset comes from ``config``'s data section, from ``data.*`` overrides, or from ``data_root``,
    a dataset folder whose layout is recognised (see :func:`data_section_for`). Samples are read by
    ``num_workers`` loader processes (``auto``: usable cores minus one); on a GPU the model runs under the
    device's autocast (bf16 where native, else fp16) in channels_last, as in training and prediction.
    """
    loaded = load_checkpoint(checkpoint)
    if data_root is not None and config is not None:
        raise ConfigError(f"give the dataset either with {setting('eval_config')} or with {setting('eval_data')}, "
                          "not both")
    base = {"data": data_section_for(data_root, loaded.meta) if data_root is not None else {}}
    cfg = load_config(config, overrides, base=base)
    if not cfg.data:
        raise ConfigError(f"say which dataset to evaluate on: {setting('eval_data', 'DATASET_FOLDER')}, "
                          f"{setting('eval_config', 'run.yaml')}, or data.kind=... data.root=...")
    ds = open_dataset(dataset_spec(cfg.data), split)
    meta = loaded.meta
    if [c.id for c in ds.classes] != [c.id for c in meta.classes]:
        raise ConfigError(f"the dataset's classes {[c.name for c in ds.classes]} differ from the model's "
                          f"{[c.name for c in meta.classes]}; evaluate the model on data labelled with its classes "
                          "(the dataset it was trained on), or give the configuration of the run that made it")
    dev = resolve_device(device)
    model = loaded.torch_model().to(dev.device).eval()
    if dev.is_cuda:
        model = model.to(memory_format=torch.channels_last)
    transform = SampleTransform(meta.input, train=False, divisor=size_divisor(meta.architecture, meta.arch_args))
    run_batch = run_batch_size(meta)
    if batch_size is not None:
        if batch_size < 1:
            raise ConfigError(f"the batch size must be at least 1, got {batch_size}")
        batch_source = "given"
    else:
        batch_size, batch_source = (run_batch, "the run's") if run_batch else (DEFAULT_BATCH, "default")
    samples = cast("Dataset[tuple[np.ndarray, np.ndarray]]", ds)  # every layout's dataset is a torch Dataset
    loader = DataLoader(_Transformed(samples, transform), batch_size=batch_size, shuffle=False,
                        num_workers=resolve_workers(num_workers), pin_memory=dev.is_cuda,
                        worker_init_fn=end_quietly_on_sigterm)
    metrics = SegmentationMetrics(meta.n_classes, ignore_index=IGNORE_INDEX, device=dev.device)
    lc, source = loss_settings(meta, cfg.loss)
    loss_fn = JDTLoss(alpha=lc.alpha, beta=lc.beta, gamma=lc.gamma, smooth=lc.smooth, log_loss=lc.log_loss,
                      reduction=lc.reduction, class_weights=lc.class_weights, ignore_index=IGNORE_INDEX)
    amp: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if dev.is_cuda and dev.autocast_dtype is not None:
        amp = torch.autocast("cuda", dtype=dev.autocast_dtype)
    loss_sum, n, n_labelled = torch.zeros((), dtype=torch.float64, device=dev.device), 0, 0
    finite = torch.ones((), dtype=torch.bool, device=dev.device)  # on the device: no sync per batch
    with torch.inference_mode():
        for x, y in unwrap_worker_errors(iter(loader)):
            n_labelled += int((y != IGNORE_INDEX).sum())
            x, y = x.to(dev.device, non_blocking=True), y.to(dev.device, non_blocking=True)
            if dev.is_cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            with amp:
                logits = model(x)
            finite &= torch.isfinite(logits).all()
            loss_sum += loss_fn(logits.float(), y).double() * x.shape[0]
            n += x.shape[0]
            metrics.update(logits.argmax(dim=1), y)
    if not bool(finite):
        raise NonFiniteError(f"the model {loaded.path} gives NaN or infinite outputs on the {split} images; its "
                             "weights overflow or are damaged, so there is nothing to measure")
    if n_labelled == 0:
        raise DatasetLayoutError(f"every pixel of the {split} split is ignored (unlabelled, nodata or NaN), so there "
                                 "is nothing to measure; check that the masks hold the model's class ids")
    return EvaluationResult(metrics.compute(), [c.name for c in meta.classes], n, float(loss_sum) / max(n, 1),
                            str(dev.device), source, batch_size, batch_source)
