"""``train``: the paper's training loop, headless, GPU-first, resumable, and DDP-ready under torchrun.

Per epoch: shuffled micro-batches with gradient accumulation up to the logical batch, JDT loss, AMP on
CUDA (bf16 where supported, else fp16 with a GradScaler), then validation (loss and metrics, reduced over
ranks), ReduceLROnPlateau on the validation loss, early stopping, and on rank 0 the best and last
checkpoints, the training state, the history and a plot of the curves.

Reproducibility: the data order comes from a DistributedSampler (also with one process), and every
sample's augmentation is seeded by (seed, epoch, index). So a run on one process with micro-batch 1 and
gradient accumulation over N steps matches N processes with micro-batch 1, and a resumed run matches an
uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, cast

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from fastunet_core.errors import CancelledError, ConfigError, DatasetLayoutError, GPUMemoryError, NonFiniteError
from fastunet_core.hints import hint, setting
from fastunet_core.io.targets import check_folder, make_folder
from fastunet_core.models.checkpoint import check_finite, load_checkpoint, save_checkpoint
from fastunet_core.models.metadata import DTYPE_RANGES, InputSpec, ModelMeta
from fastunet_core.models.registry import (
    TRAINING_ONLY_ARGS,
    build_model,
    check_arch_args,
    get_architecture,
    size_divisor,
)
from fastunet_core.runtime import distributed
from fastunet_core.runtime.device import DeviceChoice, native_cuda_autocast_dtype, resolve_device
from fastunet_core.runtime.progress import NullProgress, Progress
from fastunet_core.runtime.signals import signals_held
from fastunet_core.train.augment import SampleTransform
from fastunet_core.train.batch_norm import check_single_value_batches, running_stats_for_single_values
from fastunet_core.train.config import TrainConfig, check_training_tile, default_overlap
from fastunet_core.train.datasets import IGNORE_INDEX, DatasetSpec, SegmentationDataset, open_dataset
from fastunet_core.train.device_augment import DeviceBatchTransform
from fastunet_core.train.loss import JDTLoss
from fastunet_core.train.metrics import MetricsReport, SegmentationMetrics, format_table
from fastunet_core.train.plots import plot_history
from fastunet_core.train.state import STATE_FILE, EpochRecord, LoopState, load_state, save_state, write_history
from fastunet_core.train.workers import EpochSampler, make_loader, resolve_workers, unwrap_worker_errors

STATUS_INTERVAL_S = 1.0  # the status line (loss, images/s) at most this often: reading the loss synchronises
BEST_CHECKPOINT = "best.safetensors"
LAST_CHECKPOINT = "last.safetensors"


@dataclass
class TrainResult:
    """What a training run produced (see :func:`train`)."""

    output_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    history: list[EpochRecord]
    best_epoch: int
    stopped_early: bool
    device: DeviceChoice


class SeededSamples(Dataset):
    """Apply a transform with a seed fixed by (seed, epoch, index), so augmentation is reproducible.

    Keys are plain indices (using ``epoch``) or ``(epoch, index)`` pairs from an :class:`EpochSampler`.
    """

    def __init__(self, base: SegmentationDataset, transform: SampleTransform, seed: int) -> None:
        self.base, self.transform, self.seed, self.epoch = base, transform, seed, 0

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, ...]:
        # (epoch, index) from an EpochSampler: persistent workers keep their own copy of this object
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        image, mask = self.base[index]
        self.transform.set_random_seed((self.seed * 1_000_003 + epoch * 10_007 + index) % (2**31))
        if self.transform.device_side:  # raw pixels, mask and parameters: augmented on the device
            return self.transform.raw(image, mask)
        return self.transform(image, mask)


def dataset_spec(data: dict[str, Any]) -> DatasetSpec:
    """Build the dataset spec from the config's data section, naming unknown keys."""
    valid = {f.name for f in dataclasses.fields(DatasetSpec)}
    bad = sorted(set(data) - valid)
    if bad:
        raise ConfigError(f"unknown key(s) {bad} in section 'data'; valid: {sorted(valid)}")
    values = dict(data)
    if "root" in values and values["root"] is not None:
        values["root"] = Path(values["root"])
    return DatasetSpec(**values)


def input_spec(cfg: TrainConfig, n_bands: int, dtype: str) -> InputSpec:
    """Describe the model input from the config and the dataset."""
    i = cfg.input
    bands = tuple(i.bands) if i.bands else tuple(range(1, n_bands + 1))
    vr = tuple(i.value_range) if i.value_range else DTYPE_RANGES.get(dtype, (0.0, 1.0))
    return InputSpec(bands=bands, dtype=dtype, value_range=(float(vr[0]), float(vr[1])),
                     mean=tuple(i.mean or ()), std=tuple(i.std or ()))


def train(cfg: TrainConfig, progress: Progress | None = None, fresh: bool = False) -> TrainResult:
    """Train (or resume training) as configured; return where the checkpoints are.

    The paper's set-up by default (Cai & Zhang, "Finding a Faster UNet for Satellite Image Segmentation"):
    Adam, the JDT loss (Wang, Ning & Blaschko, "Jaccard Metric Losses", :mod:`fastunet_core.train.loss`),
    ReduceLROnPlateau on the validation loss, early stopping. Under torchrun every process trains on its share
    (DDP); rank 0 writes the run folder.

    Args:
        cfg: the run (:class:`~fastunet_core.train.config.TrainConfig`: data, model, input scaling, optimiser,
            loss, augmentation, output folder, device).
        progress: receives optimiser steps per epoch, the device line, the epoch's loss as a status, and the
            cancel question.
        fresh: start over even if ``cfg.output`` holds a run of the same configuration to resume.

    Returns:
        :class:`TrainResult`: the run folder, the best and last checkpoints (.safetensors with metadata), the
        per-epoch history (losses, mIoU), the best epoch, whether it stopped early, the device.

    Raises:
        FastUNetError: ConfigError, DatasetLayoutError, DeviceError, GPUMemoryError (naming what to lower) ...;
            CancelledError on Ctrl-C or cancel, saying which epoch a rerun resumes from.

    """
    prog = progress or NullProgress()
    check_training_tile(cfg)  # before the data and the model are loaded
    check_folder(cfg.output, "run folder")
    ctx = distributed.context_from_env()
    device = resolve_device(distributed.rank_device(cfg.device, ctx))
    distributed.init(ctx, device.is_cuda)
    trainer: _Trainer | None = None
    try:
        trainer = _Trainer(cfg, ctx, device, prog, fresh)
        return trainer.run()
    except (KeyboardInterrupt, CancelledError) as exc:
        raise CancelledError(_interrupted(Path(cfg.output), trainer)) from exc
    except torch.OutOfMemoryError as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise GPUMemoryError(
            f"the GPU ran out of memory training {cfg.model.architecture} on {cfg.data.get('tile_size', 512)} px "
            f"tiles, {cfg.optim.micro_batch} at a time ({first}); {_less_memory(cfg)}") from None
    finally:
        distributed.shutdown()


def _less_memory(cfg: TrainConfig) -> str:
    """Say which settings to lower after running out of GPU memory, each with a value the run can take."""
    o, tile = cfg.optim, int(cfg.data.get("tile_size", 512))
    ways = []
    if o.micro_batch > 1:  # a micro-batch must divide the batch: the largest one below the current
        micro = max(d for d in range(1, o.micro_batch) if o.batch_size % d == 0)
        ways.append(f"{setting('optim.micro_batch', micro)}"
                    f"{hint(' ({} stays the same through gradient accumulation)', 'optim.batch_size')}")
    divisor = size_divisor(cfg.model.architecture, cfg.model.args)
    half = tile // 2 // divisor * divisor
    if half >= divisor:
        ways.append(setting("data.tile_size", half))
    return "try " + ", or ".join(ways) if ways else f"train a smaller model ({setting('model.architecture')})"


class _Trainer:
    def __init__(self, cfg: TrainConfig, ctx: distributed.DistContext, device: DeviceChoice, prog: Progress,
                 fresh: bool) -> None:
        self.cfg, self.ctx, self.device, self.prog = cfg, ctx, device, prog
        self.out = Path(cfg.output)
        spec = dataset_spec(cfg.data)
        cache_progress = prog if ctx.is_main else None  # other ranks wait for rank 0's build (a file lock)
        self.train_base = open_dataset(spec, "train", cache_progress)
        self.val_base = open_dataset(spec, "val", cache_progress)
        self.classes = tuple(self.train_base.classes)
        self.input = input_spec(cfg, self.train_base.n_bands, self.train_base.input_dtype)
        if self.input.n_bands != self.train_base.n_bands:
            raise ConfigError(f"input.bands lists {self.input.n_bands} bands but the dataset has "
                              f"{self.train_base.n_bands}; band selection while training is not supported yet")
        self.tile = int(cfg.data.get("tile_size", 512))
        self.overlap = default_overlap(self.tile) if cfg.tile_overlap_px is None else cfg.tile_overlap_px
        measured = spec.resolution_m or getattr(self.train_base, "resolution_m", None)
        self.resolution_m = float(f"{measured:.4g}") if measured else None
        arch = get_architecture(cfg.model.architecture)
        self.arch_args = check_arch_args({**arch.defaults, **cfg.model.args})
        torch.manual_seed(cfg.optim.seed)
        pretrained = {k: v for k, v in cfg.model.args.items() if k in TRAINING_ONLY_ARGS}  # e.g. imagenet encoders
        self.model = build_model(cfg.model.architecture, self.input.n_bands, len(self.classes),
                                 {**self.arch_args, **pretrained})
        if cfg.model.init_from:
            self.model.load_state_dict(load_checkpoint(cfg.model.init_from).torch_model().state_dict())
        self.model.to(device.device)
        self.channels_last = device.is_cuda  # NHWC convolutions on tensor cores; on CPUs the gain is not worth it
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True  # fixed tile sizes: pick the fastest convolution once
        self.net: nn.Module = self.model
        if ctx.enabled:
            if device.is_cuda:  # SyncBatchNorm needs GPUs; on CPU (gloo) each rank keeps its own BN statistics
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            self.net = DistributedDataParallel(self.model, device_ids=[device.device.index] if device.is_cuda else None)
        o = cfg.optim
        self.micro, self.accum = split_batch(o.batch_size, o.micro_batch, ctx.world_size)
        divisor = size_divisor(cfg.model.architecture, self.arch_args)
        check_single_value_batches(self.model, cfg.model.architecture, self.tile, divisor, self.micro)
        running_stats_for_single_values(self.model)  # a last batch of one tile at a 1 x 1 px bottleneck
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, mode="min",
                                                                    patience=o.plateau_patience,
                                                                    factor=o.plateau_factor)
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype is torch.float16)
        lc = cfg.loss
        self.loss_fn = JDTLoss(alpha=lc.alpha, beta=lc.beta, gamma=lc.gamma, smooth=lc.smooth, log_loss=lc.log_loss,
                               reduction=lc.reduction, class_weights=lc.class_weights, ignore_index=IGNORE_INDEX)
        on_device = cfg.augment.on_device
        self.device_aug = DeviceBatchTransform(self.input) if (device.is_cuda if on_device is None else on_device) \
            else None
        side = self.device_aug is not None
        self.train_ds = SeededSamples(self.train_base, SampleTransform(self.input, train=cfg.augment.enabled,
                                                                       divisor=divisor, device_side=side), o.seed)
        self.val_ds = SeededSamples(self.val_base, SampleTransform(self.input, train=False, divisor=divisor,
                                                                   device_side=side), o.seed)
        self.sampler = EpochSampler(DistributedSampler(self.train_ds, num_replicas=ctx.world_size, rank=ctx.rank,
                                                       shuffle=True, seed=o.seed, drop_last=False))
        self.val_sampler = EpochSampler(range(ctx.rank, len(self.val_ds), ctx.world_size))  # no padding, no duplicates
        local = int(os.environ.get("LOCAL_WORLD_SIZE", 1)) if ctx.enabled else 1
        self.workers = resolve_workers(o.num_workers, local)
        self._loaders: dict[str, DataLoader] = {}
        self.loop = LoopState()
        self._resume(fresh)

    def _amp_dtype(self) -> torch.dtype | None:
        amp = self.cfg.optim.amp
        if not self.device.is_cuda or amp == "none":
            return None
        if amp == "auto":
            return self.device.autocast_dtype or native_cuda_autocast_dtype()
        return torch.bfloat16 if amp == "bf16" else torch.float16

    def _resume(self, fresh: bool) -> None:
        path = self.out / STATE_FILE
        if fresh or not path.exists():
            return
        state = load_state(path)
        mine, theirs = self._comparable(self.cfg.to_dict()), self._comparable(state["config"])
        if mine != theirs:
            diff = config_differences(theirs, mine)
            shown = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, a, b in diff[:3])
            more = f" and {len(diff) - 3} more" if len(diff) > 3 else ""
            raise ConfigError(f"{self.out} holds a run with another configuration ({shown}{more}); use another "
                              f"{setting('train_output')}, or start over there with {setting('fresh')}")
        check_finite(state["model"], f"the training state {path} (start over with {setting('fresh')})")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:  # a disabled scaler (CPU, bf16) saves {}: an fp16 run resumed from it starts afresh
            self.scaler.load_state_dict(state["scaler"])
        self.loop = state["loop"]
        torch.set_rng_state(state["torch_rng"])
        self.prog.message(f"resuming {self.out} after epoch {self.loop.epoch}")

    @staticmethod
    def _comparable(d: dict[str, Any]) -> dict[str, Any]:
        d = {k: v for k, v in d.items() if k not in ("device", "output", "tile_overlap_px")}  # no effect on training
        d["augment"] = {k: v for k, v in d.get("augment", {}).items() if k != "on_device"}  # auto follows the device
        d["data"] = {k: v for k, v in d["data"].items() if k != "cache"}  # the cache returns the same samples
        d["optim"] = {k: v for k, v in d["optim"].items() if k not in ("epochs", "num_workers")}
        return d

    def run(self) -> TrainResult:
        o = self.cfg.optim
        if self.ctx.is_main:
            make_folder(self.out, "run folder")
            self.prog.device(f"{describe_training(self.device, self.amp_dtype, self.channels_last)}; "
                             f"{len(self.train_ds)} training and "
                             f"{len(self.val_ds)} validation tiles, {self.workers} loader worker(s); logical batch "
                             f"{o.batch_size} = {self.micro} x {self.accum} step(s) x {self.ctx.world_size} "
                             "process(es)")
        stopped_early = self.loop.finished and self.loop.bad_epochs >= o.early_stop_patience
        while not self.loop.finished and self.loop.epoch < o.epochs:
            epoch = self.loop.epoch + 1
            t0 = time.perf_counter()
            train_loss, images = self._train_epoch(epoch)
            val_loss, report = self._validate(epoch)
            seconds = time.perf_counter() - t0
            self.scheduler.step(val_loss)
            improved = val_loss < self.loop.best_val_loss
            if improved:
                self.loop.best_val_loss, self.loop.best_epoch, self.loop.bad_epochs = val_loss, epoch, 0
            else:
                self.loop.bad_epochs += 1
            stopped_early = self.loop.bad_epochs >= o.early_stop_patience
            self.loop.epoch = epoch
            self.loop.finished = stopped_early  # reaching optim.epochs is not final: a larger value continues
            self.loop.history.append(EpochRecord(
                epoch, train_loss, val_loss, float(report.miou), float(report.paper_miou),
                self.optimizer.param_groups[0]["lr"], round(seconds, 3), images * self.ctx.world_size / seconds))
            if self.ctx.is_main:
                with signals_held():  # the epoch's files all saved, or (interrupted before) none of them
                    self._save(report, improved)
                    self.prog.message(f"epoch {epoch}: train loss {train_loss:.4f}, val loss {val_loss:.4f}, "
                                      f"val mIoU {report.miou:.4f} (paper metric {report.paper_miou:.4f})"
                                      + (" *" if improved else ""))
                    self.prog.message(format_table(report, [c.name for c in self.classes]))
        if self.ctx.is_main and stopped_early:
            self.prog.message(f"stopped early: no improvement for {o.early_stop_patience} epochs")
        if self.ctx.is_main and (self.out / BEST_CHECKPOINT).exists():
            self._record_bf16_agreement(self.out / BEST_CHECKPOINT)
        return TrainResult(self.out, self.out / BEST_CHECKPOINT, self.out / LAST_CHECKPOINT, self.loop.history,
                           self.loop.best_epoch, stopped_early, self.device)

    def _record_bf16_agreement(self, path: Path) -> None:
        """Measure the best model's bf16 plan and class agreement on validation tiles; record them in its metadata."""
        from fastunet_core.inference.precision import plan_bf16, with_plan

        loaded = load_checkpoint(path)
        loader = self._loader("val", self.loop.epoch)
        inputs = (self._to_device(batch)[0].float().cpu()  # the model's input, as validation feeds it
                  for batch in unwrap_worker_errors(iter(loader)))
        plan = plan_bf16(loaded.torch_model(), list(agreement_batches(inputs)))
        save_checkpoint(path, loaded.torch_model(), with_plan(loaded.meta, plan, "validation tiles"), overwrite=True)
        self.prog.message(f"bf16 class agreement with fp32 on {plan.tiles} validation tiles: {plan.describe()}")

    def _loader(self, which: str, epoch: int) -> DataLoader:
        """Return the train or val loader for ``epoch``; built once, its workers live for the whole run."""
        ds, sampler = (self.train_ds, self.sampler) if which == "train" else (self.val_ds, self.val_sampler)
        sampler.set_epoch(epoch)
        if which not in self._loaders:
            self._loaders[which] = make_loader(ds, sampler, self.micro, self.workers,
                                               pin_memory=self.device.is_cuda)
        return self._loaders[which]

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.amp_dtype)

    def _to_device(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """Copy a batch to the device (pinned memory, asynchronous); augment, normalise, channels_last there."""
        dev = self.device.device
        x, y = batch[0].to(dev, non_blocking=True), batch[1].to(dev, non_blocking=True)
        if self.device_aug is not None:
            x, y = self.device_aug(x, y, batch[2].to(dev, non_blocking=True))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def _train_epoch(self, epoch: int) -> tuple[float, int]:
        self.net.train()
        loader = self._loader("train", epoch)
        n_batches = len(loader)
        cap = self.cfg.optim.max_batches_per_epoch
        if cap:
            n_batches = min(n_batches, cap * self.accum)
        n_steps = math.ceil(n_batches / self.accum)
        self.prog.start(n_steps, "steps")
        # the loss is summed on the device: reading it (a host-device synchronisation) happens only for the
        # status line, at most once a second, and once at the end of the epoch
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device.device)
        n_images, n_labelled, t0, shown = 0, 0, time.perf_counter(), 0.0
        # the first step whose loss (code step) or updated weights (code -step) are not finite, on the device too
        first_bad = torch.zeros((), dtype=torch.int64, device=self.device.device)
        batches = itertools.islice(unwrap_worker_errors(iter(loader)), n_batches)
        for step in range(n_steps):
            if self.prog.is_cancelled():
                raise CancelledError(f"cancelled during epoch {epoch}")
            group = [next(batches) for _ in range(min(self.accum, n_batches - step * self.accum))]
            self.optimizer.zero_grad(set_to_none=True)
            for i, batch in enumerate(group):
                n_labelled += int((batch[1] != IGNORE_INDEX).sum())  # on the host: no device sync
                x, y = self._to_device(batch)
                last = i == len(group) - 1 or not self.ctx.enabled
                sync = contextlib.nullcontext() if last else cast(DistributedDataParallel, self.net).no_sync()
                with sync:
                    with self._autocast():
                        logits = self.net(x)
                    loss = self.loss_fn(logits, y)
                    self.scaler.scale(loss / len(group)).backward()
                loss_sum += loss.detach().double() * x.shape[0]
                n_images += x.shape[0]
            self.scaler.step(self.optimizer)
            self.scaler.update()
            first_bad = _mark_first(first_bad, step + 1, loss_sum, self.model)
            self.prog.advance(1)
            now = time.perf_counter()
            if now - shown >= STATUS_INTERVAL_S or step == n_steps - 1:
                if not self.ctx.enabled:  # one process: stop at once (ranks stop together at the epoch's end)
                    self._stop_if_nonfinite(int(first_bad), epoch, n_steps)
                shown, rate = now, n_images * self.ctx.world_size / max(now - t0, 1e-9)
                self.prog.status(f"epoch {epoch} loss {float(loss_sum) / n_images:.4f}, {rate:.1f} img/s")
        counts = torch.tensor([float(n_images), float(n_labelled), float(int(first_bad) != 0)], dtype=torch.float64)
        totals = self._all_reduce(torch.cat([loss_sum.cpu().reshape(1), counts]))
        self._stop_if_nonfinite(int(first_bad), epoch, n_steps, elsewhere=bool(totals[3]))
        if totals[2] == 0:
            self._no_labels("training", epoch, complete=n_batches == len(loader))
        return float(totals[0]) / max(float(totals[1]), 1.0), n_images

    @torch.no_grad()
    def _validate(self, epoch: int) -> tuple[float, MetricsReport]:
        self.model.eval()
        loader = self._loader("val", epoch)
        metrics = SegmentationMetrics(len(self.classes), ignore_index=IGNORE_INDEX, device=self.device.device)
        loss_sum, n, n_labelled = torch.zeros((), dtype=torch.float64, device=self.device.device), 0, 0
        for batch in unwrap_worker_errors(iter(loader)):
            n_labelled += int((batch[1] != IGNORE_INDEX).sum())
            x, y = self._to_device(batch)
            with self._autocast():
                logits = self.model(x)
            loss_sum += self.loss_fn(logits, y).double() * x.shape[0]  # summed on the device: no sync per batch
            n += x.shape[0]
            metrics.update(logits.argmax(dim=1), y)
        bad = not bool(torch.isfinite(loss_sum))
        counts = torch.tensor([float(n), float(n_labelled), float(bad)], dtype=torch.float64)
        totals = self._all_reduce(torch.cat([loss_sum.cpu().reshape(1), counts]))
        if totals[3]:
            self._diverged(f"epoch {epoch}, validation", "the validation loss became "
                           + (f"{float(loss_sum)}" if bad else "non-finite on another process"))
        if totals[2] == 0:
            self._no_labels("validation", epoch, complete=True)
        metrics.load_state(self._all_reduce(metrics.state()))
        return float(totals[0]) / max(float(totals[1]), 1.0), metrics.compute()

    def _stop_if_nonfinite(self, first_bad: int, epoch: int, n_steps: int, elsewhere: bool = False) -> None:
        """Stop the run when a step's loss or updated weights were not finite (``first_bad``: see _mark_first)."""
        if first_bad == 0 and not elsewhere:
            return
        if first_bad == 0:
            self._diverged(f"epoch {epoch}", "the loss or weights became non-finite on another process")
        what = ("the training loss became non-finite" if first_bad > 0
                else "the weights became non-finite after the optimiser step")
        self._diverged(f"epoch {epoch}, step {abs(first_bad)} of {n_steps}", what)

    def _diverged(self, where: str, what: str) -> NoReturn:
        """Raise the one-line error of a diverged run, saying which checkpoint is kept."""
        last = self.out / LAST_CHECKPOINT
        kept = (f"the last finite checkpoint, {last} (epoch {self.loop.epoch}), is kept" if self.loop.epoch
                and last.is_file() else "no checkpoint was written")
        lr = self.cfg.optim.lr
        raise NonFiniteError(f"training diverged at {where}: {what}; {kept}. Lower the learning rate (now {lr:g})"
                             f"{hint(', e.g. {}', 'optim.lr', value=f'{lr / 10:g}')} and start over with "
                             f"{setting('fresh')}, or check the data for extreme values")

    def _no_labels(self, part: str, epoch: int, complete: bool) -> None:
        """Refuse to train on nothing: every pixel of a whole split is ignored (no label, nodata, NaN)."""
        if not complete:
            self.prog.message(f"epoch {epoch}: the training tiles drawn this epoch hold no labelled pixel")
            return
        raise DatasetLayoutError(
            f"every pixel of the {part} data is ignored (unlabelled, nodata or NaN), so there is nothing to "
            f"{'learn from' if part == 'training' else 'measure'}; check that the labels overlap the images "
            "and that the images hold valid pixels")

    def _all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        if not self.ctx.enabled:
            return t
        t = t.to(self.device.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.cpu()

    def _meta(self, report: MetricsReport) -> ModelMeta:
        name = getattr(self.train_base, "name", self.cfg.data.get("kind", "dataset"))
        return ModelMeta(
            architecture=self.cfg.model.architecture, arch_args=self.arch_args, input=self.input,
            classes=self.classes, tile_size_px=self.tile, overlap_px=self.overlap,
            resolution_m=self.resolution_m,
            training={"dataset": name, "epochs": self.loop.epoch, "best_epoch": self.loop.best_epoch,
                      "config": self.cfg.to_dict()},
            metrics={"val_loss": self.loop.history[-1].val_loss, "val_miou": float(report.miou),
                     "val_paper_miou": float(report.paper_miou),
                     "val_iou_per_class": {c.name: float(v) for c, v in zip(self.classes, report.per_class_iou,
                                                                             strict=True)}},
        )

    def _save(self, report: MetricsReport, improved: bool) -> None:
        meta = self._meta(report)
        save_checkpoint(self.out / LAST_CHECKPOINT, self.model, meta, overwrite=True)
        if improved:
            save_checkpoint(self.out / BEST_CHECKPOINT, self.model, meta, overwrite=True)
        save_state(self.out / STATE_FILE, self.model, self.optimizer, self.scheduler, self.scaler, self.loop,
                   self.cfg.to_dict())
        write_history(self.out, self.loop)
        plot_history(self.loop.history, self.out / "curves.png")


_MISSING = "(not set)"


def config_differences(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """Return ``(dotted.key, old value, new value)`` for every setting that differs, in key order."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[tuple[str, Any, Any]] = []
        for key in sorted(set(old) | set(new), key=str):
            out += config_differences(old.get(key, _MISSING), new.get(key, _MISSING), f"{prefix}{key}.")
        return out
    return [] if old == new else [(prefix.rstrip("."), old, new)]


def _mark_first(first_bad: torch.Tensor, step: int, loss_sum: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """Record (on the device, without a sync) the first step whose loss or updated weights are not finite.

    ``step`` when the epoch's loss sum (which stays non-finite once a loss was) is not finite, ``-step`` when
    only the weights are; an earlier mark is kept. The weights: one float32 sum per tensor (see
    :func:`fastunet_core.models.checkpoint.nonfinite_tensors`).
    """
    weights = [v for v in model.state_dict().values() if torch.is_floating_point(v) and v.numel()]
    weights_ok = torch.stack([v.detach().sum(dtype=torch.float32) for v in weights]).sum().isfinite()
    zero = torch.zeros_like(first_bad)
    code = torch.where(loss_sum.isfinite(), torch.where(weights_ok, zero, zero - step), zero + step)
    return torch.where(first_bad != 0, first_bad, code)


def _interrupted(out: Path, trainer: _Trainer | None) -> str:
    """Say what an interrupted run left: the finished epochs are saved and a rerun resumes after them."""
    done = trainer.loop.epoch if trainer is not None else 0
    if not done:
        return f"interrupted before the first epoch finished; nothing was saved in {out}"
    epochs = "epoch 1 is" if done == 1 else f"epochs 1-{done} are"
    files = f"{out} ({LAST_CHECKPOINT}, {BEST_CHECKPOINT}, {STATE_FILE})"
    if trainer is not None and (trainer.loop.finished or done >= trainer.cfg.optim.epochs):
        return (f"interrupted after the last epoch, while measuring the best model's bf16 agreement; {epochs} "
                f"saved in {files}")
    return (f"interrupted during epoch {done + 1}; {epochs} saved in {files}: run it again to resume from epoch "
            f"{done + 1}, or start over with {setting('fresh')}")


# The bf16 agreement runs on the CPU (where bf16 predict runs) after training: at most this many validation
# tiles, and no new batch once this many seconds have passed (a CPU without native bf16 emulates it, about 10x
# slower; 64 tiles took over 20 s on a 16-core GPU host and ran the GPU check's sections out of time).
AGREEMENT_TILES = 16
AGREEMENT_SECONDS = 10.0


def agreement_batches(batches: Iterable[torch.Tensor], max_tiles: int = AGREEMENT_TILES,
                      max_seconds: float = AGREEMENT_SECONDS,
                      clock: Callable[[], float] = time.perf_counter) -> Iterator[torch.Tensor]:
    """Yield ``batches`` cut to at most ``max_tiles`` tiles in all; stop starting new ones after ``max_seconds``.

    The first batch is always yielded, so something is measured; the time counts from the first request.
    """
    t0: float | None = None
    left = max_tiles
    for batch in batches:
        if t0 is None:
            t0 = clock()
        elif clock() - t0 > max_seconds:
            return
        yield batch[:left]
        left -= min(left, len(batch))
        if left <= 0:
            return



def split_batch(batch_size: int, micro_batch: int, world_size: int) -> tuple[int, int]:
    """Share the global logical batch among the processes: return (per-process micro-batch, accumulation steps).

    Each of the ``world_size`` processes takes ``batch_size / world_size`` images per optimiser step, in
    micro-batches of the largest size up to ``micro_batch`` that divides that share. So the README's
    ``torchrun --nproc-per-node 4`` with batch 8 and micro-batch 8 runs 2 images per GPU, one step.
    """
    if batch_size % world_size:
        up = -(-batch_size // world_size) * world_size
        raise ConfigError(f"optim.batch_size {batch_size} (images per optimiser step, all processes together) cannot "
                          f"be shared by {world_size} processes; use a multiple of {world_size}, e.g. "
                          f"{setting('optim.batch_size', up)}")
    share = batch_size // world_size
    micro = max(d for d in range(1, min(micro_batch, share) + 1) if share % d == 0)
    return micro, share // micro


def describe_training(device: DeviceChoice, amp: torch.dtype | None, channels_last: bool) -> str:
    """Say what a training run actually uses: device, precision, memory layout."""
    if not device.is_cuda:
        return device.describe()
    gpu = device.reason.split(",")[0]
    precision = {torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast with GradScaler"}.get(
        amp, "fp32 (no autocast)") if amp is not None else "fp32 (no autocast)"
    layout = "channels_last" if channels_last else "contiguous (NCHW)"
    return f"{device.name} ({gpu}; {precision}; {layout})"
