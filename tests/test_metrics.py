"""Segmentation metrics on hand-built predictions and targets with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from fastunet_core.errors import ConfigError
from fastunet_core.train.metrics import MetricsReport, SegmentationMetrics, format_table


def t(rows: list[list[list[int]]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.int64)


def test_confusion_matrix_iou_by_hand() -> None:
    target = t([[[0, 0, 1], [1, 2, 2]]])
    pred = t([[[0, 1, 1], [1, 2, 0]]])
    metrics = SegmentationMetrics(3)
    metrics.update(pred, target)
    # rows = target, columns = prediction
    assert metrics.confusion.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    report = metrics.compute()
    assert report.per_class_iou == pytest.approx((1 / 3, 2 / 3, 1 / 2))
    assert report.miou == pytest.approx(0.5)
    assert report.pixel_accuracy == pytest.approx(4 / 6)
    assert report.images == 1
    # One image: the paper's metric is the same as the dataset-level one.
    assert report.paper_per_class_iou == pytest.approx(report.per_class_iou)


def test_paper_metric_differs_from_dataset_level() -> None:
    # Image A: all class 0, one pixel wrongly predicted as class 1 (class 1 absent from A's target).
    # Image B: perfect, classes 0 and 1.
    target = t([[[0, 0, 0, 0]], [[1, 1, 0, 0]]])
    pred = t([[[0, 0, 0, 1]], [[1, 1, 0, 0]]])
    metrics = SegmentationMetrics(2)
    metrics.update(pred, target)
    report = metrics.compute()
    # Dataset level: class 0 TP 5, FN 1 -> 5/6; class 1 TP 2, FP 1 -> 2/3.
    assert report.per_class_iou == pytest.approx((5 / 6, 2 / 3))
    assert report.miou == pytest.approx(0.75)
    # Paper: class 0 in A 3/4, in B 1 -> 7/8; class 1 only in B -> 1 (A's false positive is not counted).
    assert report.paper_per_class_iou == pytest.approx((7 / 8, 1.0))
    assert report.paper_miou == pytest.approx(15 / 16)
    assert report.pixel_accuracy == pytest.approx(7 / 8)


def test_batches_accumulate_like_one_batch() -> None:
    target = t([[[0, 0, 0, 0]], [[1, 1, 0, 0]]])
    pred = t([[[0, 0, 0, 1]], [[1, 1, 0, 0]]])
    whole, split = SegmentationMetrics(2), SegmentationMetrics(2)
    whole.update(pred, target)
    split.update(pred[:1], target[:1])
    split.update(pred[1:], target[1:])
    assert split.compute() == whole.compute()


def test_ignore_index_leaves_pixels_out() -> None:
    target = t([[[0, 1, 255, 255]]])
    pred = t([[[0, 0, 1, 0]]])
    metrics = SegmentationMetrics(2)
    metrics.update(pred, target)
    report = metrics.compute()
    assert int(metrics.confusion.sum()) == 2
    assert report.per_class_iou == pytest.approx((1 / 2, 0.0))
    assert report.pixel_accuracy == pytest.approx(1 / 2)
    cropped = SegmentationMetrics(2)
    cropped.update(pred[..., :2], target[..., :2])
    assert cropped.compute() == report


def test_custom_ignore_index_and_out_of_range_labels() -> None:
    metrics = SegmentationMetrics(2, ignore_index=None)
    with pytest.raises(ConfigError, match="outside the 2 classes"):
        metrics.update(t([[[0, 1]]]), t([[[0, 255]]]))
    with pytest.raises(ConfigError, match="outside the 2 classes"):
        SegmentationMetrics(2).update(t([[[0, 2]]]), t([[[0, 1]]]))
    zero_ignored = SegmentationMetrics(2, ignore_index=0)
    zero_ignored.update(t([[[1, 1]]]), t([[[0, 1]]]))
    assert zero_ignored.compute().pixel_accuracy == 1.0


def test_never_present_classes_are_nan_and_left_out_of_means() -> None:
    target = t([[[0, 0, 1, 1]]])
    pred = t([[[0, 2, 1, 1]]])  # class 2 predicted once, never in a target; class 3 nowhere
    metrics = SegmentationMetrics(4)
    metrics.update(pred, target)
    report = metrics.compute()
    assert report.per_class_iou[:3] == pytest.approx((1 / 2, 1.0, 0.0))
    assert math.isnan(report.per_class_iou[3])
    assert report.miou == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert report.paper_per_class_iou[:2] == pytest.approx((1 / 2, 1.0))
    assert math.isnan(report.paper_per_class_iou[2]) and math.isnan(report.paper_per_class_iou[3])
    assert report.paper_miou == pytest.approx(0.75)
    assert report.as_dict()["per_class_iou"] == [pytest.approx(0.5), 1.0, 0.0, None]


def test_empty_metrics_are_nan() -> None:
    report = SegmentationMetrics(2).compute()
    assert all(math.isnan(v) for v in (*report.per_class_iou, report.miou, report.paper_miou, report.pixel_accuracy))


def random_batch(seed: int, batch: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    target = torch.randint(0, 4, (batch, 8, 8), generator=gen)
    target[target == 3] = 255
    pred = torch.randint(0, 4, (batch, 8, 8), generator=gen)
    return pred, target


def test_state_round_trip() -> None:
    pred, target = random_batch(0)
    metrics = SegmentationMetrics(4)
    metrics.update(pred, target)
    state = metrics.state()
    assert state.dtype == torch.float64 and state.shape == (metrics.state_size,)
    restored = SegmentationMetrics(4)
    restored.load_state(state)
    assert restored.compute().as_dict() == metrics.compute().as_dict()  # as_dict: NaN -> None, comparable
    assert torch.equal(restored.state(), state)


def test_states_of_two_halves_add_up_to_the_whole() -> None:
    pred, target = random_batch(1, batch=6)
    whole, first, second = SegmentationMetrics(4), SegmentationMetrics(4), SegmentationMetrics(4)
    whole.update(pred, target)
    first.update(pred[:2], target[:2])
    second.update(pred[2:], target[2:])
    summed = first.state() + second.state()  # what dist.all_reduce(SUM) does across two ranks
    assert torch.allclose(summed, whole.state(), rtol=0, atol=1e-12)
    merged = SegmentationMetrics(4)
    merged.load_state(summed)
    merged_report, whole_report = merged.compute(), whole.compute()
    assert merged_report.per_class_iou == whole_report.per_class_iou
    assert merged_report.paper_per_class_iou == pytest.approx(whole_report.paper_per_class_iou, abs=1e-12,
                                                              nan_ok=True)
    assert merged_report.images == 6


def test_load_state_rejects_wrong_size_and_reset_clears() -> None:
    metrics = SegmentationMetrics(4)
    with pytest.raises(ConfigError, match="has 25 values"):
        metrics.load_state(torch.zeros(10, dtype=torch.float64))
    metrics.update(*random_batch(2))
    metrics.reset()
    assert torch.equal(metrics.state(), torch.zeros(metrics.state_size, dtype=torch.float64))


def test_format_table_is_aligned_with_means() -> None:
    report = MetricsReport(per_class_iou=(0.5, 1.0, math.nan), miou=0.75, paper_per_class_iou=(0.875, 1.0, math.nan),
                           paper_miou=0.9375, pixel_accuracy=0.875)
    table = format_table(report, ["background", "building", "water"])
    lines = table.splitlines()
    assert lines[0].split() == ["class", "IoU", "%", "paper", "IoU", "%"]
    assert lines[2].split() == ["background", "50.00", "87.50"]
    assert lines[4].split() == ["water", "-", "-"]
    assert lines[6].split() == ["mIoU", "75.00", "93.75"]
    assert lines[7].split() == ["pixel", "accuracy", "87.50"]
    assert len({len(line) for line in lines if line.strip() and not line.startswith("pixel")}) == 1
    assert format_table(report, ["a", "b", "c"]).splitlines()[2].startswith("a ")
    with pytest.raises(ConfigError, match="2 class names for 3 classes"):
        format_table(report, ["a", "b"])


def test_format_table_is_one_line_per_class_where_spaces_do_not_align() -> None:
    """QGIS's logs (HTML, proportional fonts) collapse runs of spaces: there each class gets its own line."""
    from fastunet_core.hints import speaking
    from qgis_plugin.words import QGIS

    report = MetricsReport(per_class_iou=(0.5, 1.0, math.nan), miou=0.75, paper_per_class_iou=(0.875, 1.0, math.nan),
                           paper_miou=0.9375, pixel_accuracy=0.875)
    with speaking(QGIS):
        lines = format_table(report, ["background", "building", "water"]).splitlines()
    assert lines == ["background: IoU 50.00 %, paper IoU 87.50 %", "building: IoU 100.00 %, paper IoU 100.00 %",
                     "water: IoU -, paper IoU -", "mIoU 75.00 %, paper mIoU 93.75 %, pixel accuracy 87.50 %"]
    assert format_table(report, ["a", "b", "c"]).splitlines()[0].split() == ["class", "IoU", "%", "paper", "IoU", "%"]
