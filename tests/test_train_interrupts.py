"""Stopping ``train`` with SIGTERM (a job scheduler's time limit, ``kill``) is a clean stop, as Ctrl-C is.

Exit 130, one line naming the epochs that are saved (and they are), no DataLoader worker left running.
The tests wait for states they can see (files, worker processes), never for a fixed time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from run_helpers import children, default_signals

REPO = Path(__file__).resolve().parent.parent
WAIT_S = 300  # generous: CI is a busy 2-core machine




def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a container's init may never reap one)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _wait_for(what: str, ready: object, proc: subprocess.Popen[bytes] | None = None) -> None:
    end = time.monotonic() + WAIT_S
    while not ready():  # type: ignore[operator]
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"train ended before {what}: {proc.communicate()[1].decode()}")
        assert time.monotonic() < end, f"no {what} after {WAIT_S} s"
        time.sleep(0.05)


def _tiny_run(shared_data: Path, tmp_path: Path, workers: int) -> tuple[Path, Path]:
    config = {"data": {"kind": "landcoverai", "root": str(shared_data / "torchgeo-fixtures" / "landcoverai"),
                       "tile_size": 32},
              "model": {"architecture": "unet_tiny"}, "device": "cpu",
              "optim": {"epochs": 100000, "batch_size": 2, "micro_batch": 2, "num_workers": workers,
                        "max_batches_per_epoch": 2}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, tmp_path / "run"


@pytest.mark.parametrize("how", ["SIGTERM", "SIGTERM to the process group"])
def test_sigterm_stops_training_like_ctrl_c(shared_data: Path, tmp_path: Path, how: str) -> None:
    config, run = _tiny_run(shared_data, tmp_path, workers=2)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "fastunet_core.cli", "-q", "train", "-c", str(config),
                             "--output", str(run)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, preexec_fn=default_signals)
    try:
        # epoch 1 saved, and the training and validation loaders' workers (2 each) started
        _wait_for("saved epoch and loader workers",
                  lambda: (run / "history.json").is_file() and len(children(proc.pid)) >= 4, proc)
        workers = children(proc.pid)
        if how == "SIGTERM to the process group":  # as a scheduler does: the workers get it too
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    stderr = err.decode()
    assert proc.returncode == 130, stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr  # no traceback, no "DataLoader worker ... is killed by signal"
    found = re.fullmatch(rf"error: interrupted during epoch (\d+); (epoch 1 is|epochs 1-(\d+) are) saved in "
                         rf"{re.escape(str(run))} \(last\.safetensors, best\.safetensors, last_state\.pt\): run it "
                         r"again to resume from epoch (\d+), or start over with --fresh", lines[0])
    assert found, lines[0]
    saved = int(found.group(3) or 1)
    assert int(found.group(1)) == int(found.group(4)) == saved + 1
    # what the line says is what the folder holds: a rerun resumes after that epoch
    assert len(json.loads((run / "history.json").read_text())) == saved
    state = torch.load(run / "last_state.pt", map_location="cpu", weights_only=True)
    assert state["loop"]["epoch"] == saved
    _wait_for("end of the loader workers", lambda: not any(_running(w) for w in workers))


class _Keys(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, key: tuple[int, int]) -> int:
        return key[1]


def test_a_worker_ends_quietly_on_sigterm_from_anyone(shared_data: Path) -> None:
    """PyTorch's worker dies by a SIGTERM not sent by its parent, which turns the trainer's stop into an error."""
    from fastunet_core.train.workers import EpochSampler, make_loader

    loader = make_loader(_Keys(), EpochSampler(range(8)), 1, 1, pin_memory=False)
    batches = iter(loader)
    next(batches)  # the worker has started (and run its init function)
    worker = batches._workers[0]  # type: ignore[attr-defined]
    subprocess.run(["kill", "-TERM", str(worker.pid)], check=True)  # another process sends it, as a scheduler
    worker.join(WAIT_S)
    try:
        assert worker.exitcode == 0
    finally:
        del batches, loader


def test_signals_are_held_while_an_epoch_is_saved(shared_data: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ctrl-C between the checkpoints and the training state would leave them one epoch apart."""
    import fastunet_core.train.loop as loop
    from fastunet_core.errors import CancelledError
    from fastunet_core.train.config import load_config
    from fastunet_core.train.state import save_state

    def interrupted_save(*args: object, **kwargs: object) -> None:
        signal.raise_signal(signal.SIGINT)  # Ctrl-C after the checkpoints, before the state is written
        save_state(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "save_state", interrupted_save)
    config, run = _tiny_run(shared_data, tmp_path, workers=0)
    with pytest.raises(CancelledError, match="interrupted during epoch 2; epoch 1 is saved in"):
        loop.train(load_config(config, [f"output={run}"]))
    state = torch.load(run / "last_state.pt", map_location="cpu", weights_only=True)
    assert state["loop"]["epoch"] == 1


def test_signals_held_hands_each_signal_on_after_the_block() -> None:
    from fastunet_core.runtime.signals import signals_held

    def stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        reached = False
        with pytest.raises(KeyboardInterrupt) as info, signals_held():
            signal.raise_signal(signal.SIGTERM)  # runs the Python handler before it returns
            reached = True
        assert reached and info.value.args == (signal.SIGTERM,)
        assert signal.getsignal(signal.SIGTERM) is stop
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_lost_sigterm_still_stops_training_at_the_next_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Python drops an exception raised in a ``__del__`` or a collected generator; the SIGTERM is not lost."""
    from fastunet_core.cli import _common

    monkeypatch.setattr(_common, "_SIGTERM_RECEIVED", [])
    previous = signal.getsignal(signal.SIGTERM)
    try:
        _common.stop_on_sigterm()
        with pytest.raises(KeyboardInterrupt):  # where it lands it is an exception as Ctrl-C's ...
            signal.raise_signal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
    # ... and if that one was swallowed, train's progress says "cancelled" at the next step
    assert _common.BarProgress(enabled=False, cancel_after_sigterm=True).is_cancelled()
    assert not _common.BarProgress(enabled=False).is_cancelled()  # predict's and vectorize's: as before


def test_a_sigterm_of_an_earlier_command_does_not_stop_the_next(shared_data: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands run in one process (tests, scripts calling the CLI): each starts without the last one's SIGTERM."""
    from cli_helpers import run_cli

    from fastunet_core.cli import _common

    monkeypatch.setattr(_common, "_SIGTERM_RECEIVED", [signal.SIGTERM])  # as left by an interrupted predict
    previous = signal.getsignal(signal.SIGTERM)
    try:
        config, run = _tiny_run(shared_data, tmp_path, workers=0)
        code, out = run_cli("-q", "train", "-c", str(config), "--output", str(run), "optim.epochs=1")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert code == 0, out
