"""A search of k asynchronous workers replayed in virtual time on known learning curves.

Each epoch of a trial takes its curve's seconds on a virtual clock; the epochs of all workers
arrive in the order of their virtual finish times, and each arrival is one epoch of the budget. A
trial that pauses and later goes on (a promotion) continues from the epoch it reached: it is charged
only the epochs it trains. What a worker does next is asked of a `Policy`: the scheduling decisions
and the searcher of the method replayed (benchmarks/virtual/methods.py), the same objects a real
search builds; the replay only keeps the clock.

Worker start-up, evaluation and Ray's own latency are left out: only the decisions are replayed.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from benchmarks.virtual.surrogate import Curve


@dataclass(frozen=True)
class Work:
    """A trial a worker trains: its key (a configuration that trains again continues from the
    epoch it reached) and its configuration."""

    key: str
    config: dict[str, Any]


class Policy(Protocol):
    """The method replayed: what a free worker trains, and whether a trial trains on."""

    def next_work(self) -> Work | None:
        """The trial a free worker trains next (None: nothing now; asked again after the next
        epoch arrives)."""

    def on_epoch(self, key: str, epoch: int, value: float) -> bool:
        """A trial finished `epoch` with `value` of the metric: True if it trains its next epoch
        on the same worker, False if the worker is free (it paused, stopped or ended)."""


@dataclass
class Run:
    """One replay: the best value after each epoch of the budget (in arrival order), every value
    seen (for the pooled normalisation), the virtual seconds, and the trials started."""

    best: list[float] = field(default_factory=list)  # best[n - 1]: the best after n epochs
    lowest: float = math.inf
    highest: float = -math.inf
    seconds: float = 0.0
    trials: int = 0
    arrivals: list[tuple[float, str, int]] = field(default_factory=list)  # kept when asked


def replay(policy: Policy, curve_of: Callable[[dict[str, Any]], Curve], workers: int,
           budget: int, sign: float = 1.0, keep_arrivals: bool = False) -> Run:
    """Runs `policy` with `workers` workers until `budget` epochs have arrived, or nothing is
    left to train. `sign` 1 when the metric is maximised, -1 when minimised."""
    run = Run()
    reached: dict[str, int] = {}  # epochs each trial has trained
    curves: dict[str, Curve] = {}
    running: list[tuple[float, int, str]] = []  # (virtual finish time of its epoch, order, key)
    clock, order, idle = 0.0, 0, workers

    def train_next_epoch(key: str) -> None:
        nonlocal order
        order += 1
        epoch = reached[key]  # the epoch it trains now is epoch + 1
        heapq.heappush(running, (clock + curves[key].seconds[epoch], order, key))

    def fill_idle_workers() -> None:
        nonlocal idle
        while idle:
            work = policy.next_work()
            if work is None:
                return
            if work.key not in curves:
                curves[work.key] = curve_of(work.config)
                reached[work.key] = 0
                run.trials += 1
            idle -= 1
            train_next_epoch(work.key)

    best = -math.inf
    fill_idle_workers()
    while running and len(run.best) < budget:
        clock, _, key = heapq.heappop(running)
        reached[key] += 1
        epoch = reached[key]
        value = curves[key].values[epoch - 1]
        best = max(best, sign * value)
        run.best.append(sign * best)
        run.lowest, run.highest = min(run.lowest, value), max(run.highest, value)
        if keep_arrivals:
            run.arrivals.append((clock, key, epoch))
        if policy.on_epoch(key, epoch, value) and epoch < curves[key].epochs:
            train_next_epoch(key)
        else:
            idle += 1
        fill_idle_workers()
    run.seconds = clock
    return run


def best_after(run: Run, budget: int, share: float) -> float | None:
    """The best value after `share` of the `budget` epochs (the last one seen if the run ended
    sooner, as a search with nothing left to train keeps its best; None if nothing arrived)."""
    n = max(1, int(round(share * budget)))
    return run.best[min(n, len(run.best)) - 1] if run.best else None
