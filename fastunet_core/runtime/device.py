"""Choose the compute device, and say why CUDA was or was not used.

A silent CPU fallback is the commonest complaint about tools of this kind ("GPU not actually used"): here
every run carries a :class:`DeviceChoice` whose ``reason`` is printed by the CLI and shown in the dock.

torch is imported only when it can matter: on a machine with no NVIDIA driver, ``auto`` resolves to the
CPU without it, so an ONNX Runtime run never loads torch (about 300 MB and a second of start-up).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fastunet_core.errors import ConfigError, DeviceError
from fastunet_core.hints import setting

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cuda", "cpu")
CPU_BATCH, CUDA_BATCH = 1, 4  # default tiles per model call: predict, the dock and Processing all take it from here


def default_batch_size(cuda: bool) -> int:
    """Return the tiles per model call a run makes when the user gives no batch size (on CUDA or a CPU)."""
    return CUDA_BATCH if cuda else CPU_BATCH


@dataclass(frozen=True)
class DeviceChoice:
    """The device a run uses, with a one-line explanation."""

    name: str  # "cpu", "cuda:0", ...
    reason: str
    autocast: str | None = None  # set on CUDA: "bf16" where supported, else "fp16"

    @property
    def device(self) -> torch.device:
        """The ``torch.device`` (imports torch)."""
        import torch

        return torch.device(self.name)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The CUDA autocast dtype (imports torch), or None."""
        if self.autocast is None:
            return None
        import torch

        return torch.bfloat16 if self.autocast == "bf16" else torch.float16

    @property
    def is_cuda(self) -> bool:
        """True when running on a CUDA GPU."""
        return self.name.startswith("cuda")

    def describe(self) -> str:
        """Return e.g. 'cuda:0 (NVIDIA H100, bf16 autocast)' or 'cpu (no CUDA: torch is a CPU-only build)'."""
        return f"{self.name} ({self.reason})"


def no_cuda_without_torch() -> str | None:
    """Return why CUDA cannot be used when that is plain without importing torch, else None.

    No torch installed, an empty ``CUDA_VISIBLE_DEVICES``, or (on Linux) no NVIDIA driver loaded.
    """
    if importlib.util.find_spec("torch") is None:
        return "no CUDA: torch is not installed"
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return "no CUDA: CUDA_VISIBLE_DEVICES hides every GPU"
    if sys.platform.startswith("linux") and not Path("/proc/driver/nvidia/version").exists():
        return "no CUDA: no NVIDIA driver is loaded on this machine"
    return None


def cuda_unavailable_reason() -> str | None:
    """Return why CUDA cannot be used, or None when it can."""
    lean = no_cuda_without_torch()
    if lean is not None:
        return lean
    import torch

    if torch.version.cuda is None:
        return "no CUDA: this torch is a CPU-only build; install a CUDA build of torch to use a GPU"
    try:
        if torch.cuda.is_available():
            return None
        count = torch.cuda.device_count()
    except Exception as exc:  # driver problems surface as assorted RuntimeErrors
        return f"no CUDA: the CUDA runtime failed to start ({exc})"
    if count == 0:
        return (f"no CUDA: torch has CUDA {torch.version.cuda} but sees no GPU (no NVIDIA driver, "
                "or CUDA_VISIBLE_DEVICES hides it)")
    return f"no CUDA: torch has CUDA {torch.version.cuda} but the GPU cannot be used (driver too old?)"


def native_cuda_autocast_dtype() -> torch.dtype:
    """Return bf16 where the GPU computes it natively (Ampere and later), else fp16 (to use with a GradScaler).

    ``torch.cuda.is_bf16_supported()`` alone also counts emulation: on a T4, V100 or RTX 20xx it says yes,
    and bf16 convolutions then run without cuDNN's tensor cores, several times slower than fp16.
    """
    import torch

    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16


def resolve_device(requested: str = "auto") -> DeviceChoice:
    """Turn ``auto``, ``cuda``, ``cuda:N`` or ``cpu`` into a device and the reason for it."""
    req = requested.strip().lower()
    if req == "cpu":
        return DeviceChoice("cpu", "cpu requested")
    if req == "auto" or req.startswith("cuda"):
        why_not = cuda_unavailable_reason()
        if why_not is None:
            import torch

            dev = torch.device("cuda:0" if req in ("auto", "cuda") else req)
            try:
                name = torch.cuda.get_device_name(dev)
            except (AssertionError, RuntimeError) as exc:
                raise DeviceError(f"cannot use {req}: {exc}") from exc
            amp_name = "bf16" if native_cuda_autocast_dtype() is torch.bfloat16 else "fp16"
            return DeviceChoice(str(dev), f"{name}, {amp_name} autocast, channels_last", amp_name)
        if req == "auto":
            return DeviceChoice("cpu", why_not)
        raise DeviceError(f"{setting('device', requested)} was requested but {why_not}; use "
                          f"{setting('device', 'cpu')} or auto")
    raise ConfigError(f"unknown device {requested!r}; choose one of {', '.join(DEVICE_CHOICES)} (or cuda:N)")
