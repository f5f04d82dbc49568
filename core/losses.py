"""The training loss, decided in one place from the technique settings."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def classification_loss(
    logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float
) -> torch.Tensor:
    """Cross-entropy with label smoothing epsilon, for hard labels (B,) or Mixup's soft targets (B, K).

    With soft targets the smoothing goes into the targets: (1 - eps) * t + eps / K, as
    `torch.nn.CrossEntropyLoss(label_smoothing=eps)` does for both kinds.
    """
    return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)
