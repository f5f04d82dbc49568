"""One epoch of training and one evaluation pass, on tensors already on the device."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from core.augment import BatchAugment
from core.losses import classification_loss
from core.streamed import StreamedImages

Images = torch.Tensor | StreamedImages  # uint8 (N, C, H, W): on the device, or streamed to it


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimizer steps in one epoch of `n` images; the last partial batch is dropped."""
    return max(1, n // batch_size)


@dataclass
class EpochStats:
    loss: float  # mean training loss over the epoch
    images: int
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def train_step(
    model: nn.Module,
    images: torch.Tensor,  # (B, C, H, W) float, augmented and normalised
    targets: torch.Tensor,  # (B,) int64 labels, or (B, K) soft targets
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler | None,
    label_smoothing: float,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """One optimizer step (and schedule step) on one batch; returns its loss, detached, unsynced."""
    with torch.autocast(images.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        loss = classification_loss(model(images), targets, label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if schedule is not None:
        schedule.step()
    return loss.detach()


def train_epoch(
    model: nn.Module,
    x: Images,
    y: torch.Tensor,  # (N,) int64, on the device
    augment: BatchAugment,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    batch_size: int,
    label_smoothing: float,
    mixup=None,
    generator: torch.Generator | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> EpochStats:
    """Trains one pass over a shuffled (x, y), dropping the last partial batch as usual."""
    model.train()
    start = time.perf_counter()
    order = torch.randperm(len(y), device=y.device, generator=generator)
    steps = steps_per_epoch(len(y), batch_size)
    total = torch.zeros((), device=y.device)
    rows = [order[i * batch_size:(i + 1) * batch_size] for i in range(steps)]
    for i, raw in enumerate(_gathered(x, rows)):
        images, targets = augment.train(raw, generator), y[rows[i]]
        if mixup is not None:
            images, targets = mixup(images, targets)  # targets become (B, K) soft targets
        total += train_step(model, images, targets, optimizer, schedule, label_smoothing,
                            autocast_dtype)
    mean_loss = float(total) / steps  # one device sync per epoch, not per step
    return EpochStats(mean_loss, steps * min(batch_size, len(y)), time.perf_counter() - start)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: Images,
    y: torch.Tensor,
    augment: BatchAugment,
    batch_size: int = 1024,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[float, float]:
    """Mean cross-entropy (no smoothing) and accuracy of `model` on (x, y)."""
    model.eval()
    loss_sum = torch.zeros((), device=y.device)
    correct = torch.zeros((), device=y.device)
    for i, raw in zip(range(0, len(y), batch_size), _sliced(x, batch_size)):
        images, labels = augment.normalise(raw), y[i:i + batch_size]
        with torch.autocast(y.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(images).float()
        loss_sum += nn.functional.cross_entropy(logits, labels, reduction="sum")
        correct += (logits.argmax(1) == labels).sum()
    n = max(1, len(y))
    return float(loss_sum) / n, float(correct) / n


def _gathered(x: Images, rows: list[torch.Tensor]):
    """The uint8 images at each of `rows`, on the device."""
    if isinstance(x, StreamedImages):
        # one device sync per epoch to bring the order to the host, where the images are
        return x.batches(list(torch.cat(rows).cpu().split([len(r) for r in rows])) if rows else [])
    return (x[r] for r in rows)


def _sliced(x: Images, size: int):
    if isinstance(x, StreamedImages):
        return x.slices(size)
    return (x[i:i + size] for i in range(0, len(x), size))
