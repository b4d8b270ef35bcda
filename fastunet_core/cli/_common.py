"""Options and helpers shared by several commands."""

from __future__ import annotations

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


class BarProgress:
    """Progress to a tqdm bar on stderr; Ctrl-C cancels (handled by the CLI)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._bar: tqdm | None = None

    def start(self, total: int, label: str) -> None:
        """Open the bar."""
        if self.enabled:
            self._bar = tqdm(total=total, unit=label.rstrip("s") or "it", dynamic_ncols=True, leave=False)

    def advance(self, n: int = 1) -> None:
        """Advance the bar."""
        if self._bar is not None:
            self._bar.update(n)

    def is_cancelled(self) -> bool:
        """Never: Ctrl-C raises KeyboardInterrupt instead."""
        return False

    def message(self, text: str) -> None:
        """Print a line above the bar."""
        if self.enabled:
            tqdm.write(text, file=None)

    def close(self) -> None:
        """Close the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
