"""The paper's ASHA: asynchronous successive halving by promotion, as a Ray Tune scheduler.

Li et al., "A System for Massively Parallel Hyperparameter Tuning" (MLSys 2020), Algorithm 2: a trial
that reaches a rung pauses there (Ray keeps its checkpoint); a free worker first looks, from the top
rung down, for a paused trial in the top 1/reduction_factor of the trials that reached its rung and
not yet promoted, and promotes it; only when there is none does it start a new trial. Ray's own
`ASHAScheduler` is the stopping form instead: a trial below the cut of the trials that happened to
reach its rung before it is stopped at once, so with few workers most trials run to the end.

A paused trial holds no worker, so the scheduler also decides when trials start: new trials wait
in a queue (Ray's PAUSED status, never started) and a free slot, out of `max_concurrent`, goes to a
promotion first, then to the next new trial. A concurrency limit of the search algorithm would count
paused trials as running and starve the search, so `PausedTrialsWait` (below) counts only trials
that are not paused at a rung.

When no new trial can come and nothing runs, the trials still paused can never be promoted: they
end there, stopped at their rung (Optuna is told they were pruned, not finished at that value).
On resume, the rungs are rebuilt from what the trials reported (Ray's result files), and trials that
were paused at a rung are paused again rather than continued.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import ConcurrencyLimiter

from search.place.experiment_folder import trial_rows
from search.scheduling.pareto import crowding_distances, nondominated_layers
from search.scheduling.snapshots import (
    SnapshotErrors,
    save_with_next_snapshot,
    snapshot_at_each_checkpoint,
)
from trainables.metrics import EPOCH


def rung_milestones(grace_period: int, reduction_factor: float, max_epochs: int) -> list[int]:
    """Epochs at which trials are judged: grace_period * reduction_factor**k, below max_epochs."""
    milestones: list[int] = []
    k = 0
    while True:
        epoch = int(round(grace_period * reduction_factor ** k))
        if epoch >= max_epochs:
            return milestones
        if not milestones or epoch > milestones[-1]:
            milestones.append(epoch)
        k += 1


def spec_rungs(spec) -> tuple[int, ...]:
    """The rung epochs of a search spec's ASHA (none without early stopping)."""
    if spec.scheduler == "fifo":
        return ()
    return tuple(rung_milestones(spec.grace_period, spec.reduction_factor, spec.max_epochs))


class Rungs:
    """ASHA's bookkeeping, free of Ray: each rung's results and the promotions made from it."""

    def __init__(self, milestones: list[int], reduction_factor: float, mode: str,
                 also: tuple[str, ...] = ()):
        """`also`: the modes of further objectives. With any, a rung ranks its trials by Pareto
        rank (non-dominated sorting), and within a rank by crowding distance (the ends of a front
        and its sparse parts first), as NSGA-II and multi-objective ASHA do, then by the metric;
        rather than by the metric alone. The metric stays what the cut and the console show."""
        if mode not in ("max", "min"):
            raise ValueError(f"mode {mode!r}: expected max or min")
        self.milestones = list(milestones)
        self.reduction_factor = reduction_factor
        self.sign = 1.0 if mode == "max" else -1.0
        self.also_signs = tuple(1.0 if m == "max" else -1.0 for m in also)
        self.results: dict[int, dict[str, float]] = {m: {} for m in self.milestones}
        self.others: dict[int, dict[str, tuple[float, ...]]] = {m: {} for m in self.milestones}
        self.promoted: dict[int, set[str]] = {m: set() for m in self.milestones}

    @property
    def by_pareto_rank(self) -> bool:
        return bool(self.also_signs)

    def record(self, trial_id: str, milestone: int, value: float | None,
               others: tuple[float | None, ...] = ()) -> None:
        """A trial reached `milestone` with `value` of the metric and `others` of the further
        objectives (None or NaN ranks last)."""
        self.results[milestone][trial_id] = _signed(value, self.sign)
        if self.by_pareto_rank:
            padded = (*others, *([None] * len(self.also_signs)))[:len(self.also_signs)]
            self.others[milestone][trial_id] = tuple(_signed(v, s) for v, s in
                                                     zip(padded, self.also_signs))

    def promote(self, trial_id: str, milestone: int) -> None:
        self.promoted[milestone].add(trial_id)

    def top(self, milestone: int) -> list[str]:
        """The trials of a rung that may go on: the best floor(n / reduction_factor) of its n."""
        ranked = self._ranked(milestone)
        keep = ranked[:self._keep(len(ranked))]
        return [trial_id for trial_id in keep if self.results[milestone][trial_id] > -math.inf]

    def _ranked(self, milestone: int) -> list[str]:
        results = self.results[milestone]
        if not self.by_pareto_rank:
            return sorted(results, key=lambda t: results[t], reverse=True)
        vectors = self._vectors(milestone)
        layer = nondominated_layers(vectors)
        spread = crowding_distances(vectors, layer)
        missing = {t for t, v in vectors.items() if -math.inf in v}
        return sorted(results, key=lambda t: (t in missing, layer[t], -spread[t], -results[t]))

    def _vectors(self, milestone: int) -> dict[str, tuple[float, ...]]:
        return {t: (v, *self.others[milestone].get(t, ())) for t, v in self.results[milestone].items()}

    def pareto_ranks(self, milestone: int) -> dict[str, int]:
        """Each trial's non-dominated layer at the rung: 1 for those no other trial beats in
        every objective, 2 for those only layer 1 beats, and so on."""
        return nondominated_layers(self._vectors(milestone))

    def standing(self, trial_id: str, milestone: int) -> str:
        """Where a trial ranks at its rung when ranking is by Pareto rank ('' otherwise)."""
        if not self.by_pareto_rank or trial_id not in self.results[milestone]:
            return ""
        reached = len(self.results[milestone])
        rank = self.pareto_ranks(milestone)[trial_id]
        return (f"Pareto rank {rank} of the {reached} trials at the rung, the best "
                f"{self._keep(reached)} go on")

    def _keep(self, reached: int) -> int:
        return int(reached / self.reduction_factor + 1e-9)

    def value(self, trial_id: str, milestone: int) -> float | None:
        """The metric the trial had at `milestone` (None if it had none)."""
        signed = self.results[milestone].get(trial_id, -math.inf)
        return None if signed == -math.inf else self.sign * signed

    def cut(self, milestone: int) -> float | None:
        """The value a trial must reach to be in the rung's top 1/reduction_factor now (None while
        the rung has too few trials to promote any)."""
        ranked = sorted(self.results[milestone].values(), reverse=True)
        keep = self._keep(len(ranked))
        return self.sign * ranked[keep - 1] if keep and ranked[keep - 1] > -math.inf else None

    def next_promotion(self, waiting: Iterable[str]) -> tuple[str, int] | None:
        """The trial among `waiting` to promote first (top rung first, best first), with its rung."""
        waiting = set(waiting)
        for milestone in reversed(self.milestones):
            for trial_id in self.top(milestone):
                if trial_id in waiting and trial_id not in self.promoted[milestone] \
                        and self.rung_of(trial_id) == milestone:
                    return trial_id, milestone
        return None

    def rung_of(self, trial_id: str) -> int | None:
        """The highest milestone the trial has reached."""
        reached = [m for m in self.milestones if trial_id in self.results[m]]
        return reached[-1] if reached else None

    def worst_waiting(self, waiting: Iterable[str]) -> str | None:
        """The waiting trial least likely to be promoted: lowest rung, then lowest value."""
        def key(trial_id: str) -> tuple[int, float]:
            rung = self.rung_of(trial_id) or 0
            return rung, self.results[rung].get(trial_id, -math.inf) if rung else -math.inf
        waiting = list(waiting)
        return min(waiting, key=key) if waiting else None


@dataclass(frozen=True)
class Job:
    """What a free worker does (`PromotionRules.free_worker`): promote a trial paused at a rung,
    start a new trial, end the trials paused at rungs, or nothing."""

    kind: str  # promote | start | end | idle
    trial_ids: tuple[str, ...] = ()
    epoch: int = 0  # promote: the rung it goes on from


class PromotionRules:
    """Promotion ASHA's decisions, free of Ray: `PromotionASHA` asks them for its real trials and
    the benchmarks' replay (benchmarks/virtual/replay.py) for its virtual ones, so both follow one set of
    rules. Who runs, pauses and starts trials (Ray, or a virtual clock) stays with the caller."""

    def __init__(self, rungs: Rungs):
        self.rungs = rungs

    def at_rung(self, trial_id: str, epoch: int, value: float | None, others: tuple = (),
                waiting: Iterable[str] = ()) -> bool:
        """A trial reports `value` at rung `epoch`: True if it trains on at once (it is the next
        promotion among it and the `waiting` trials paused at rungs), False if it pauses there."""
        book = self.rungs
        book.record(trial_id, epoch, value, others)
        if book.next_promotion({*waiting, trial_id}) == (trial_id, epoch):
            book.promote(trial_id, epoch)
            return True
        return False

    def free_worker(self, waiting: Iterable[str], next_new: Callable[[], str | None], idle: bool,
                    finished: Callable[[], bool]) -> Job:
        """What a free worker does: promote the next of the `waiting` trials (top rung first),
        else start `next_new()` (None: no new trial now), else, when nothing else runs (`idle`),
        end the waiting trials, which nothing can promote any more: all of them when no new trial
        can come (`finished()`), else the least promising, which frees a searcher's slot."""
        waiting = list(waiting)
        job = self.rungs.next_promotion(waiting)
        if job is not None:
            self.rungs.promote(*job)
            return Job("promote", (job[0],), job[1])
        new = next_new()
        if new is not None:
            return Job("start", (new,))
        if waiting and idle:
            ending = waiting if finished() else [self.rungs.worst_waiting(waiting)]
            return Job("end", tuple(ending))
        return Job("idle")


@dataclass(frozen=True)
class RungDecision:
    """What promotion ASHA decided for a trial at a rung; the console tells these as they come."""

    trial_id: str
    epoch: int  # the rung's epoch
    value: float | None  # the trial's metric at the rung
    cut: float | None  # the rung's cut at that moment (see `Rungs.cut`)
    outcome: str  # promoted (trains on) | paused (waits at the rung) | ended (stopped there)
    standing: str = ""  # ranked by Pareto rank: where it stood (see `Rungs.standing`)


class PromotionASHA(SnapshotErrors, FIFOScheduler):
    """Ray Tune scheduler of promotion ASHA over epochs (see the module's docstring).

    `decisions` lists every `RungDecision` in order, for a reader such as the console.
    """

    def __init__(self, max_epochs: int, grace_period: int, reduction_factor: float,
                 max_concurrent: int, metric: str | None = None, mode: str | None = None,
                 also: tuple[tuple[str, str], ...] = ()):
        """`also`: further objectives (metric, mode) to rank rungs by Pareto rank with."""
        super().__init__()
        self.also = tuple(also)
        self.max_epochs, self.grace_period = max_epochs, grace_period
        self.reduction_factor = reduction_factor
        self.max_concurrent = max_concurrent  # trials training at once (the workers)
        self._metric, self._mode = metric, mode
        self.rungs: Rungs | None = None
        self.rules: PromotionRules | None = None  # the decisions, over `rungs`
        self.queued: list[str] = []  # new trials not started yet, in the order they came
        # Trials about to give their worker back (paused at a rung, or at their last epoch): the
        # next trial is staged at once, so Ray hands it the worker's actor instead of stopping it.
        self.leaving: set[str] = set()
        self.seen: set[str] = set()
        self.decisions: list[RungDecision] = []

    def set_search_properties(self, metric: str | None, mode: str | None, **spec) -> bool:
        if self._metric and metric and self._metric != metric:
            return False
        self._metric = self._metric or metric
        self._mode = self._mode or mode
        return True

    def _book(self) -> Rungs:
        if self.rungs is None:
            milestones = rung_milestones(self.grace_period, self.reduction_factor, self.max_epochs)
            self.rungs = Rungs(milestones, self.reduction_factor, self._mode or "max",
                               tuple(mode for _, mode in self.also))
        return self.rungs

    def decision_rules(self) -> PromotionRules:
        """The decisions over this scheduler's rungs: the object the benchmarks' replay drives too."""
        if self.rules is None or self.rules.rungs is not self._book():
            self.rules = PromotionRules(self._book())
        return self.rules

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        """A new trial waits in the queue; a restored one brings its rung results back, and one
        paused at a rung pauses again. (Ray files the trial under its status after this call.)"""
        snapshot_at_each_checkpoint(tune_controller)
        first_time = trial.trial_id not in self.seen
        self.seen.add(trial.trial_id)
        if EPOCH not in (trial.last_result or {}):
            if first_time and trial.status == Trial.PENDING:
                trial.set_status(Trial.PAUSED)
                self.queued.append(trial.trial_id)
            return
        rows = trial_rows(trial)
        book = self._book()
        last = max((int(r[EPOCH]) for r in rows), default=0)
        for row in rows:
            epoch = int(row[EPOCH])
            if epoch in book.milestones:
                book.record(trial.trial_id, epoch, row.get(self._metric), self._others(row))
                if last > epoch:
                    book.promote(trial.trial_id, epoch)
        paused_at_rung = last in book.milestones and trial.trial_id not in book.promoted[last]
        if trial.status == Trial.PENDING and paused_at_rung:
            trial.set_status(Trial.PAUSED)  # before Ray files it under its status

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        epoch = int(result.get(EPOCH, 0))
        book = self._book()
        if epoch >= self.max_epochs:
            self.leaving.add(trial.trial_id)
        if epoch not in book.milestones:
            return TrialScheduler.CONTINUE
        if self.decision_rules().at_rung(trial.trial_id, epoch, result.get(self._metric),
                                         self._others(result), self._paused_ids(tune_controller)):
            self._decide(trial.trial_id, epoch, "promoted")
            return TrialScheduler.CONTINUE  # paused and at once promoted again: no need to stop
        self._decide(trial.trial_id, epoch, "paused")
        _tell_searcher(tune_controller, "on_pause", trial.trial_id)
        self.leaving.add(trial.trial_id)
        return TrialScheduler.PAUSE

    def _others(self, result: dict) -> tuple:
        return tuple(result.get(metric) for metric, _ in self.also)

    def choose_trial_to_run(self, tune_controller) -> Trial | None:
        trials = tune_controller.get_trials()
        self.leaving &= {t.trial_id for t in trials if t.status == Trial.RUNNING}
        busy = sum(t.status in (Trial.RUNNING, Trial.PENDING) and t.trial_id not in self.leaving
                   for t in trials)
        paused = {t.trial_id: t for t in trials if t.status == Trial.PAUSED}
        at_rungs = {i: t for i, t in paused.items() if i not in self.queued}
        if busy >= self.max_concurrent or (self.leaving and self._starting(trials)):
            return None
        job = self.decision_rules().free_worker(
            at_rungs, lambda: self._next_queued(paused), idle=not busy and not self.leaving,
            finished=tune_controller.search_alg.is_finished)
        if job.kind == "promote":
            self._decide(job.trial_ids[0], job.epoch, "promoted")
            _tell_searcher(tune_controller, "on_unpause", job.trial_ids[0])
            return paused[job.trial_ids[0]]
        if job.kind == "start":
            return paused[job.trial_ids[0]]
        if job.kind == "end":
            self._end_waiting(tune_controller, {i: at_rungs[i] for i in job.trial_ids})
        return None

    def _next_queued(self, paused: dict[str, Trial]) -> str | None:
        """The first new trial of the queue that Ray holds (paused, never started)."""
        while self.queued:
            trial_id = self.queued.pop(0)
            if trial_id in paused:
                return trial_id
        return None

    @staticmethod
    def _starting(trials: list[Trial]) -> bool:
        """Whether a trial waits for its worker. Ray gives a worker that leaves to such a trial,
        stopping the new worker it was starting; staging another trial now would start one more
        worker process, only to stop it in turn (each costs seconds of CPU, and at the end of a
        search Ray waits up to 5 s for the last one)."""
        return any(t.status == Trial.PENDING for t in trials)

    def _end_waiting(self, tune_controller, ending: dict[str, Trial]) -> None:
        """Stops the trials the rules end at their rung (see `PromotionRules.free_worker`)."""
        for trial_id, trial in ending.items():
            self._decide(trial_id, self._book().rung_of(trial_id) or 0, "ended")
            tune_controller.stop_trial(trial)
            save_with_next_snapshot(tune_controller, trial)

    def _decide(self, trial_id: str, milestone: int, outcome: str) -> None:
        book = self._book()
        decision = RungDecision(trial_id, milestone, book.value(trial_id, milestone) if milestone else None,
                                book.cut(milestone) if milestone else None, outcome,
                                book.standing(trial_id, milestone) if milestone else "")
        self.decisions.append(decision)

    def _paused_ids(self, tune_controller) -> set[str]:
        return {t.trial_id for t in tune_controller.get_trials()
                if t.status == Trial.PAUSED and t.trial_id not in self.queued}

    def debug_string(self) -> str:
        book = self._book()
        rungs = ", ".join(f"epoch {m}: {len(book.results[m])} reached, {len(book.promoted[m])} "
                          f"promoted" for m in book.milestones)
        return f"Promotion ASHA ({rungs})"


class PausedTrialsWait(ConcurrencyLimiter):
    """Ray's ConcurrencyLimiter, but a trial paused at a rung frees its slot until promoted.

    PromotionASHA tells it through the Searcher's `on_pause` / `on_unpause` hooks (as Ray's own
    HyperBandForBOHB does), so the search algorithm (Optuna) is asked for a new trial only when
    fewer than `max_concurrent` trials train or wait to start.
    """

    def __init__(self, searcher, max_concurrent: int):
        super().__init__(searcher, max_concurrent=max_concurrent)
        self.paused: set[str] = set()

    def suggest(self, trial_id: str):
        if len(self.live_trials - self.paused) >= self.max_concurrent:
            return None
        suggestion = self.searcher.suggest(trial_id)
        if suggestion not in (None, self.FINISHED):
            self.live_trials.add(trial_id)
            self.num_unfinished_live_trials += 1
        return suggestion

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        self.paused.discard(trial_id)
        super().on_trial_complete(trial_id, result=result, error=error)

    def on_pause(self, trial_id: str) -> None:
        self.paused.add(trial_id)

    def on_unpause(self, trial_id: str) -> None:
        self.paused.discard(trial_id)


def _tell_searcher(tune_controller, hook: str, trial_id: str) -> None:
    tell_paused(getattr(tune_controller.search_alg, "searcher", None), hook, trial_id)


def tell_paused(searcher, hook: str, trial_id: str) -> None:
    """Calls a Searcher's pause hook (on_pause, on_unpause), where it has one (random search has
    not): the one place that says which searchers hear of trials paused at rungs."""
    if isinstance(searcher, PausedTrialsWait):
        getattr(searcher, hook)(trial_id)


def _signed(value: float | None, sign: float) -> float:
    """The value to maximise (None or NaN: -inf, ranked last)."""
    bad = value is None or (isinstance(value, float) and math.isnan(value))
    return -math.inf if bad else sign * float(value)
