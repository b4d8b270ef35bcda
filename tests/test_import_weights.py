"""``init --weights``: real ``torch.save`` files in the containers other tools write, read weights-only.

File names say nothing about the format (``weights.bin``, ``export``): the reader goes by the first bytes.
Each file holds the weights of a *trained* stand-in (random weights from another seed), so a checkpoint
that silently kept its own initial weights would fail the comparison.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from fastunet_core.cli import cli
from fastunet_core.models.checkpoint import load_checkpoint
from fastunet_core.models.registry import build_model

ARGS = {"widths": [4, 8], "convs": 1}


class _Payload:
    """Unpickling this would create a marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, (f"touch {self.marker}",))


def _source_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(1234)
    return build_model("unet", 3, 2, ARGS).state_dict()


def _containers(state: dict[str, torch.Tensor]) -> dict[str, object]:
    return {
        "bare": state,
        "ddp": {f"module.{k}": v for k, v in state.items()},
        "model_state_dict": {"epoch": 7, "model_state_dict": state, "optimizer_state_dict": {"state": {}},
                              "best_iou": 0.5},
        "lightning": {"epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.4.0",
                      "state_dict": {**{f"model.{k}": v for k, v in state.items()},
                                     "criterion.weight": torch.ones(2)},
                      "optimizer_states": [], "lr_schedulers": [], "hyper_parameters": {"lr": 0.001}},
        "model_key": {"model": state, "epoch": 1},
    }


def _init(weights: Path, out: Path) -> tuple[int, str]:
    import json

    result = CliRunner().invoke(cli, ["init", "unet", "--arch-args", json.dumps(ARGS), "--classes", "2",
                                      "--weights", str(weights), "-o", str(out)])
    return result.exit_code, result.stderr


@pytest.mark.parametrize("kind", ["bare", "ddp", "model_state_dict", "lightning", "model_key"])
def test_init_imports_real_torch_save_files(tmp_path: Path, kind: str) -> None:
    state = _source_state()
    weights = tmp_path / ("export" if kind == "bare" else "weights.bin")  # names say nothing
    torch.save(_containers(state)[kind], weights)
    assert weights.read_bytes()[:4] == b"PK\x03\x04"  # a real zip-format file, as torch.save writes today
    code, err = _init(weights, tmp_path / "m.safetensors")
    assert code == 0, err
    loaded = load_checkpoint(tmp_path / "m.safetensors").model.state_dict()
    assert set(loaded) == set(state)
    for k, v in state.items():
        assert torch.equal(loaded[k], v), k


def test_init_names_missing_and_unexpected_keys(tmp_path: Path) -> None:
    state = _source_state()
    state["extra.head.weight"] = torch.zeros(3)
    del state["head.weight"]
    weights = tmp_path / "w.pth"
    torch.save({"state_dict": state}, weights)
    code, err = _init(weights, tmp_path / "m.safetensors")
    assert code == 1
    assert "missing: head.weight" in err and "unexpected: extra.head.weight" in err, err
    assert not (tmp_path / "m.safetensors").exists()


@pytest.mark.parametrize("kind", ["bare", "ddp", "model_state_dict", "lightning", "model_key"])
def test_pickle_payload_in_any_container_never_runs(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "pwned"
    state: dict[str, object] = dict(_source_state())
    state[next(iter(state))] = _Payload(marker)  # the payload hides where a tensor is expected
    weights = tmp_path / "weights.ckpt"
    torch.save(_containers(state)[kind], weights)  # type: ignore[arg-type]
    code, err = _init(weights, tmp_path / "m.safetensors")
    assert code == 1 and "weights-only" in err, err
    assert not marker.exists(), "the pickle payload was executed"
    assert not (tmp_path / "m.safetensors").exists()
