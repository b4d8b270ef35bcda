"""DataLoader workers for training: how many, kept alive between epochs, and epoch-aware sample keys.

``num_workers: auto`` is the usable cores (the CPU affinity of this process, not the machine's count)
minus one for the process that drives the model, shared among the ranks torchrun started on this node.

Workers persist between epochs, so the dataset copy inside each worker never sees the trainer change
an attribute. The epoch therefore travels with every sample key: :class:`EpochSampler` wraps the real
sampler (or index list) and yields ``(epoch, index)``, which :class:`fastunet_core.train.loop.SeededSamples`
turns into the augmentation seed. The sampler itself lives in the main process, so ``set_epoch`` reaches it.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable, Iterator, Sized
from typing import Any, TypeVar

from torch.utils.data import DataLoader, Dataset, Sampler

from fastunet_core.errors import ConfigError

AUTO = "auto"
T = TypeVar("T")


def usable_cores() -> int:
    """Return the cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_workers(value: int | str, local_processes: int = 1) -> int:
    """Turn ``num_workers`` (a count or ``auto``) into a worker count for one process.

    ``auto``: the usable cores divided among ``local_processes`` training processes on this machine,
    minus one per process for the process itself (never below 0).
    """
    if value == AUTO:
        return max(0, usable_cores() // max(local_processes, 1) - 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"optim.num_workers must be a number >= 0 or auto, got {value!r}")
    return value


class EpochSampler(Sampler[tuple[int, int]]):
    """Yield ``(epoch, index)`` for every index of an inner sampler; ``set_epoch`` also reaches the inner one."""

    def __init__(self, inner: Iterable[int]) -> None:
        self.inner = inner
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch`` for the next pass (and tell the inner sampler, e.g. a DistributedSampler)."""
        self.epoch = epoch
        setter = getattr(self.inner, "set_epoch", None)
        if setter is not None:
            setter(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return ((epoch, int(i)) for i in self.inner)

    def __len__(self) -> int:
        if not isinstance(self.inner, Sized):
            raise TypeError("the inner sampler has no length")
        return len(self.inner)


def end_quietly_on_sigterm(_worker_id: int) -> None:
    """Make a DataLoader worker end with exit status 0 on SIGTERM, whoever sends it.

    PyTorch's workers end quietly only on their parent's SIGTERM; one from elsewhere (a job scheduler's time
    limit reaches every process of the job, ``kill`` of the process group) kills them by the signal, and the
    training process, itself stopping on that SIGTERM, then dies of PyTorch's "DataLoader worker ... is killed
    by signal" error instead of saying which epoch is saved. The worker holds nothing to save.
    """
    signal.signal(signal.SIGTERM, _exit_now)


def _exit_now(_signum: int, _frame: object) -> None:
    os._exit(0)


def make_loader(dataset: Dataset[Any], sampler: EpochSampler, batch_size: int, workers: int,
                pin_memory: bool) -> DataLoader[Any]:
    """Build a DataLoader whose workers (if any) stay alive between epochs and prefetch ahead."""
    extra: dict[str, Any] = {"persistent_workers": True, "prefetch_factor": 4,
                             "worker_init_fn": end_quietly_on_sigterm} if workers > 0 else {}
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, pin_memory=pin_memory,
                      drop_last=False, **extra)


def worker_error(exc: BaseException) -> BaseException | None:
    """Return ``exc`` as raised in a DataLoader worker with its own one-line message, or None if it is not one.

    PyTorch re-raises a worker's exception as the same type with a message of several lines ("Caught X in
    DataLoader worker process N. Original Traceback ..."), whose last line holds the real message.
    """
    text = str(exc)
    lines = text.splitlines()
    if not lines or not lines[0].startswith("Caught ") or "DataLoader worker" not in lines[0]:
        return None
    last = next((ln for ln in reversed(lines) if ln.strip()), "")
    name = type(exc).__name__
    message = last.split(f"{name}: ", 1)[1] if f"{name}: " in last else last.strip()
    try:
        clean = type(exc)(message)
    except Exception:  # a type that does not take one message
        return None
    return clean


def unwrap_worker_errors(batches: Iterator[T]) -> Iterator[T]:
    """Yield from a DataLoader iterator; an error in a worker reaches the caller with its own one line."""
    while True:
        try:
            item = next(batches)
        except StopIteration:
            return
        except Exception as exc:
            clean = worker_error(exc)
            if clean is None:
                raise
            raise clean from None
        yield item
