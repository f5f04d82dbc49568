"""Promotion ASHA's decisions replayed on measured learning curves: computed, not run.

One real search gives one order of events, and with 8 trials the epochs promotion ASHA trains swing
with that order (an early promotion is judged among the few trials that reached the rung so far).
This replays the scheduler's rules on the FIFO search's measured val_acc at every epoch of every
configuration and its measured seconds per epoch, for many orders in which the configurations
arrive, as different seeds of the sampler would give them:

- a trial that reaches a rung goes on if it is the next promotion (`search.scheduling.promotion.Rungs`, the
  scheduler's own bookkeeping), else it pauses;
- a free worker takes the next promotion (top rung first), else starts the next new trial;
- when nothing runs and nothing can be promoted, the paused trials end.

Worker start-up, evaluation gaps and Ray's own latency are left out: only the decisions are replayed.
"""

from __future__ import annotations

import heapq
import random
from statistics import mean, median

from search.scheduling.promotion import Rungs, rung_milestones


def replay(curves: list[list[float]], seconds: list[list[float]], order: list[int], workers: int,
           grace_period: int, reduction_factor: float, max_epochs: int) -> tuple[int, float]:
    """Epochs trained and best val_acc seen when the trials arrive in `order`.

    `curves[i][e]` is trial i's val_acc after epoch e + 1, `seconds[i][e]` that epoch's duration.
    """
    milestones = rung_milestones(grace_period, reduction_factor, max_epochs)
    book = Rungs(milestones, reduction_factor, "max")
    queue, paused, done = list(order), set(), {i: 0 for i in order}
    running: list[tuple[float, int, int]] = []  # (finish time, tie-break, trial)
    clock, tie, epochs, best = 0.0, 0, 0, float("-inf")

    def train_one_epoch(trial: int) -> None:
        nonlocal tie
        tie += 1
        heapq.heappush(running, (clock + seconds[trial][done[trial]], tie, trial))

    def free_worker() -> None:
        job = book.next_promotion(str(t) for t in paused)
        if job is not None:
            book.promote(*job)
            paused.discard(int(job[0]))
            train_one_epoch(int(job[0]))
        elif queue:
            train_one_epoch(queue.pop(0))

    for _ in range(workers):
        free_worker()
    while running:
        clock, _, trial = heapq.heappop(running)
        done[trial] += 1
        epochs += 1
        epoch = done[trial]
        best = max(best, curves[trial][epoch - 1])
        if epoch >= max_epochs:
            free_worker()
        elif epoch not in milestones:
            train_one_epoch(trial)
        else:
            book.record(str(trial), epoch, curves[trial][epoch - 1])
            if book.next_promotion({str(t) for t in paused} | {str(trial)}) == (str(trial), epoch):
                book.promote(str(trial), epoch)
                train_one_epoch(trial)
            else:
                paused.add(trial)
                free_worker()
    return epochs, best  # trials still paused here end at their rung


def replay_many(fifo_trials: list[dict], workers: int, grace_period: int,
                reduction_factor: float, max_epochs: int, orders: int = 1000,
                seed: int = 0) -> dict:
    """`replay` over `orders` random arrival orders of the FIFO search's trials (each must have
    `val_acc_by_epoch` and `epoch_seconds_by_epoch` of all `max_epochs` epochs)."""
    curves = [t["val_acc_by_epoch"] for t in fifo_trials]
    seconds = [t["epoch_seconds_by_epoch"] for t in fifo_trials]
    fifo_best = max(max(c) for c in curves)
    rng = random.Random(seed)
    epochs, gaps = [], []
    for _ in range(orders):
        order = list(range(len(curves)))
        rng.shuffle(order)
        trained, best = replay(curves, seconds, order, workers, grace_period, reduction_factor,
                               max_epochs)
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
