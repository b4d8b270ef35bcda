"""What this CPU offers, read without importing torch: physical cores and native bf16 instructions."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path


def usable_cpus() -> set[int]:
    """Return the logical CPUs this process may run on."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return set(range(os.cpu_count() or 1))


@functools.cache
def physical_cores() -> int:
    """Return the physical cores this process may use (hyper-threads of one core count once).

    Compute-bound kernels (convolutions) gain nothing from a core's second hardware thread, and two
    threads fighting over one core's vector units are slower than one.
    """
    cpus = usable_cpus()
    cores = set()
    for cpu in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add((topo.joinpath("physical_package_id").read_text().strip(),
                       topo.joinpath("core_id").read_text().strip()))
        except OSError:
            return max(1, len(cpus))  # no topology (not Linux, or hidden): count logical CPUs
    return max(1, len(cores))


@dataclass(frozen=True)
class Bf16Support:
    """Which native bf16 instructions the CPU has (none: bf16 would be emulated, slower than fp32)."""

    avx512_bf16: bool
    amx_bf16: bool

    @property
    def native(self) -> bool:
        """True when bf16 matrix products run in hardware."""
        return self.avx512_bf16 or self.amx_bf16

    def describe(self) -> str:
        """Return e.g. 'AMX-BF16 + AVX512-BF16' or 'no native bf16'."""
        names = [n for n, on in (("AMX-BF16", self.amx_bf16), ("AVX512-BF16", self.avx512_bf16)) if on]
        return " + ".join(names) if names else "no native bf16"


@functools.cache
def bf16_support() -> Bf16Support:
    """Read the CPU's bf16 features from /proc/cpuinfo (Linux; elsewhere: none known)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return Bf16Support(False, False)
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return Bf16Support("avx512_bf16" in flags, "amx_bf16" in flags)
