"""JDT losses: the Jaccard metric loss and its Dice and Tversky relatives, on hard or soft labels.

Wang, Ning & Blaschko, "Jaccard Metric Losses: Optimizing the Jaccard Index with Soft Labels"
(arXiv 2302.05666). With ``p`` the softmax probabilities and ``y`` the labels (one-hot or soft), the
per-class counts use L1 sums over the pixels::

    TP = (|p| + |y| - |p - y|) / 2        FP = |p| - TP        FN = |y| - TP
    score = (TP + smooth) / (TP + alpha * FP + beta * FN + smooth)

``alpha = beta = 1`` is the Jaccard metric loss, ``0.5`` the Dice metric loss, other values Tversky.
For one-hot labels ``TP = sum(p * y)``, so the Jaccard setting equals the plain soft Jaccard loss; unlike
it, the score reaches 1 exactly when ``p == y`` for soft labels too.

Tensor shapes (``*S`` is the spatial shape, ``(H, W)`` for images):

- logits: ``(B, C, *S)`` float, any dtype; the loss is always computed in float32, autocast off.
- hard labels: ``(B, *S)`` integer class ids in ``[0, C)``, or ``ignore_index``.
- soft labels: ``(B, C, *S)`` float, one distribution over the classes per pixel.
- valid_mask (optional): ``(B, *S)`` bool, False for pixels to leave out.

The functions here are pure tensor math; :class:`JDTLoss` only holds the settings.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from fastunet_core.errors import ConfigError

BATCH_REDUCTION = "batch"
"""Sum TP/FP/FN over the whole batch, then average the losses of the classes present in the batch."""
IMAGE_REDUCTION = "image"
"""Score each image on its own, then average over the (image, class) pairs where the class is present."""
CLASS_REDUCTION = "class"
"""Sum TP/FP/FN over the whole batch, then average over all classes, present or not."""
REDUCTIONS = (BATCH_REDUCTION, IMAGE_REDUCTION, CLASS_REDUCTION)

PRESENCE_THRESHOLD = 0.01
"""A class is present where its label reaches above this value on at least one pixel."""

__all__ = [
    "BATCH_REDUCTION",
    "CLASS_REDUCTION",
    "IMAGE_REDUCTION",
    "PRESENCE_THRESHOLD",
    "REDUCTIONS",
    "JDTLoss",
    "hard_label_targets",
    "jdt_loss",
    "jdt_scores",
    "present_classes",
    "reduce_class_losses",
    "score_losses",
    "soft_counts",
]


def soft_counts(p: Tensor, y: Tensor, dims: tuple[int, ...]) -> tuple[Tensor, Tensor, Tensor]:
    """Return the soft true positives, false positives and false negatives per class.

    Args:
        p: Probabilities, ``(B, C, *S)``.
        y: Labels of the same shape (one-hot or soft), zero where a pixel is left out.
        dims: The dimensions to sum over: ``(0, 2, 3)`` for the batch, ``(2, 3)`` per image.

    Returns:
        ``(tp, fp, fn)``, each of the shape left after summing (``(C,)`` or ``(B, C)``), never negative.

    """
    p_card = p.abs().sum(dims)
    y_card = y.abs().sum(dims)
    diff_card = (p - y).abs().sum(dims)
    tp = ((p_card + y_card - diff_card) / 2).clamp_min(0)  # clamps only float rounding
    return tp, (p_card - tp).clamp_min(0), (y_card - tp).clamp_min(0)


def jdt_scores(p: Tensor, y: Tensor, alpha: float, beta: float, smooth: float, dims: tuple[int, ...]) -> Tensor:
    """Return the Tversky-family score ``(TP + smooth) / (TP + alpha FP + beta FN + smooth)`` per class.

    Args:
        p: Probabilities, ``(B, C, *S)``.
        y: Labels of the same shape.
        alpha: Weight of the false positives (1 Jaccard, 0.5 Dice).
        beta: Weight of the false negatives (1 Jaccard, 0.5 Dice).
        smooth: Added to numerator and denominator; with 0 an empty class divides 0 by 0.
        dims: The dimensions to sum over (see :func:`soft_counts`).

    Returns:
        Scores in ``[0, 1]``, shape ``(C,)`` or ``(B, C)``.

    """
    tp, fp, fn = soft_counts(p, y, dims)
    return (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)


def present_classes(y: Tensor, dims: tuple[int, ...], threshold: float = PRESENCE_THRESHOLD) -> Tensor:
    """Return where a class is present: its label maximum over ``dims`` is above ``threshold``.

    Args:
        y: Labels ``(B, C, *S)``, zero where a pixel is left out.
        dims: The dimensions to reduce, as for :func:`soft_counts`.
        threshold: Presence threshold on the label maximum.

    Returns:
        Bool tensor of shape ``(C,)`` or ``(B, C)``.

    """
    return y.amax(dim=dims) > threshold


def score_losses(scores: Tensor, log_loss: bool = False, gamma: float = 1.0) -> Tensor:
    """Turn scores into per-class losses: ``(1 - score) ** gamma`` or ``(-log(score)) ** gamma``."""
    losses = -torch.log(scores) if log_loss else 1 - scores
    return losses if gamma == 1 else losses.clamp_min(0) ** gamma


def reduce_class_losses(losses: Tensor, present: Tensor | None, class_weights: Tensor | None = None) -> Tensor:
    """Average weighted per-class losses over the present entries (all entries when ``present`` is None).

    Args:
        losses: Per-class losses, ``(C,)`` or ``(B, C)``.
        present: Bool mask of the same shape, or None to average over everything.
        class_weights: Optional ``(C,)`` weights multiplied into the losses before averaging (the mean
            still divides by the number of entries, not by the sum of the weights).

    Returns:
        A scalar; 0 (still attached to the graph) when nothing is present.

    """
    if class_weights is not None:
        losses = losses * class_weights
    if present is None:
        return losses.mean()
    total = torch.where(present, losses, torch.zeros_like(losses)).sum()
    return total / present.sum().clamp_min(1)


def hard_label_targets(labels: Tensor, num_classes: int, ignore_index: int | None = 255,
                       valid_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Return one-hot float32 targets and the mask of valid pixels for hard labels.

    Args:
        labels: Class ids ``(B, *S)``, integer.
        num_classes: ``C``.
        ignore_index: Label of pixels to leave out, or None.
        valid_mask: Optional bool ``(B, *S)``; False leaves a pixel out too.

    Returns:
        ``(y, valid)``: ``y`` of shape ``(B, C, *S)``, zero on left-out pixels; ``valid`` ``(B, *S)`` bool.

    Raises:
        ConfigError: A kept pixel has a label outside ``[0, C)``.

    """
    valid = torch.ones_like(labels, dtype=torch.bool) if ignore_index is None else labels != ignore_index
    if valid_mask is not None:
        valid = valid & valid_mask.to(device=labels.device, dtype=torch.bool)
    if bool((((labels < 0) | (labels >= num_classes)) & valid).any()):
        bad = torch.unique(labels[valid & ((labels < 0) | (labels >= num_classes))])[:5].tolist()
        raise ConfigError(f"labels {bad} are outside the {num_classes} classes 0..{num_classes - 1} and are not "
                          f"ignore_index ({ignore_index}); check the number of classes or set ignore_index")
    classes = torch.arange(num_classes, device=labels.device).view(1, num_classes, *([1] * (labels.dim() - 1)))
    y = (labels.unsqueeze(1) == classes) & valid.unsqueeze(1)
    return y.float(), valid


def _autocast_off(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """Return a context that disables autocast on ``device`` (a no-op where autocast is not on)."""
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def _targets(logits: Tensor, labels: Tensor, ignore_index: int | None,
             valid_mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Return float32 targets ``(B, C, *S)`` (zero on left-out pixels) and the valid mask, if any."""
    num_classes = logits.shape[1]
    if not labels.is_floating_point():
        if labels.shape != logits.shape[:1] + logits.shape[2:]:
            raise ConfigError(f"hard labels must have shape {tuple(logits.shape[:1] + logits.shape[2:])} "
                              f"(logits without the class axis), got {tuple(labels.shape)}")
        return hard_label_targets(labels, num_classes, ignore_index, valid_mask)
    if labels.shape != logits.shape:
        raise ConfigError(f"soft labels must have the logits' shape {tuple(logits.shape)}, got {tuple(labels.shape)}")
    y = labels.float()
    if valid_mask is None:
        return y, None
    valid = valid_mask.to(device=y.device, dtype=torch.bool)
    return y * valid.unsqueeze(1), valid


def jdt_loss(logits: Tensor, labels: Tensor, *, alpha: float = 1.0, beta: float = 1.0, gamma: float = 1.0,
             smooth: float = 1e-3, log_loss: bool = False, reduction: str = BATCH_REDUCTION,
             ignore_index: int | None = 255, class_weights: Tensor | None = None,
             valid_mask: Tensor | None = None, threshold: float = PRESENCE_THRESHOLD) -> Tensor:
    """Compute the JDT loss of ``logits`` against hard or soft ``labels`` (see the module docstring).

    Args:
        logits: ``(B, C, *S)`` raw scores.
        labels: Hard ``(B, *S)`` integer labels or soft ``(B, C, *S)`` float labels.
        alpha: False-positive weight.
        beta: False-negative weight.
        gamma: Power applied to each per-class loss.
        smooth: Smoothing term of the score.
        log_loss: Use ``-log(score)`` instead of ``1 - score``.
        reduction: One of :data:`REDUCTIONS`.
        ignore_index: Hard label of pixels to leave out (not used with soft labels), or None.
        class_weights: Optional ``(C,)`` weights of the per-class losses.
        valid_mask: Optional bool ``(B, *S)``, False for pixels to leave out.
        threshold: Presence threshold on the label maximum.

    Returns:
        A float32 scalar.

    """
    if reduction not in REDUCTIONS:
        raise ConfigError(f"unknown reduction {reduction!r}; choose one of {', '.join(REDUCTIONS)}")
    if logits.dim() < 3:
        raise ConfigError(f"logits must have shape (B, C, H, W), got {tuple(logits.shape)}")
    if class_weights is not None and class_weights.shape != (logits.shape[1],):
        raise ConfigError(f"class_weights has {class_weights.numel()} values for {logits.shape[1]} classes")
    with _autocast_off(logits.device):
        p = logits.float().log_softmax(dim=1).exp()
        y, valid = _targets(logits, labels, ignore_index, valid_mask)
        if valid is not None:
            p = p * valid.unsqueeze(1)
        spatial = tuple(range(2, logits.dim()))
        dims = spatial if reduction == IMAGE_REDUCTION else (0, *spatial)
        scores = jdt_scores(p, y, alpha, beta, smooth, dims)
        losses = score_losses(scores, log_loss, gamma)
        present = None if reduction == CLASS_REDUCTION else present_classes(y, dims, threshold)
        weights = None if class_weights is None else class_weights.to(device=losses.device, dtype=torch.float32)
        return reduce_class_losses(losses, present, weights)


def _check_settings(alpha: float, beta: float, gamma: float, smooth: float, reduction: str,
                    threshold: float) -> None:
    """Raise :class:`ConfigError` for settings outside their valid ranges."""
    for name, value in (("alpha", alpha), ("beta", beta), ("smooth", smooth)):
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"{name} must be a finite number >= 0, got {value}")
    if alpha == 0 and beta == 0:
        raise ConfigError("alpha and beta cannot both be 0 (the score would always be 1)")
    if not (math.isfinite(gamma) and gamma > 0):
        raise ConfigError(f"gamma must be a finite number > 0, got {gamma}")
    if reduction not in REDUCTIONS:
        raise ConfigError(f"unknown reduction {reduction!r}; choose one of {', '.join(REDUCTIONS)}")
    if not 0 <= threshold < 1:
        raise ConfigError(f"threshold must be in [0, 1), got {threshold}")


class JDTLoss(nn.Module):
    """Jaccard / Dice / Tversky metric loss on logits, for hard or soft labels.

    Shapes: logits ``(B, C, H, W)``; labels ``(B, H, W)`` integer (hard) or ``(B, C, H, W)`` float (soft);
    optional ``valid_mask`` ``(B, H, W)`` bool. The result is a float32 scalar, whatever the autocast
    state. The defaults are the paper's: Jaccard (``alpha = beta = 1``), ``gamma = 1``, batch reduction.

    Example:
        >>> loss_fn = JDTLoss(ignore_index=255)
        >>> loss = loss_fn(model(images), masks)  # doctest: +SKIP

    """

    class_weights: Tensor | None

    def __init__(self, alpha: float = 1.0, beta: float = 1.0, gamma: float = 1.0, smooth: float = 1e-3,
                 log_loss: bool = False, reduction: str = BATCH_REDUCTION, ignore_index: int | None = 255,
                 class_weights: Sequence[float] | Tensor | None = None,
                 threshold: float = PRESENCE_THRESHOLD) -> None:
        """Store the settings.

        Args:
            alpha: False-positive weight (1 Jaccard, 0.5 Dice, other values Tversky).
            beta: False-negative weight.
            gamma: Power applied to each per-class loss (> 0).
            smooth: Smoothing term of the score (>= 0; older reference versions used 1.0).
            log_loss: Use ``-log(score)`` instead of ``1 - score``.
            reduction: ``"batch"`` (default), ``"image"`` or ``"class"``; see :data:`REDUCTIONS`.
            ignore_index: Hard label of pixels to leave out, or None to keep every pixel.
            class_weights: Optional per-class weights (length C, >= 0).
            threshold: A class is present where its label maximum is above this.

        Raises:
            ConfigError: A setting is out of range.

        """
        super().__init__()
        _check_settings(alpha, beta, gamma, smooth, reduction, threshold)
        self.alpha, self.beta, self.gamma, self.smooth = float(alpha), float(beta), float(gamma), float(smooth)
        self.log_loss, self.reduction, self.ignore_index = bool(log_loss), reduction, ignore_index
        self.threshold = float(threshold)
        weights = None
        if class_weights is not None:
            weights = torch.as_tensor(class_weights, dtype=torch.float32).flatten()
            if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
                raise ConfigError(f"class_weights must be finite and >= 0, got {weights.tolist()}")
        self.register_buffer("class_weights", weights, persistent=False)

    def forward(self, logits: Tensor, labels: Tensor, valid_mask: Tensor | None = None) -> Tensor:
        """Return the loss of ``logits`` ``(B, C, H, W)`` against hard or soft ``labels``.

        Args:
            logits: ``(B, C, H, W)`` raw scores.
            labels: ``(B, H, W)`` integer class ids or ``(B, C, H, W)`` float distributions.
            valid_mask: Optional ``(B, H, W)`` bool, False for pixels to leave out (with hard labels it
                combines with ``ignore_index``).

        Returns:
            A float32 scalar.

        """
        return jdt_loss(logits, labels, alpha=self.alpha, beta=self.beta, gamma=self.gamma, smooth=self.smooth,
                        log_loss=self.log_loss, reduction=self.reduction, ignore_index=self.ignore_index,
                        class_weights=self.class_weights, valid_mask=valid_mask, threshold=self.threshold)

    def extra_repr(self) -> str:
        """Describe the settings in ``repr``."""
        return (f"alpha={self.alpha}, beta={self.beta}, gamma={self.gamma}, smooth={self.smooth}, "
                f"log_loss={self.log_loss}, reduction={self.reduction!r}, ignore_index={self.ignore_index}")
