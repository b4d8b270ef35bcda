"""Training curves as a PNG beside the checkpoints: losses, validation mIoU and learning rate per epoch."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

from fastunet_core.io.atomic import atomic_output
from fastunet_core.train.state import EpochRecord


def plot_history(history: Sequence[EpochRecord], png: Path) -> Path:
    """Draw train/val loss and val mIoU (both definitions) against the epoch, lr on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    with warnings.catch_warnings():  # Debian's mpl_toolkits (system site packages) beside the venv's matplotlib
        warnings.filterwarnings("ignore", message="Unable to import Axes3D")
        from matplotlib import pyplot as plt

    epochs = [h.epoch for h in history]
    fig, (ax_loss, ax_iou) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    ax_loss.plot(epochs, [h.train_loss for h in history], "o-", label="train loss")
    ax_loss.plot(epochs, [h.val_loss for h in history], "s-", label="val loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("JDT loss")
    ax_lr = ax_loss.twinx()
    ax_lr.step(epochs, [h.lr for h in history], "k:", where="post", label="learning rate")
    ax_lr.set_ylabel("learning rate")
    lines = ax_loss.get_legend_handles_labels()
    lr_lines = ax_lr.get_legend_handles_labels()
    ax_loss.legend(lines[0] + lr_lines[0], lines[1] + lr_lines[1], loc="upper right")
    ax_iou.plot(epochs, [h.val_miou for h in history], "o-", label="val mIoU (dataset)")
    ax_iou.plot(epochs, [h.val_paper_miou for h in history], "s--", label="val mIoU (paper: per image)")
    ax_iou.set_xlabel("epoch")
    ax_iou.set_ylabel("mIoU")
    ax_iou.set_ylim(0, 1)
    ax_iou.legend(loc="lower right")
    for ax in (ax_loss, ax_iou):
        ax.grid(alpha=0.3)
        if epochs:
            ax.set_xticks(epochs if len(epochs) <= 20 else epochs[:: max(1, len(epochs) // 10)])
    fig.tight_layout()
    with atomic_output(png, overwrite=True) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return png
