"""PyTorch files that are refused (a training state or weights carrying code, a truncated one) say why in one
line of our own: never PyTorch's paragraphs advising ``weights_only=False``, never its protocol warning.
The payloads are real ``__reduce__`` pickles; that they never run is checked by a marker file.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from cli_helpers import run_cli

from fastunet_core.errors import CheckpointError, UnsafeCheckpointError
from fastunet_core.models.checkpoint import read_torch_file

TORCH_PROSE = ("weights_only", "PyTorch 2.6", "arbitrary code", "miniz", "high likelihood", "Detected pickle")


class _Payload:
    """Unpickling this creates ``marker``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def trained_run(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A finished one-epoch run folder and its config (tiny: seconds on a CPU)."""
    folder = tmp_path_factory.mktemp("run")
    config = folder / "run.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"kind": "landcoverai", "root": str(shared_data / "torchgeo-fixtures" / "landcoverai"),
                 "tile_size": 32},
        "model": {"architecture": "unet_tiny"}, "device": "cpu",
        "optim": {"epochs": 1, "batch_size": 2, "micro_batch": 2, "num_workers": 0, "max_batches_per_epoch": 1}}))
    code, out = run_cli("-q", "train", "-c", str(config), "--output", str(folder / "run"))
    assert code == 0, out
    return config, folder / "run"


def _resume(config: Path, run: Path) -> tuple[int, str]:
    return run_cli("-q", "train", "-c", str(config), "--output", str(run), "optim.epochs=2")


def _one_line(out: str) -> str:
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1, out
    assert not any(words in lines[0] for words in TORCH_PROSE), lines[0]
    return lines[0]


def test_a_training_state_carrying_code_is_refused_in_our_words(trained_run: tuple[Path, Path],
                                                                tmp_path: Path) -> None:
    config, run = trained_run
    state = run / "last_state.pt"
    good = state.read_bytes()
    marker = tmp_path / "pwned"
    try:
        torch.save({"loop": _Payload(marker), "model": {}}, state)
        code, out = _resume(config, run)
        assert code == 1
        assert _one_line(out) == (f"error: cannot resume: {state} holds objects other than tensors and plain values, "
                                  "which the weights-only reader refuses: it may contain code, so it is not loaded; "
                                  "start afresh with --fresh")
        assert not marker.exists(), "the pickle payload was executed"
        state.write_bytes(good[: len(good) // 2])  # cut short: a full disk, a copy that stopped
        code, out = _resume(config, run)
        assert code == 1
        assert _one_line(out).startswith(f"error: cannot resume: {state} is damaged (truncated, or not a whole "
                                         "PyTorch file), so it cannot be read")
        torch.save({"model.weight": torch.zeros(2)}, state)  # plain weights, not a training state
        code, out = _resume(config, run)
        assert code == 1
        assert _one_line(out).startswith(f"error: cannot resume: {state} is not a fastunet-geo training state (no ")
    finally:
        state.write_bytes(good)
    code, out = _resume(config, run)  # the real state still resumes
    assert code == 0, out


def test_weights_as_a_raw_pickle_are_refused_without_torchs_warning(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    raw = tmp_path / "evil_raw.pt"
    raw.write_bytes(pickle.dumps({"w": _Payload(marker)}, protocol=4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(UnsafeCheckpointError, match=r"it may contain code, so it is not loaded$"):
            read_torch_file(raw)
    assert [str(w.message) for w in caught] == []  # was: "Detected pickle protocol 4 in the checkpoint ..."
    code, out = run_cli("init", "unet_tiny", "--classes", "2", "--weights", str(raw), "-o",
                        str(tmp_path / "m.safetensors"))
    assert code == 1 and _one_line(out).endswith("it may contain code, so it is not loaded"), out
    assert not marker.exists(), "the pickle payload was executed"


def test_truncated_weights_are_damaged_not_code(tmp_path: Path) -> None:
    weights = tmp_path / "w.pt"
    torch.save({"w": torch.zeros(256, 256)}, weights)
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"is damaged \(truncated, or not a whole PyTorch file\)") as info:
        read_torch_file(weights)
    assert not isinstance(info.value, UnsafeCheckpointError)
    code, out = run_cli("init", "unet_tiny", "--classes", "2", "--weights", str(weights), "-o",
                        str(tmp_path / "m.safetensors"))
    assert code == 1 and "is damaged" in _one_line(out), out
