"""Hold Ctrl-C (SIGINT) and SIGTERM across a few writes that belong together.

A training epoch ends by writing its checkpoints, the training state and the history; an interrupt
between two of them would leave ``last.safetensors`` one epoch ahead of ``last_state.pt``, and the
interrupted line would name an epoch that a rerun does not resume from. :func:`signals_held` runs the
block with both signals recorded instead of handled, then hands each one that came to its own handler
(``KeyboardInterrupt`` for Ctrl-C and for SIGTERM under the CLI), right after the block.

Why not ``pthread_sigmask``: it blocks a signal for one thread only, and the kernel delivers a process
signal to any thread that does not block it (PyTorch's worker threads), whose C handler still marks it
for the main thread's Python handler.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class HeldSignals:
    """The signals recorded inside a :func:`signals_held` block, and the handlers they would have run."""

    def __init__(self, previous: dict[int, Any]) -> None:
        self.previous = previous
        self.held: list[int] = []

    def hold(self, signum: int, _frame: object) -> None:
        """Record the signal (the handler while the block runs)."""
        self.held.append(signum)

    def hand_on(self) -> None:
        """Run now the Python handler of each signal held so far (e.g. raise ``KeyboardInterrupt``), inside the block.

        For a code path that can stop at a safe point within the block (the next batch of a stream); a signal
        whose action is the default one (the process ends) waits for the end of the block.
        """
        waiting = [s for s in self.held if not callable(self.previous[s])]
        ready, self.held = [s for s in self.held if callable(self.previous[s])], waiting
        for signum in dict.fromkeys(ready):
            self.previous[signum](signum, None)


@contextmanager
def signals_held() -> Iterator[HeldSignals]:
    """Record SIGINT and SIGTERM inside the block; on leaving it, run the handler each would have run.

    Off the main thread (where Python runs no handler of its own) or where a handler was not set from
    Python (it could not be put back), this holds nothing.
    """
    held = HeldSignals({sig: signal.getsignal(sig) for sig in SIGNALS})
    if threading.current_thread() is not threading.main_thread() or None in held.previous.values():
        yield held
        return
    for sig in SIGNALS:
        signal.signal(sig, held.hold)
    try:
        yield held
    finally:
        for signum, handler in held.previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(held.held):  # each signal once, in the order they came
            _hand_on(signum, held.previous[signum])


def _hand_on(signum: int, handler: Any) -> None:
    """Do what ``signum`` would have done with ``handler`` installed."""
    if callable(handler):  # Python's Ctrl-C handler (KeyboardInterrupt), the CLI's SIGTERM one, ...
        handler(signum, None)
    elif handler == signal.SIG_DFL:  # the default action (SIGTERM: the process ends): the signal again
        os.kill(os.getpid(), signum)
