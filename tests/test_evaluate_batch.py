"""``evaluate`` reports the run's own validation loss: the JDT loss sums its counts over a batch, so evaluate
takes the run's validation batch (its micro-batch) unless told otherwise, and says which batch it used."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from cli_helpers import crop_png, run_cli

from fastunet_core.train.evaluate import evaluate_checkpoint


@pytest.fixture(scope="module")
def run(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """A one-epoch run validated in batches of 3 (logical batch 6 = 3 x 2 accumulation steps)."""
    folder = tmp_path_factory.mktemp("evalbatch")
    src = shared_data / "mmseg-remote-sensing-samples" / "pseudo_loveda_dataset"
    for split, name in (("Train", "0.png"), ("Val", "1.png")):  # 16 validation tiles of 64 px
        for kind, sub in (("images_png", "img_dir"), ("masks_png", "ann_dir")):
            crop_png(src / sub / name, folder / "LoveDA" / split / "Urban" / kind / name)
    data = {"kind": "loveda", "root": str(folder / "LoveDA"), "tile_size": 64, "loveda_scenes": "[Urban]"}
    config = folder / "run.yaml"
    config.write_text(yaml.safe_dump({
        "data": {**data, "loveda_scenes": ["Urban"]}, "model": {"architecture": "unet_tiny"}, "device": "cpu",
        "optim": {"epochs": 1, "batch_size": 6, "micro_batch": 3, "num_workers": 0, "max_batches_per_epoch": 1}}))
    code, out = run_cli("-q", "train", "-c", str(config), "--output", str(folder / "run"))
    assert code == 0, out
    return folder / "run", data


def test_evaluate_defaults_to_the_runs_validation_batch(run: tuple[Path, dict[str, object]]) -> None:
    folder, data = run
    val_loss = json.loads((folder / "history.json").read_text())[-1]["val_loss"]
    overrides = [f"data.{k}={v}" for k, v in data.items()]
    own = evaluate_checkpoint(folder / "best.safetensors", None, overrides, "val", device="cpu", num_workers=0)
    assert own.images > 3  # more than one batch, and a last one that is not full
    assert (own.batch_size, own.batch_source) == (3, "the run's")
    assert own.loss == pytest.approx(val_loss, rel=1e-6)
    # the loss depends on the batch: another one gives another number (so the match above means something)
    other = evaluate_checkpoint(folder / "best.safetensors", None, overrides, "val", batch_size=4, device="cpu",
                                num_workers=0)
    assert other.batch_source == "given" and other.loss != pytest.approx(val_loss, rel=1e-4)
    assert other.report.miou == pytest.approx(own.report.miou)  # the IoUs do not depend on it
    code, out = run_cli("evaluate", "-m", str(folder / "best.safetensors"), *overrides, "--workers", "0",
                        "--device", "cpu")
    assert code == 0, out
    assert f"loss {val_loss:.4f} (JDT loss with the run's settings, batches of 3, as in the run's validation)" in out
