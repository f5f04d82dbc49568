"""Optimizers and learning-rate schedules from torch.optim, by name.

Schedules are stepped once per optimizer step, so they are smooth within an epoch and the same for
any batch size; `epochs` is the search's max_epochs, so an early-stopped trial ends mid-schedule.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim import lr_scheduler

from core.hparams import HPARAMS, OPTIMIZERS, SCHEDULES


def make_optimizer(
    name: str,
    params: Iterable[torch.nn.Parameter],
    lr: float,
    momentum: float = HPARAMS["momentum"].default,
    weight_decay: float = HPARAMS["weight_decay"].default,
    nesterov: bool = HPARAMS["nesterov"].default,
) -> torch.optim.Optimizer:
    """`momentum` is the momentum of sgd and rmsprop and beta1 of adam and adamw; the defaults are
    the table's (core/hparams.py)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                               nesterov=nesterov and momentum > 0)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(momentum, 0.999), weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(momentum, 0.999), weight_decay=weight_decay)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay)
    if name == "adadelta":
        return torch.optim.Adadelta(params, lr=lr, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"optimizer {name!r}: expected one of {', '.join(OPTIMIZERS)}")


def make_schedule(
    name: str,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: int = HPARAMS["warmup_epochs"].default,
) -> lr_scheduler.LRScheduler:
    """The schedule over `epochs`, after a linear warm-up from lr/10 (onecycle has its own warm-up)."""
    total = max(1, epochs * steps_per_epoch)
    if name == "onecycle":
        lr = optimizer.param_groups[0]["lr"]
        # cycle_momentum=False: keep the trial's momentum (cycling overwrites it, and raises for
        # adagrad and adadelta, which have none).
        return lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total,
                                       cycle_momentum=False)
    warmup = min(warmup_epochs * steps_per_epoch, total - 1)
    main = _main_schedule(name, optimizer, max(1, total - warmup))
    if warmup == 0:
        return main
    ramp = lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=warmup)
    return lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])


def _main_schedule(name: str, optimizer: torch.optim.Optimizer, steps: int):
    if name == "constant":
        return lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if name == "step":  # x0.1 at each third
        return lr_scheduler.StepLR(optimizer, step_size=max(1, steps // 3), gamma=0.1)
    if name == "multistep":  # x0.1 at 50 % and 75 %
        return lr_scheduler.MultiStepLR(optimizer, [steps // 2, (3 * steps) // 4], gamma=0.1)
    if name == "exponential":  # down to 1 % of lr at the end
        return lr_scheduler.ExponentialLR(optimizer, gamma=0.01 ** (1.0 / steps))
    if name == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    raise ValueError(f"schedule {name!r}: expected one of {', '.join(SCHEDULES)}")
