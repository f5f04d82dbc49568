"""Mixup (Zhang et al., 2018) on whole batches, as torchvision's transforms v2 `MixUp` does it.

Written out here rather than imported: importing torchvision.transforms pulls in torchvision.models
and torch._dynamo, about 3 s of every trial worker's start on a 2-core CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class Mixup:
    """Mixes each batch with itself rolled by one, with lambda ~ Beta(alpha, alpha) drawn per batch
    from torch's global generator (as torchvision's `v2.MixUp` draws it)."""

    def __init__(self, alpha: float, num_classes: int):
        self.alpha, self.num_classes = alpha, num_classes
        self._beta = torch.distributions.Beta(torch.tensor([alpha]), torch.tensor([alpha]))

    def __call__(self, images: torch.Tensor, labels: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """(images (B, C, H, W) float, labels (B,) int64) -> (mixed images, soft targets (B, K))."""
        lam = float(self._beta.sample(()))
        targets = F.one_hot(labels, num_classes=self.num_classes).to(images.dtype)
        mixed = images.roll(1, 0).mul_(1.0 - lam).add_(images.mul(lam))
        return mixed, targets.roll(1, 0).mul_(1.0 - lam).add_(targets.mul(lam))


def make_mixup(alpha: float, num_classes: int) -> Mixup | None:
    """A batch Mixup drawing lambda ~ Beta(alpha, alpha), or None when alpha is 0 (off)."""
    if alpha < 0:
        raise ValueError(f"mixup_alpha must be >= 0, got {alpha=}")
    if alpha == 0:
        return None
    return Mixup(alpha, num_classes)
