"""Segmentation metrics accumulated over batches: dataset-level IoU and the paper's per-image IoU.

Two IoU definitions are kept side by side, because they answer different questions:

- **Dataset-level** (the usual one): one confusion matrix over every pixel of every image; per class
  ``IoU = TP / (TP + FP + FN)``. mIoU averages the classes that occur in the targets or the predictions.
- **Per-image, the paper's** (Cai & Zhang): in each image, the IoU of every class present in that image's
  target; a class's IoU is the average over the images in which it is present, and mIoU is the mean over
  classes. False positives of a class in an image whose target lacks it are not counted.

Everything is kept as sums, so the state of several workers adds up (``dist.all_reduce(SUM)`` of
:meth:`SegmentationMetrics.state`) and the state of two halves of a dataset adds up to the whole.

Shapes: predictions and targets ``(B, H, W)`` integer class ids; target pixels equal to ``ignore_index``
are left out (whatever the prediction there).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from fastunet_core.errors import ConfigError
from fastunet_core.hints import current

__all__ = ["MetricsReport", "SegmentationMetrics", "format_table"]


@dataclass(frozen=True)
class MetricsReport:
    """Metrics at one point of training; IoUs are fractions in ``[0, 1]``, NaN where undefined.

    Attributes:
        per_class_iou: Dataset-level IoU per class; NaN for a class in neither targets nor predictions.
        miou: Mean of ``per_class_iou`` over the classes that are not NaN.
        paper_per_class_iou: Per-image IoU averaged over the images whose target holds the class; NaN for
            a class in no target.
        paper_miou: Mean of ``paper_per_class_iou`` over the classes that are not NaN.
        pixel_accuracy: Correct pixels over valid pixels.
        images: Number of images seen.

    """

    per_class_iou: tuple[float, ...]
    miou: float
    paper_per_class_iou: tuple[float, ...]
    paper_miou: float
    pixel_accuracy: float
    images: int = 0

    def as_dict(self) -> dict[str, object]:
        """Return a JSON-ready dict, with None for NaN."""
        def clean(value: object) -> object:
            if isinstance(value, tuple):
                return [clean(v) for v in value]
            return None if isinstance(value, float) and math.isnan(value) else value

        return {key: clean(value) for key, value in asdict(self).items()}


def _nanmean(values: Tensor) -> float:
    """Return the mean of the non-NaN values, NaN when there are none."""
    kept = values[~torch.isnan(values)]
    return float(kept.mean()) if kept.numel() else math.nan


def per_image_confusion(pred: Tensor, target: Tensor, num_classes: int, valid: Tensor) -> Tensor:
    """Return one confusion matrix per image, ``(B, C, C)`` int64, rows = target, columns = prediction.

    Args:
        pred: ``(B, H, W)`` predicted class ids.
        target: ``(B, H, W)`` target class ids.
        num_classes: ``C``.
        valid: ``(B, H, W)`` bool; only these pixels are counted.

    """
    batch = pred.shape[0]
    cc = num_classes * num_classes
    image = torch.arange(batch, device=pred.device).view(-1, *([1] * (pred.dim() - 1))).expand_as(pred)
    index = image * cc + target.long() * num_classes + pred.long()
    counts = torch.bincount(index[valid], minlength=batch * cc)
    return counts.view(batch, num_classes, num_classes)


def confusion_iou(confusion: Tensor) -> Tensor:
    """Return ``TP / (TP + FP + FN)`` per class from ``(..., C, C)`` confusion matrices; NaN where 0 / 0."""
    confusion = confusion.double()
    tp = confusion.diagonal(dim1=-2, dim2=-1)
    union = confusion.sum(-1) + confusion.sum(-2) - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, math.nan))


class SegmentationMetrics:
    """Accumulate the confusion matrix and the paper's per-image IoU sums over batches.

    The accumulators live on the device of the first batch or loaded state (CPU for MPS, which lacks
    float64), so :meth:`state` can be all-reduced with the training backend without copies.

    Example:
        >>> metrics = SegmentationMetrics(num_classes=3)
        >>> metrics.update(torch.tensor([[[0, 1]]]), torch.tensor([[[0, 2]]]))
        >>> round(metrics.compute().pixel_accuracy, 2)
        0.5

    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255, device: torch.device | str = "cpu") -> None:
        """Create empty accumulators.

        Args:
            num_classes: Number of classes ``C`` (labels ``0 .. C-1``).
            ignore_index: Target label of pixels to leave out, or None.
            device: Where the accumulators start; they follow the first batch's device.

        Raises:
            ConfigError: ``num_classes`` is below 1.

        """
        if num_classes < 1:
            raise ConfigError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._device = torch.device(device)
        self._moved = False
        self.reset()

    @property
    def state_size(self) -> int:
        """Length of the flat :meth:`state` tensor: ``C*C + 2*C + 1``."""
        return self.num_classes * self.num_classes + 2 * self.num_classes + 1

    def reset(self) -> None:
        """Forget every batch seen so far."""
        c = self.num_classes
        self.confusion = torch.zeros(c, c, dtype=torch.int64, device=self._device)
        self.paper_sum = torch.zeros(c, dtype=torch.float64, device=self._device)
        self.paper_count = torch.zeros(c, dtype=torch.int64, device=self._device)
        self.images = 0

    def _follow(self, device: torch.device) -> torch.device:
        """Move the accumulators to ``device`` on the first batch; return the device to compute on."""
        if device.type == "mps":
            device = torch.device("cpu")
        if not self._moved and device != self._device:
            self._device = device
            self.confusion = self.confusion.to(device)
            self.paper_sum = self.paper_sum.to(device)
            self.paper_count = self.paper_count.to(device)
        self._moved = True
        return self._device

    def _valid(self, pred: Tensor, target: Tensor) -> Tensor:
        """Return the mask of counted pixels; raise for labels outside the classes."""
        if pred.shape != target.shape or pred.dim() < 2:
            raise ConfigError(f"predictions {tuple(pred.shape)} and targets {tuple(target.shape)} must both be "
                              "(B, H, W)")
        if pred.is_floating_point() or target.is_floating_point():
            raise ConfigError("predictions and targets must be integer class ids (take argmax of the logits first)")
        c = self.num_classes
        valid = torch.ones_like(target, dtype=torch.bool) if self.ignore_index is None else target != self.ignore_index
        bad = (((target < 0) | (target >= c)) & valid) | (((pred < 0) | (pred >= c)) & valid)
        if bool(bad.any()):
            raise ConfigError(f"labels outside the {c} classes 0..{c - 1} that are not ignore_index "
                              f"({self.ignore_index}); check the number of classes or set ignore_index")
        return valid

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of predictions and targets, both ``(B, H, W)`` integer class ids.

        Raises:
            ConfigError: Shapes differ, or a counted pixel holds a label outside ``0 .. C-1``.

        """
        device = self._follow(pred.device)
        pred, target = pred.to(device), target.to(device)
        valid = self._valid(pred, target)
        per_image = per_image_confusion(pred, target, self.num_classes, valid)
        self.confusion += per_image.sum(0)
        iou = confusion_iou(per_image)  # (B, C)
        present = per_image.sum(-1) > 0  # class in the image's target
        self.paper_sum += torch.where(present, iou, torch.zeros_like(iou)).sum(0)
        self.paper_count += present.sum(0)
        self.images += pred.shape[0]

    def compute(self) -> MetricsReport:
        """Return the metrics of everything seen since the last :meth:`reset`."""
        per_class = confusion_iou(self.confusion).cpu()
        count = self.paper_count.cpu()
        paper = torch.where(count > 0, self.paper_sum.cpu() / count.clamp_min(1), torch.full_like(per_class, math.nan))
        total = int(self.confusion.sum())
        accuracy = int(self.confusion.diagonal().sum()) / total if total else math.nan
        return MetricsReport(per_class_iou=tuple(per_class.tolist()), miou=_nanmean(per_class),
                             paper_per_class_iou=tuple(paper.tolist()), paper_miou=_nanmean(paper),
                             pixel_accuracy=accuracy, images=self.images)

    def state(self) -> Tensor:
        """Return every accumulator in one flat float64 tensor (on the accumulators' device).

        Layout: the ``C*C`` confusion matrix (row-major), ``C`` paper IoU sums, ``C`` paper counts, the
        number of images. Counts are exact in float64 up to 2**53. States add: sum them across ranks
        (``dist.all_reduce(state, op=SUM)``) and :meth:`load_state` the result.
        """
        return torch.cat([self.confusion.flatten().double(), self.paper_sum, self.paper_count.double(),
                          torch.tensor([float(self.images)], dtype=torch.float64, device=self._device)])

    def load_state(self, state: Tensor) -> None:
        """Replace the accumulators with a flat tensor from :meth:`state` (possibly summed over ranks).

        Raises:
            ConfigError: The tensor does not have :attr:`state_size` values.

        """
        if state.dim() != 1 or state.numel() != self.state_size:
            raise ConfigError(f"a metrics state for {self.num_classes} classes has {self.state_size} values, "
                              f"got shape {tuple(state.shape)}")
        c = self.num_classes
        self._device = torch.device("cpu") if state.device.type == "mps" else state.device
        self._moved = True
        state = state.to(self._device, torch.float64)
        self.confusion = state[: c * c].round().long().view(c, c).clone()
        self.paper_sum = state[c * c: c * c + c].clone()
        self.paper_count = state[c * c + c: c * c + 2 * c].round().long().clone()
        self.images = round(float(state[-1]))


def _percent(value: float) -> str:
    """Format a fraction as a percentage, ``-`` for NaN."""
    return "-" if math.isnan(value) else f"{100 * value:.2f}"


def format_table(report: MetricsReport, class_names: list[str] | tuple[str, ...] | None = None,
                 aligned: bool | None = None) -> str:
    """Return an aligned per-class table (class, IoU %, paper IoU %) with the means and pixel accuracy.

    Where the front end's text is not fixed-width (QGIS's logs: :attr:`FrontEnd.aligned_tables`), spaces
    cannot align columns: the table is then one line per class, ``background: IoU 97.14 %, paper IoU 97.14 %``.

    Args:
        report: What :meth:`SegmentationMetrics.compute` returned.
        class_names: One name per class; ``class 0``, ``class 1``... when None.
        aligned: Columns aligned with spaces, or one line per class; None: as the current front end shows text.

    Raises:
        ConfigError: The number of names differs from the number of classes.

    """
    n = len(report.per_class_iou)
    names = list(class_names) if class_names is not None else [f"class {i}" for i in range(n)]
    if len(names) != n:
        raise ConfigError(f"{len(names)} class names for {n} classes")
    rows = [(name, _percent(iou), _percent(paper))
            for name, iou, paper in zip(names, report.per_class_iou, report.paper_per_class_iou, strict=True)]
    if not (current().aligned_tables if aligned is None else aligned):
        def unit(value: str) -> str:
            return value if value == "-" else f"{value} %"

        return "\n".join([*(f"{name}: IoU {unit(iou)}, paper IoU {unit(paper)}" for name, iou, paper in rows),
                          f"mIoU {unit(_percent(report.miou))}, paper mIoU {unit(_percent(report.paper_miou))}, "
                          f"pixel accuracy {unit(_percent(report.pixel_accuracy))}"])
    header = ("class", "IoU %", "paper IoU %")
    footer = [("mIoU", _percent(report.miou), _percent(report.paper_miou)),
              ("pixel accuracy", _percent(report.pixel_accuracy), "")]
    width = [max(len(r[i]) for r in [header, *rows, *footer]) for i in range(3)]

    def line(row: tuple[str, str, str]) -> str:
        return f"{row[0]:<{width[0]}}  {row[1]:>{width[1]}}  {row[2]:>{width[2]}}"

    rule = "-" * (sum(width) + 4)
    return "\n".join([line(header), rule, *map(line, rows), rule, *map(line, footer)])
