"""Training state on disk: what an interrupted run needs to resume exactly where it stopped.

Saved with ``torch.save`` as plain tensors, numbers, strings, lists and dicts, and read back with
``torch.load(weights_only=True)``: no object is ever unpickled.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from fastunet_core.errors import CheckpointError
from fastunet_core.hints import setting
from fastunet_core.io.atomic import atomic_output

STATE_FILE = "last_state.pt"
STATE_KEYS = ("model", "optimizer", "scheduler", "scaler", "loop", "config_json", "torch_rng")
HISTORY_FILE = "history.json"


@dataclass
class EpochRecord:
    """One epoch's figures."""

    epoch: int
    train_loss: float
    val_loss: float
    val_miou: float
    val_paper_miou: float
    lr: float
    seconds: float
    images_per_s: float


@dataclass
class LoopState:
    """Where the loop stands between epochs."""

    epoch: int = 0  # epochs completed
    best_val_loss: float = float("inf")
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the last improvement (early stopping)
    finished: bool = False  # stopped early (no improvement); more epochs would not run
    history: list[EpochRecord] = field(default_factory=list)


def save_state(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
               scaler: torch.amp.GradScaler, loop: LoopState, config: dict[str, Any]) -> None:
    """Write the full training state atomically."""
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "loop": {**asdict(loop), "history": [asdict(h) for h in loop.history]},
        "config_json": json.dumps(config, sort_keys=True),
        "torch_rng": torch.get_rng_state(),
    }
    with atomic_output(path, overwrite=True) as tmp:
        torch.save(payload, tmp)


def load_state(path: Path) -> dict[str, Any]:
    """Read a training state (weights-only: nothing but tensors and plain values is accepted)."""
    from fastunet_core.models.checkpoint import read_torch_file

    fresh = f"start afresh with {setting('fresh')}"
    try:
        payload = read_torch_file(path)
    except CheckpointError as exc:  # one line: carries code (not loaded), damaged, unreadable
        raise type(exc)(f"cannot resume: {exc}; {fresh}") from exc
    not_state = f"cannot resume: {path} is not a fastunet-geo training state"
    missing = [key for key in STATE_KEYS if key not in payload] if isinstance(payload, dict) else list(STATE_KEYS)
    if not isinstance(payload, dict) or missing:
        raise CheckpointError(f"{not_state} (no {', '.join(missing)}); {fresh}")
    state: dict[str, Any] = payload
    try:
        loop = state["loop"]
        state["loop"] = LoopState(
            epoch=int(loop["epoch"]), best_val_loss=float(loop["best_val_loss"]), best_epoch=int(loop["best_epoch"]),
            bad_epochs=int(loop["bad_epochs"]), finished=bool(loop["finished"]),
            history=[EpochRecord(**h) for h in loop["history"]],
        )
        state["config"] = json.loads(state.pop("config_json"))
    except (KeyError, TypeError, ValueError) as exc:  # written by another version or program
        raise CheckpointError(f"{not_state} ({type(exc).__name__}: {str(exc)[:80]}); {fresh}") from exc
    return state


def write_history(folder: Path, loop: LoopState) -> None:
    """Write the per-epoch figures as JSON beside the checkpoints."""
    with atomic_output(folder / HISTORY_FILE, overwrite=True) as tmp:
        tmp.write_text(json.dumps([asdict(h) for h in loop.history], indent=2))
