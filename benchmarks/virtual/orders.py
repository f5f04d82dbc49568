"""Promotion ASHA's decisions replayed on a FIFO search's measured curves, for many arrival orders.

One real search gives one order of events, and with 8 trials the epochs promotion ASHA trains swing
with that order (an early promotion is judged among the few trials that reached the rung so far).
Section `searches` replays the scheduler's rules (`PromotionInOrder`: the scheduler's own
`PromotionRules`) on the FIFO search's measured val_acc and seconds of every epoch of every
configuration, in the virtual-time replay of section `search` (benchmarks/virtual/replay.py), for
many orders in which the configurations arrive, as different seeds of the sampler would give them.
"""

from __future__ import annotations

import random
from statistics import mean, median

from benchmarks.virtual.methods import PromotionInOrder
from benchmarks.virtual.replay import replay
from benchmarks.virtual.surrogate import Curve


def replay_order(curves: list[list[float]], seconds: list[list[float]], order: list[int],
                 workers: int, grace_period: int, reduction_factor: float,
                 max_epochs: int) -> tuple[int, float]:
    """Epochs trained and best val_acc seen when the trials arrive in `order` and train until
    nothing is left. `curves[i][e]` is trial i's val_acc after epoch e + 1, `seconds[i][e]` that
    epoch's duration."""
    from search.scheduling.promotion import rung_milestones

    known = [Curve(tuple(c), tuple(s)) for c, s in zip(curves, seconds)]
    policy = PromotionInOrder(order, rung_milestones(grace_period, reduction_factor, max_epochs),
                              reduction_factor, max_epochs)
    everything = len(curves) * max_epochs
    run = replay(policy, lambda config: known[config["index"]], workers, everything)
    return len(run.best), run.best[-1]


def replay_many(fifo_trials: list[dict], workers: int, grace_period: int,
                reduction_factor: float, max_epochs: int, orders: int = 1000,
                seed: int = 0) -> dict:
    """`replay_order` over `orders` random arrival orders of the FIFO search's trials (each must
    have `val_acc_by_epoch` and `epoch_seconds_by_epoch` of all `max_epochs` epochs)."""
    curves = [t["val_acc_by_epoch"] for t in fifo_trials]
    seconds = [t["epoch_seconds_by_epoch"] for t in fifo_trials]
    fifo_best = max(max(c) for c in curves)
    rng = random.Random(seed)
    epochs, gaps = [], []
    for _ in range(orders):
        order = list(range(len(curves)))
        rng.shuffle(order)
        trained, best = replay_order(curves, seconds, order, workers, grace_period,
                                     reduction_factor, max_epochs)
        epochs.append(trained)
        gaps.append((fifo_best - best) * 100)
    fifo_epochs = len(curves) * max_epochs
    return {
        "orders": orders, "fifo_epochs": fifo_epochs, "mean_epochs": mean(epochs),
        "median_epochs": median(epochs), "min_epochs": min(epochs), "max_epochs": max(epochs),
        "epochs_counts": {str(k): epochs.count(k) for k in sorted(set(epochs))},
        "mean_share": mean(epochs) / fifo_epochs,
        "orders_within_55_percent": sum(e <= 0.55 * fifo_epochs for e in epochs) / orders,
        "mean_points_below_fifo": mean(gaps), "worst_points_below_fifo": max(gaps),
        "orders_within_1_point": sum(g <= 1.0 for g in gaps) / orders,
    }
