"""Metric names the trainable reports after every epoch (cheap to import: no torch, no Ray)."""

from __future__ import annotations

import math
from typing import Any

# The key of a result that counts its epochs: Ray's count of a trial's reports, which the
# trainable makes once per epoch (in result.json, ASHA's time_attr, an MLflow step).
EPOCH = "training_iteration"

METRICS = (
    "train_loss", "val_loss", "val_acc", "lr", "sparsity", "epoch_seconds", "images_per_s",
    # what the model would cost to run as it is after the epoch (core/cost.py)
    "params", "macs", "latency_ms", "latency_ms_gpu",
)


def finite(value: Any) -> bool:
    """Whether a reported value is a number that can be ranked: not missing (None), not a bool,
    not NaN or infinite (a diverged trial reports a NaN loss)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def finite_float(value: Any) -> float | None:
    """The value as a float where it is `finite`, else None."""
    return float(value) if finite(value) else None
