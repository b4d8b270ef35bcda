"""A small plot of the training curves, drawn with QPainter (QGIS's Python need not have matplotlib).

Two panels, one above the other so they fit a narrow dock: the training and validation loss, and the
validation mIoU (0..1), against the epoch. The x axis spans the planned epochs, so the curves grow from the
left as the run goes. :meth:`CurvePlot.set_history` takes every finished epoch's figures each time.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

from qgis.PyQt.QtCore import QPointF, QRectF, QSize, Qt
from qgis.PyQt.QtGui import QColor, QFontMetrics, QPainter, QPaintEvent, QPalette, QPen
from qgis.PyQt.QtWidgets import QSizePolicy, QWidget

TRAIN_COLOUR = QColor("#1f77b4")
VAL_COLOUR = QColor("#ff7f0e")
MIOU_COLOUR = QColor("#2ca02c")
EMPTY_TEXT = "The curves appear here as epochs finish."


class CurvePlot(QWidget):
    """Train/val loss and val mIoU per epoch."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.points: list[dict[str, float]] = []  # epoch, train_loss, val_loss, val_miou (see train_task)
        self.planned = 1  # epochs the run will have at most (the x axis)
        self.setMinimumSize(180, 170)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("Training curves: loss on the training tiles (blue) and on the validation strip "
                        "(orange), and the validation mIoU (green, 0 to 1), one point per finished epoch")

    def sizeHint(self) -> QSize:
        """Fit the dock's default width."""
        return QSize(260, 170)

    def clear(self, planned: int = 1) -> None:
        """Forget the curves; the next run has ``planned`` epochs."""
        self.points = []
        self.planned = max(1, planned)
        self.update()

    def set_history(self, records: Sequence[Mapping[str, float]]) -> None:
        """Show every finished epoch (the run's whole history so far)."""
        self.points = [dict(r) for r in records]
        self.update()

    # -- drawing --
    def paintEvent(self, event: QPaintEvent) -> None:
        """Draw both panels, or a hint while there is nothing to draw."""
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        text = self.palette().color(QPalette.ColorRole.WindowText)
        painter.setPen(text)
        whole = QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5)
        if not self.points:
            painter.drawText(whole, int(Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap), EMPTY_TEXT)
            painter.end()
            return
        half = whole.height() * 0.55
        top = QRectF(whole.left(), whole.top(), whole.width(), half)
        bottom = QRectF(whole.left(), whole.top() + half, whole.width(), whole.height() - half)
        losses = [p[k] for p in self.points for k in ("train_loss", "val_loss")]
        lo, hi = min(losses), max(losses)
        pad = (hi - lo) * 0.1 or max(abs(hi) * 0.1, 1e-3)
        self._panel(painter, top, (lo - pad, hi + pad), [("train loss", "train_loss", TRAIN_COLOUR),
                                                         ("val loss", "val_loss", VAL_COLOUR)], text, False)
        self._panel(painter, bottom, (0.0, 1.0), [("val mIoU", "val_miou", MIOU_COLOUR)], text, True)
        painter.end()

    def _panel(self, painter: QPainter, box: QRectF, y_range: tuple[float, float],
               series: list[tuple[str, str, QColor]], text: QColor, x_labels: bool) -> None:
        metrics = QFontMetrics(painter.font())
        line = metrics.height()
        plot = box.adjusted(metrics.horizontalAdvance("0.000") + 6, line + 2, -8, -(line + 2 if x_labels else 4))
        grid = QColor(text)
        grid.setAlpha(60)
        painter.setPen(QPen(grid, 1))
        painter.drawRect(plot)
        # legend above the panel
        x = plot.left()
        for label, _key, colour in series:
            painter.fillRect(QRectF(x, box.top() + line / 2 - 3, 10, 6), colour)
            painter.setPen(text)
            painter.drawText(QPointF(x + 13, box.top() + line - 3), label)
            x += 13 + metrics.horizontalAdvance(label) + 10
        # y labels: the range's ends
        y0, y1 = y_range
        painter.setPen(text)
        for value, y in ((y1, plot.top() + line * 0.7), (y0, plot.bottom())):
            painter.drawText(QRectF(box.left(), y - line, plot.left() - box.left() - 4, line),
                             int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter), f"{value:.3g}")
        last = max(self.planned, int(max(p["epoch"] for p in self.points)))
        if x_labels:
            for epoch, align in ((1, Qt.AlignmentFlag.AlignLeft), (last, Qt.AlignmentFlag.AlignRight)):
                painter.drawText(QRectF(plot.left(), plot.bottom() + 2, plot.width(), line), int(align),
                                 "epoch 1" if epoch == 1 else str(epoch))

        def at(epoch: float, value: float) -> QPointF:
            fx = (epoch - 1) / (last - 1) if last > 1 else 0.5
            fy = (value - y0) / (y1 - y0) if y1 > y0 else 0.5
            return QPointF(plot.left() + fx * plot.width(), plot.bottom() - min(max(fy, 0.0), 1.0) * plot.height())

        for _label, key, colour in series:
            points = [at(p["epoch"], p[key]) for p in self.points]
            painter.setPen(QPen(colour, 2))
            for a, b in itertools.pairwise(points):
                painter.drawLine(a, b)
            painter.setBrush(colour)
            for point in points:
                painter.drawEllipse(point, 2.5, 2.5)
            painter.setBrush(Qt.BrushStyle.NoBrush)
