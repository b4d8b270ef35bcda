"""Options and helpers shared by several commands."""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, TextIO

import click

if TYPE_CHECKING:  # tqdm (and importlib.metadata under it) only when a bar is drawn on a terminal
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


LINE_SECONDS = 30.0
"""Where stderr is not a terminal (cron, CI, torchrun's log, a file), progress is a plain line this often."""


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


class BarProgress:
    """Progress on stderr (a context manager that closes it); Ctrl-C is handled by the CLI.

    On a terminal: a tqdm bar, the current file or loss beside it. Elsewhere (a log file, cron mail, CI,
    torchrun): no carriage-return animation, but a plain line at most every ``line_seconds`` and one when the
    work is done. In a distributed run only rank 0 shows progress (the other ranks do the same work).
    """

    def __init__(self, enabled: bool = True, *, line_seconds: float = LINE_SECONDS,
                 stream: TextIO | None = None, cancel_after_sigterm: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.cancel_after_sigterm = cancel_after_sigterm
        self.enabled = enabled
        self.show_progress = enabled and os.environ.get("RANK", "0") in ("", "0")
        self.terminal = _is_terminal(self.stream)
        self.line_seconds = line_seconds
        self._bar: tqdm | None = None
        self._plain: _PlainLines | None = None

    def start(self, total: float, label: str) -> None:
        """Start counting ``total`` units (tiles, steps, or megapixels over many rasters)."""
        if not self.show_progress:
            return
        self.close()
        if not self.terminal:
            self._plain = _PlainLines(total, label, self.line_seconds, self.stream)
            return
        from tqdm import tqdm

        fmt = None
        if label == "Mpx":
            fmt = "{l_bar}{bar}| {n:.1f}/{total:.1f} Mpx [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
        self._bar = tqdm(total=total, unit=label.rstrip("s") or "it", dynamic_ncols=True, leave=False,
                         bar_format=fmt, file=self.stream)

    def advance(self, n: float = 1) -> None:
        """Count ``n`` more units."""
        if self._bar is not None:
            self._bar.update(n)
        elif self._plain is not None:
            self._plain.advance(n)

    def is_cancelled(self) -> bool:
        """Ctrl-C and SIGTERM raise KeyboardInterrupt instead; True only after a SIGTERM whose exception was lost.

        (Only with ``cancel_after_sigterm``: see :func:`sigterm_received`.)
        """
        return self.cancel_after_sigterm and sigterm_received()

    def message(self, text: str) -> None:
        """Print a line on its own (above the bar on a terminal)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def status(self, text: str) -> None:
        """Show the current file or the epoch's loss beside the bar (in the next plain line off a terminal)."""
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=True)
        elif self._plain is not None:
            self._plain.status = text

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
        self._plain = None


class _PlainLines:
    """Progress as plain lines: ``tiles 120/480 (25 %), 2.0/s, 1 min left; status``."""

    def __init__(self, total: float, label: str, every: float, stream: TextIO) -> None:
        self.total, self.label, self.every, self.stream = total, label, every, stream
        self.done = 0.0
        self.status = ""
        self.t0 = self.last = time.monotonic()

    def advance(self, n: float) -> None:
        self.done += n
        now = time.monotonic()
        finished = self.total > 0 and self.done >= self.total
        if finished or now - self.last >= self.every:
            self.last = now
            print(self.line(now), file=self.stream, flush=True)

    def line(self, now: float) -> str:
        elapsed = max(now - self.t0, 1e-9)
        rate = self.done / elapsed
        share = f" ({100 * self.done / self.total:.0f} %)" if self.total else ""
        fmt = ".1f" if self.label == "Mpx" else "g"
        text = f"{self.label} {self.done:{fmt}}/{self.total:{fmt}}{share}, {rate:.3g}/s"
        if self.total and rate > 0 and self.done < self.total:
            text += f", {_duration((self.total - self.done) / rate)} left"
        else:
            text += f", {_duration(elapsed)}"
        return text + (f"; {self.status}" if self.status else "")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


MAX_DEFAULT_WORKERS = 4


def default_workers() -> int:
    """Return how many processes window-parallel work uses: the CPU cores, at most MAX_DEFAULT_WORKERS."""
    import os

    return min(MAX_DEFAULT_WORKERS, os.cpu_count() or 1)


_SIGTERM_RECEIVED: list[int] = []
"""Non-empty once SIGTERM arrived (see :func:`sigterm_received`)."""


def sigterm_received() -> bool:
    """Return True once SIGTERM arrived since the last :func:`stop_on_sigterm` (each command's start).

    Its ``KeyboardInterrupt`` can be lost where Python drops exceptions (a ``__del__``, a generator closed by the
    garbage collector); a progress with ``cancel_after_sigterm`` then stops at its next cancel check instead.
    """
    return bool(_SIGTERM_RECEIVED)


def stop_on_sigterm() -> None:
    """Treat SIGTERM (a job scheduler's time limit, ``kill``) like Ctrl-C: stop cleanly, keep finished work."""
    import signal
    import threading

    def interrupt(signum: int, frame: object) -> None:
        _SIGTERM_RECEIVED.append(signum)
        raise KeyboardInterrupt

    _SIGTERM_RECEIVED.clear()  # a command starts unstopped (several run in one process: tests, library callers)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)
