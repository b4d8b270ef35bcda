"""Choose the compute device, and say why CUDA was or was not used.

A silent CPU fallback is the commonest complaint about tools of this kind ("GPU not actually used"): here
every run carries a :class:`DeviceChoice` whose ``reason`` is printed by the CLI and shown in the dock.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fastunet_core.errors import ConfigError, DeviceError

DEVICE_CHOICES = ("auto", "cuda", "cpu")


@dataclass(frozen=True)
class DeviceChoice:
    """The device a run uses, with a one-line explanation."""

    device: torch.device
    reason: str
    autocast_dtype: torch.dtype | None = None  # set on CUDA: bf16 where supported, else fp16

    @property
    def is_cuda(self) -> bool:
        """True when running on a CUDA GPU."""
        return self.device.type == "cuda"

    def describe(self) -> str:
        """Return e.g. 'cuda:0 (NVIDIA H100, bf16 autocast)' or 'cpu (no CUDA: torch is a CPU-only build)'."""
        return f"{self.device} ({self.reason})"


def cuda_unavailable_reason() -> str | None:
    """Return why CUDA cannot be used, or None when it can."""
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


def resolve_device(requested: str = "auto") -> DeviceChoice:
    """Turn ``auto``, ``cuda``, ``cuda:N`` or ``cpu`` into a device and the reason for it."""
    req = requested.strip().lower()
    if req == "cpu":
        return DeviceChoice(torch.device("cpu"), "cpu requested")
    if req == "auto" or req.startswith("cuda"):
        why_not = cuda_unavailable_reason()
        if why_not is None:
            dev = torch.device("cuda:0" if req in ("auto", "cuda") else req)
            try:
                name = torch.cuda.get_device_name(dev)
            except (AssertionError, RuntimeError) as exc:
                raise DeviceError(f"cannot use {req}: {exc}") from exc
            amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            amp_name = "bf16" if amp is torch.bfloat16 else "fp16"
            return DeviceChoice(dev, f"{name}, {amp_name} autocast, channels_last", amp)
        if req == "auto":
            return DeviceChoice(torch.device("cpu"), why_not)
        raise DeviceError(f"--device {requested} was requested but {why_not}; use --device cpu or auto")
    raise ConfigError(f"unknown device {requested!r}; choose one of {', '.join(DEVICE_CHOICES)} (or cuda:N)")
