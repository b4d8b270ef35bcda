"""torch.distributed glue: one process per GPU (or CPU process with gloo), started by ``torchrun``.

``torchrun`` sets RANK, WORLD_SIZE and LOCAL_RANK; without them everything runs as a single process and
no process group is created, and torch is not imported (a single ONNX Runtime predict runs without it). Under
``torchrun`` the run is distributed even with one process (``--nproc-per-node 1``): process group, DDP and
SyncBatchNorm then run as they would on several GPUs, which is how a one-GPU machine checks that path
(``make gpu-check``).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a distributed run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launched: bool = False  # started by torchrun (WORLD_SIZE and RANK set), whatever the world size

    @property
    def is_main(self) -> bool:
        """True on the process that writes shared outputs (summaries, checkpoints)."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """True when running under torchrun (also with one process) or with more than one process."""
        return self.world_size > 1 or self.launched


def context_from_env() -> DistContext:
    """Read torchrun's environment; a plain process gets rank 0 of 1."""
    return DistContext(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                       int(os.environ.get("LOCAL_RANK", 0)), "WORLD_SIZE" in os.environ and "RANK" in os.environ)


def init(ctx: DistContext, use_cuda: bool) -> None:
    """Create the process group (nccl on GPUs, gloo on CPUs) when running distributed."""
    if not ctx.enabled:
        return
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_gpu(ctx))
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")


def local_gpu(ctx: DistContext) -> int:
    """Return the index of this rank's GPU on its machine (local rank modulo the GPUs it sees)."""
    import torch

    return ctx.local_rank % max(torch.cuda.device_count(), 1)


def rank_device(requested: str, ctx: DistContext) -> str:
    """Give each rank its own GPU under torchrun: ``auto``, ``cuda`` and ``cuda:N`` become the rank's GPU.

    An explicit ``cuda:N`` is one process's view; with several processes each takes the GPU of its local rank
    (the same one :func:`init` selects). Choose the GPUs a run may use with ``CUDA_VISIBLE_DEVICES``.
    """
    req = requested.strip().lower()
    if not ctx.enabled or not (req == "auto" or req.startswith("cuda")):
        return requested
    import torch

    if torch.cuda.is_available():
        return f"cuda:{local_gpu(ctx)}"
    return requested


def all_gather(obj: T, ctx: DistContext) -> list[T]:
    """Return every rank's ``obj`` (in rank order) on every rank."""
    if not ctx.enabled:
        return [obj]
    import torch.distributed as dist

    out: list[T] = [obj] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def shutdown() -> None:
    """Destroy the process group if one exists."""
    if "torch.distributed" not in sys.modules:  # never imported: no group can exist
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def end_process(ctx: DistContext, code: int) -> None:
    """End a rank of a distributed run now, skipping the interpreter's shutdown (no-op when not distributed).

    DistributedDataParallel keeps the gloo process group alive after ``destroy_process_group`` (its
    references are never released), so the group's worker threads outlive ``main``. When one of them drops
    the last collective's tensors while the interpreter is finalising, the process aborts with "terminate
    called without an active exception" (seen in about one run in ten; pytorch/pytorch#179291). A rank's
    work is complete and its files closed at this point, so it flushes its streams and leaves with ``code``.
    """
    if not ctx.enabled:
        return
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
