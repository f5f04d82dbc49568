"""Mixup (Zhang et al., 2018) on whole batches: torchvision's transforms v2 `MixUp`."""

from __future__ import annotations

from torchvision.transforms import v2


def make_mixup(alpha: float, num_classes: int) -> v2.MixUp | None:
    """A batch Mixup drawing lambda ~ Beta(alpha, alpha), or None when alpha is 0 (off).

    Called on (images (B, C, H, W) float, labels (B,) int64), it returns the images mixed with the
    batch rolled by one and the matching soft targets (B, num_classes).
    """
    if alpha < 0:
        raise ValueError(f"mixup_alpha must be >= 0, got {alpha=}")
    if alpha == 0:
        return None
    return v2.MixUp(alpha=alpha, num_classes=num_classes)
