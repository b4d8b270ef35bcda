"""Held-out check on real LoveDA tiles: a model trained on one tile beats the majority class on another.

Uses the two real LoveDA 1024 x 1024 tiles in ../shared/data/mmseg-remote-sensing-samples (non-commercial:
read in place, never copied into the repository): 0.png for training, 1.png held out. Prints the model's
mIoU and the majority-class baseline's mIoU on the held-out tile, with both metric definitions.

    .venv/bin/python bench/heldout_loveda.py [--epochs 60]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from fastunet_core.train.config import config_from_dict
from fastunet_core.train.datasets import IGNORE_INDEX, DatasetSpec, open_dataset
from fastunet_core.train.evaluate import evaluate_checkpoint
from fastunet_core.train.loop import train
from fastunet_core.train.metrics import MetricsReport, SegmentationMetrics, format_table

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "mmseg-remote-sensing-samples"


def loveda_layout(root: Path) -> Path:
    """Link the two real tiles into LoveDA's folder layout: Train gets 0.png, Val gets 1.png."""
    src = SAMPLES / "pseudo_loveda_dataset"
    for split, name in (("Train", "0.png"), ("Val", "1.png")):
        for kind, folder in (("images_png", "img_dir"), ("masks_png", "ann_dir")):
            d = root / split / "Urban" / kind
            d.mkdir(parents=True, exist_ok=True)
            if not (d / name).exists():
                (d / name).symlink_to(src / folder / name)
    return root


def majority_baseline(spec: DatasetSpec) -> tuple[MetricsReport, list[str]]:
    """Metrics of predicting the training set's most frequent class everywhere on the val split."""
    train_ds, val_ds = open_dataset(spec, "train"), open_dataset(spec, "val")
    counts = np.zeros(len(train_ds.classes), dtype=np.int64)
    for i in range(len(train_ds)):
        m = train_ds[i][1]
        counts += np.bincount(m[m != IGNORE_INDEX].ravel(), minlength=len(counts))
    majority = int(counts.argmax())
    metrics = SegmentationMetrics(len(val_ds.classes), ignore_index=IGNORE_INDEX)
    for i in range(len(val_ds)):
        target = torch.from_numpy(val_ds[i][1])[None]
        metrics.update(torch.full_like(target, majority), target)
    return metrics.compute(), [c.name for c in val_ds.classes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "fastunet-heldout")
    args = parser.parse_args()
    root = loveda_layout(args.workdir / "LoveDA")
    data = {"kind": "loveda", "root": str(root), "tile_size": 256, "loveda_scenes": ["Urban"]}
    cfg = config_from_dict({
        "data": data, "device": "cpu", "output": str(args.workdir / "run"),
        "model": {"architecture": "unet", "args": {"widths": [16, 32, 64, 128], "convs": 2}},
        "optim": {"epochs": args.epochs, "batch_size": 8, "micro_batch": 8, "lr": 0.002, "num_workers": 0,
                  "early_stop_patience": 12, "plateau_patience": 4},
    })
    result = train(cfg, fresh=True)
    model = evaluate_checkpoint(result.best_checkpoint, None, [f"data.{k}={v}" for k, v in data.items()
                                                               if k != "loveda_scenes"] +
                                ["data.loveda_scenes=[Urban]"], "val", device="cpu")
    base, names = majority_baseline(DatasetSpec(kind="loveda", root=root, tile_size=256, loveda_scenes=("Urban",)))
    print(f"trained {len(result.history)} epochs (best {result.best_epoch}) on 0.png; held-out tile 1.png:")
    print("model:\n" + format_table(model.report, names))
    print("majority class:\n" + format_table(base, names))
    print(f"\n| held-out LoveDA tile | mIoU | paper mIoU |\n|---|---|---|\n"
          f"| trained model | {model.report.miou:.3f} | {model.report.paper_miou:.3f} |\n"
          f"| majority class | {base.miou:.3f} | {base.paper_miou:.3f} |")


if __name__ == "__main__":
    main()
