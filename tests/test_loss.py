"""JDT loss on hand-built tensors with known answers."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from fastunet_core.errors import ConfigError
from fastunet_core.train.loss import JDTLoss, jdt_scores, soft_counts


def logits_from_probs(probs: list[list[list[float]]]) -> torch.Tensor:
    """Build logits (B, C, 1, W) whose softmax is ``probs`` given as [image][pixel][class]."""
    p = torch.tensor(probs, dtype=torch.float32)  # (B, W, C)
    return p.log().permute(0, 2, 1).unsqueeze(2).contiguous()


def labels(rows: list[list[int]]) -> torch.Tensor:
    """Build hard labels (B, 1, W) from [image][pixel]."""
    return torch.tensor(rows, dtype=torch.int64).unsqueeze(1)


# One image, two pixels, two classes; pixel 0 is class 0, pixel 1 class 1.
# Class 0: p = [0.8, 0.4], y = [1, 0] -> TP 0.8, FP 0.4, FN 0.2.
# Class 1: p = [0.2, 0.6], y = [0, 1] -> TP 0.6, FP 0.2, FN 0.4.
TWO_CLASS_LOGITS = logits_from_probs([[[0.8, 0.2], [0.4, 0.6]]])
TWO_CLASS_LABELS = labels([[0, 1]])
JACCARD = (0.8 / 1.4, 0.6 / 1.2)


def expected_mean(values: tuple[float, ...] | list[float]) -> float:
    return sum(values) / len(values)


def test_counts_and_jaccard_by_hand() -> None:
    p = TWO_CLASS_LOGITS.softmax(1)
    y = torch.nn.functional.one_hot(TWO_CLASS_LABELS, 2).permute(0, 3, 1, 2).float()
    tp, fp, fn = soft_counts(p, y, (0, 2, 3))
    assert torch.allclose(tp, torch.tensor([0.8, 0.6]), atol=1e-6)
    assert torch.allclose(fp, torch.tensor([0.4, 0.2]), atol=1e-6)
    assert torch.allclose(fn, torch.tensor([0.2, 0.4]), atol=1e-6)
    assert torch.allclose(jdt_scores(p, y, 1.0, 1.0, 0.0, (0, 2, 3)), torch.tensor(JACCARD), atol=1e-6)
    loss = JDTLoss(smooth=0)(TWO_CLASS_LOGITS, TWO_CLASS_LABELS)
    assert loss.item() == pytest.approx(1 - expected_mean(JACCARD), abs=1e-6)


def test_dice_setting_by_hand() -> None:
    dice = (0.8 / (0.8 + 0.5 * 0.4 + 0.5 * 0.2), 0.6 / (0.6 + 0.5 * 0.2 + 0.5 * 0.4))  # = 2TP / (2TP + FP + FN)
    loss = JDTLoss(alpha=0.5, beta=0.5, smooth=0)(TWO_CLASS_LOGITS, TWO_CLASS_LABELS)
    assert loss.item() == pytest.approx(1 - expected_mean(dice), abs=1e-6)
    assert dice[0] == pytest.approx(1.6 / 2.2)


def test_tversky_setting_by_hand() -> None:
    tversky = (0.8 / (0.8 + 0.3 * 0.4 + 0.7 * 0.2), 0.6 / (0.6 + 0.3 * 0.2 + 0.7 * 0.4))
    loss = JDTLoss(alpha=0.3, beta=0.7, smooth=0)(TWO_CLASS_LOGITS, TWO_CLASS_LABELS)
    assert loss.item() == pytest.approx(1 - expected_mean(tversky), abs=1e-6)
    swapped = JDTLoss(alpha=0.7, beta=0.3, smooth=0)(TWO_CLASS_LOGITS, TWO_CLASS_LABELS)
    assert swapped.item() != pytest.approx(loss.item(), abs=1e-4)


def test_smooth_enters_numerator_and_denominator() -> None:
    s = 1.0
    smoothed = ((0.8 + s) / (1.4 + s), (0.6 + s) / (1.2 + s))
    loss = JDTLoss(smooth=s)(TWO_CLASS_LOGITS, TWO_CLASS_LABELS)
    assert loss.item() == pytest.approx(1 - expected_mean(smoothed), abs=1e-6)


# Three classes, class 2 absent from the labels.
# Class 0: p = [0.7, 0.3], y = [1, 0] -> 0.7 / 1.3.  Class 1: p = [0.2, 0.6], y = [0, 1] -> 0.6 / 1.2.
# Class 2: p = [0.1, 0.1], y = 0 -> score 0 (smooth 0).
ABSENT_LOGITS = logits_from_probs([[[0.7, 0.2, 0.1], [0.3, 0.6, 0.1]]])
ABSENT_LABELS = labels([[0, 1]])


def test_absent_class_is_left_out_of_the_mean() -> None:
    loss = JDTLoss(smooth=0)(ABSENT_LOGITS, ABSENT_LABELS)
    assert loss.item() == pytest.approx(1 - (0.7 / 1.3 + 0.5) / 2, abs=1e-6)


def test_class_reduction_averages_every_class() -> None:
    loss = JDTLoss(smooth=0, reduction="class")(ABSENT_LOGITS, ABSENT_LABELS)
    assert loss.item() == pytest.approx(1 - (0.7 / 1.3 + 0.5 + 0.0) / 3, abs=1e-6)


def test_ignore_index_masks_prediction_and_label() -> None:
    # A third pixel, labelled 255, predicted confidently as class 2: without masking it would add FP to class 2
    # and FP to the others; with masking the answer is the two-pixel one.
    logits = logits_from_probs([[[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.05, 0.05, 0.9]]])
    loss = JDTLoss(smooth=0)(logits, labels([[0, 1, 255]]))
    assert loss.item() == pytest.approx(1 - (0.7 / 1.3 + 0.5) / 2, abs=1e-6)
    other = JDTLoss(smooth=0, ignore_index=2)(logits, labels([[0, 1, 2]]))
    assert other.item() == pytest.approx(loss.item(), abs=1e-6)
    unmasked = JDTLoss(smooth=0)(logits, labels([[0, 1, 2]]))
    assert unmasked.item() != pytest.approx(loss.item(), abs=1e-3)


def test_ignore_index_none_rejects_label_255() -> None:
    with pytest.raises(ConfigError, match="outside the 3 classes"):
        JDTLoss(ignore_index=None)(ABSENT_LOGITS, labels([[0, 255]]))


def test_all_ignored_gives_zero_loss_with_graph() -> None:
    logits = ABSENT_LOGITS.clone().requires_grad_(True)
    for reduction in ("batch", "image", "class"):
        loss = JDTLoss(reduction=reduction)(logits, labels([[255, 255]]))
        assert loss.item() == 0.0
        assert loss.grad_fn is not None
        (grad,) = torch.autograd.grad(loss, logits)
        assert torch.equal(grad, torch.zeros_like(grad))


def test_soft_labels_loss_is_zero_when_p_equals_y() -> None:
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(2, 4, 5, 6, generator=gen).mul(2).softmax(1)
    logits = y.log()
    for log_loss in (False, True):
        loss = JDTLoss(log_loss=log_loss)(logits, y)
        assert abs(loss.item()) < 1e-6
    shifted = JDTLoss()(logits.roll(1, dims=1), y)
    assert shifted.item() > 0.05


def test_soft_labels_by_hand() -> None:
    # One pixel, y = [0.5, 0.5], p = [0.8, 0.2]; TP is the pixelwise minimum for L1.
    # Class 0: |p| 0.8, |y| 0.5, |p-y| 0.3 -> TP 0.5, FP 0.3, FN 0   -> 0.5 / 0.8
    # Class 1: |p| 0.2, |y| 0.5, |p-y| 0.3 -> TP 0.2, FP 0,   FN 0.3 -> 0.2 / 0.5
    logits = logits_from_probs([[[0.8, 0.2]]])
    y = torch.tensor([0.5, 0.5]).view(1, 2, 1, 1)
    loss = JDTLoss(smooth=0)(logits, y)
    assert loss.item() == pytest.approx(1 - (0.625 + 0.4) / 2, abs=1e-6)


def test_soft_labels_valid_mask_equals_cropping() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 4, 4, generator=gen)
    y = torch.randn(2, 3, 4, 4, generator=gen).softmax(1)
    mask = torch.ones(2, 4, 4, dtype=torch.bool)
    mask[:, :, 2:] = False
    masked = JDTLoss()(logits, y, valid_mask=mask)
    cropped = JDTLoss()(logits[..., :2].contiguous(), y[..., :2].contiguous())
    assert masked.item() == pytest.approx(cropped.item(), abs=1e-6)
    assert JDTLoss()(logits, y).item() != pytest.approx(masked.item(), abs=1e-4)


def plain_soft_jaccard(logits: torch.Tensor, target: torch.Tensor) -> float:
    p = logits.softmax(1)
    losses = []
    for c in range(logits.shape[1]):
        y = (target == c).float()
        if y.sum() == 0:
            continue
        pc = p[:, c]
        losses.append(1 - (pc * y).sum() / (pc + y - pc * y).sum())
    return float(torch.stack(losses).mean())


def test_equals_plain_soft_jaccard_for_hard_labels() -> None:
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 5, 6, 7, generator=gen) * 3
    target = torch.randint(0, 4, (2, 6, 7), generator=gen)  # class 4 absent
    loss = JDTLoss(smooth=0)(logits, target)
    assert loss.item() == pytest.approx(plain_soft_jaccard(logits, target), abs=1e-6)


def test_log_loss_and_gamma_by_hand() -> None:
    log_loss = JDTLoss(smooth=0, log_loss=True)(TWO_CLASS_LOGITS, TWO_CLASS_LABELS)
    assert log_loss.item() == pytest.approx(expected_mean([-math.log(s) for s in JACCARD]), abs=1e-6)
    squared = JDTLoss(smooth=0, gamma=2)(TWO_CLASS_LOGITS, TWO_CLASS_LABELS)
    assert squared.item() == pytest.approx(expected_mean([(1 - s) ** 2 for s in JACCARD]), abs=1e-6)
    both = JDTLoss(smooth=0, gamma=0.5, log_loss=True)(TWO_CLASS_LOGITS, TWO_CLASS_LABELS)
    assert both.item() == pytest.approx(expected_mean([(-math.log(s)) ** 0.5 for s in JACCARD]), abs=1e-6)


def test_class_weights_multiply_per_class_losses() -> None:
    loss = JDTLoss(smooth=0, class_weights=[2.0, 0.5])(TWO_CLASS_LOGITS, TWO_CLASS_LABELS)
    assert loss.item() == pytest.approx((2.0 * (1 - JACCARD[0]) + 0.5 * (1 - JACCARD[1])) / 2, abs=1e-6)
    with pytest.raises(ConfigError, match="3 values for 2 classes"):
        JDTLoss(class_weights=[1.0, 1.0, 1.0])(TWO_CLASS_LOGITS, TWO_CLASS_LABELS)


def test_image_and_batch_reductions_differ_by_hand() -> None:
    # Image A: pixel 0 class 0 with p = [0.9, 0.1]; pixel 1 ignored. Image B: classes [0, 1], p [0.5, 0.5], [0.2, 0.8].
    logits = logits_from_probs([[[0.9, 0.1], [0.5, 0.5]], [[0.5, 0.5], [0.2, 0.8]]])
    target = labels([[0, 255], [0, 1]])
    # Per image: A class 0 -> 0.9 / 1.0 (class 1 absent in A); B class 0 -> 0.5 / 1.2, class 1 -> 0.8 / 1.5.
    image = JDTLoss(smooth=0, reduction="image")(logits, target)
    assert image.item() == pytest.approx(1 - (0.9 + 0.5 / 1.2 + 0.8 / 1.5) / 3, abs=1e-6)
    # Whole batch: class 0 p [0.9, 0.5, 0.2], y [1, 1, 0] -> 1.4 / 2.2; class 1 p [0.1, 0.5, 0.8] -> 0.8 / 1.6.
    batch = JDTLoss(smooth=0, reduction="batch")(logits, target)
    assert batch.item() == pytest.approx(1 - (1.4 / 2.2 + 0.5) / 2, abs=1e-6)
    assert abs(image.item() - batch.item()) > 0.04


def test_float32_under_bf16_autocast() -> None:
    gen = torch.Generator().manual_seed(3)
    logits = (torch.randn(2, 3, 8, 8, generator=gen) * 4).to(torch.bfloat16)
    target = torch.randint(0, 3, (2, 8, 8), generator=gen)
    expected = JDTLoss()(logits.float(), target)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = JDTLoss()(logits, target)
        conv = torch.nn.Conv2d(3, 3, 1)
        from_conv = JDTLoss()(conv(logits.float()), target)
    assert loss.dtype == torch.float32
    assert from_conv.dtype == torch.float32
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)


def test_gradient_flows_and_loss_falls() -> None:
    gen = torch.Generator().manual_seed(4)
    target = torch.randint(0, 3, (2, 6, 6), generator=gen)
    target[0, 0, :3] = 255
    logits = torch.zeros(2, 3, 6, 6, requires_grad=True)
    optimiser = torch.optim.SGD([logits], lr=100.0)
    loss_fn = JDTLoss()
    history = []
    for _ in range(15):
        optimiser.zero_grad()
        loss = loss_fn(logits, target)
        loss.backward()
        assert logits.grad is not None and torch.isfinite(logits.grad).all()
        assert logits.grad.abs().sum() > 0
        history.append(loss.item())
        optimiser.step()
    assert torch.equal(logits.grad[0, :, 0, :3], torch.zeros(3, 3))  # ignored pixels get no gradient
    assert history[-1] < 0.2 * history[0]
    assert all(b <= a + 1e-6 for a, b in itertools.pairwise(history))


@pytest.mark.parametrize("kwargs", [{"reduction": "pixel"}, {"gamma": 0}, {"alpha": -1}, {"alpha": 0, "beta": 0},
                                    {"smooth": float("nan")}, {"class_weights": [1.0, -1.0]}, {"threshold": 1.0}])
def test_bad_settings_raise_config_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        JDTLoss(**kwargs)  # type: ignore[arg-type]


def test_shape_mismatch_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="hard labels must have shape"):
        JDTLoss()(torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 4, dtype=torch.int64))
    with pytest.raises(ConfigError, match="soft labels must have"):
        JDTLoss()(torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 3, 3))
