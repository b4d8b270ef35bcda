"""Options and helpers shared by several commands."""

from __future__ import annotations

import sys

import click
from tqdm import tqdm


def parse_int_list(value: str | None, what: str) -> tuple[int, ...] | None:
    """Parse '1,2,3' into (1, 2, 3)."""
    if value is None or value == "":
        return None
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{what} must be comma-separated integers, e.g. 1,2,3; got {value!r}") from None


def parse_float_list(value: str | None, what: str) -> tuple[float, ...] | None:
    """Parse '0.5,0.5' into (0.5, 0.5)."""
    if value is None or value == "":
        return None
    try:
        return tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{what} must be comma-separated numbers; got {value!r}") from None


def parse_arch_args(values: tuple[str, ...]) -> dict[str, object]:
    """Parse ``--arch-args``: JSON objects and/or ``key=value`` items (values read as JSON when they parse).

    ``encoder_name=resnet18 encoder_depth=4`` and ``'{"widths": [8, 16]}'`` both work; later items win.
    """
    import json

    out: dict[str, object] = {}
    for value in values:
        value = value.strip()
        if value.startswith("{"):
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError as exc:
                raise click.BadParameter(f"--arch-args is not valid JSON ({exc}): {value!r}") from None
            out.update(parsed)
            continue
        for item in (i for i in value.split(",") if i.strip()) if "=" in value else [value]:
            if "=" not in item:
                raise click.BadParameter(f"--arch-args takes key=value items or a JSON object, got {item!r}")
            key, raw = (s.strip() for s in item.split("=", 1))
            try:
                out[key] = json.loads(raw)
            except json.JSONDecodeError:
                out[key] = raw
    return out


class BarProgress:
    """Progress to a tqdm bar on stderr (a context manager that closes it); Ctrl-C is handled by the CLI."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._bar: tqdm | None = None

    def start(self, total: float, label: str) -> None:
        """Open the bar (counting tiles, or megapixels over many rasters)."""
        if not self.enabled:
            return
        self.close()
        fmt = None
        if label == "Mpx":
            fmt = "{l_bar}{bar}| {n:.1f}/{total:.1f} Mpx [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
        self._bar = tqdm(total=total, unit=label.rstrip("s") or "it", dynamic_ncols=True, leave=False,
                         bar_format=fmt, file=sys.stderr)

    def advance(self, n: float = 1) -> None:
        """Advance the bar."""
        if self._bar is not None:
            self._bar.update(n)

    def is_cancelled(self) -> bool:
        """Never: Ctrl-C raises KeyboardInterrupt instead."""
        return False

    def message(self, text: str) -> None:
        """Print a line above the bar."""
        if self.enabled:
            tqdm.write(text, file=sys.stderr)

    def status(self, text: str) -> None:
        """Show the current file or the epoch's loss beside the bar."""
        if self.enabled and self._bar is not None:
            self._bar.set_postfix_str(text, refresh=True)

    def device(self, text: str) -> None:
        """Print where the work runs."""
        self.message(f"device: {text}")

    def __enter__(self) -> BarProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


MAX_DEFAULT_WORKERS = 4


def default_workers() -> int:
    """Return how many processes window-parallel work uses: the CPU cores, at most MAX_DEFAULT_WORKERS."""
    import os

    return min(MAX_DEFAULT_WORKERS, os.cpu_count() or 1)


def stop_on_sigterm() -> None:
    """Treat SIGTERM (a job scheduler's time limit, ``kill``) like Ctrl-C: stop cleanly, keep finished work."""
    import signal
    import threading

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)
