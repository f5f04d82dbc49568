"""The paper's ASHA: asynchronous successive halving by promotion, as a Ray Tune scheduler.

Li et al., "A System for Massively Parallel Hyperparameter Tuning" (MLSys 2020), Algorithm 2: a trial
that reaches a rung pauses there (Ray keeps its checkpoint); a free worker first looks, from the top
rung down, for a paused trial in the top 1/reduction_factor of the trials that reached its rung and
not yet promoted, and promotes it; only when there is none does it start a new trial. Ray's own
`ASHAScheduler` is the stopping form instead: a trial below the cut of the trials that happened to
reach its rung before it is stopped at once, so with few workers most trials run to the end.

When no new trial can come and nothing runs, the trials still paused can never be promoted: they
end there, stopped at their rung (Optuna is told they were pruned, not finished at that value).
On resume, the rungs are rebuilt from what the trials reported (Ray's result files), and trials that
were paused at a rung are paused again rather than continued.
"""

from __future__ import annotations

import math
from typing import Iterable

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from search.experiment_folder import result_rows

EPOCH = "training_iteration"  # the trainable reports once per epoch


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

    def __init__(self, milestones: list[int], reduction_factor: float, mode: str):
        if mode not in ("max", "min"):
            raise ValueError(f"mode {mode!r}: expected max or min")
        self.milestones = list(milestones)
        self.reduction_factor = reduction_factor
        self.sign = 1.0 if mode == "max" else -1.0
        self.results: dict[int, dict[str, float]] = {m: {} for m in self.milestones}
        self.promoted: dict[int, set[str]] = {m: set() for m in self.milestones}

    def record(self, trial_id: str, milestone: int, value: float | None) -> None:
        """A trial reached `milestone` with `value` of the metric (None or NaN ranks last)."""
        bad = value is None or (isinstance(value, float) and math.isnan(value))
        self.results[milestone][trial_id] = -math.inf if bad else self.sign * float(value)

    def promote(self, trial_id: str, milestone: int) -> None:
        self.promoted[milestone].add(trial_id)

    def top(self, milestone: int) -> list[str]:
        """The trials of a rung that may go on: the best floor(n / reduction_factor) of its n."""
        ranked = sorted(self.results[milestone].items(), key=lambda kv: kv[1], reverse=True)
        keep = int(len(ranked) / self.reduction_factor + 1e-9)
        return [trial_id for trial_id, value in ranked[:keep] if value > -math.inf]

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


class PromotionASHA(FIFOScheduler):
    """Ray Tune scheduler of promotion ASHA over epochs (see the module's docstring)."""

    def __init__(self, max_epochs: int, grace_period: int, reduction_factor: float,
                 metric: str | None = None, mode: str | None = None):
        super().__init__()
        self.max_epochs, self.grace_period = max_epochs, grace_period
        self.reduction_factor = reduction_factor
        self._metric, self._mode = metric, mode
        self.rungs: Rungs | None = None
        self.ended_at_rung: dict[str, int] = {}  # trials that ended paused, by their rung

    def set_search_properties(self, metric: str | None, mode: str | None, **spec) -> bool:
        if self._metric and metric and self._metric != metric:
            return False
        self._metric = self._metric or metric
        self._mode = self._mode or mode
        return True

    def _book(self) -> Rungs:
        if self.rungs is None:
            milestones = rung_milestones(self.grace_period, self.reduction_factor, self.max_epochs)
            self.rungs = Rungs(milestones, self.reduction_factor, self._mode or "max")
        return self.rungs

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        """A restored trial brings its rung results back; one paused at a rung pauses again."""
        if EPOCH not in (trial.last_result or {}):
            return  # a new trial
        rows = result_rows(trial.path)
        book = self._book()
        last = max((int(r[EPOCH]) for r in rows), default=0)
        for row in rows:
            epoch = int(row[EPOCH])
            if epoch in book.milestones:
                book.record(trial.trial_id, epoch, row.get(self._metric))
                if last > epoch:
                    book.promote(trial.trial_id, epoch)
        paused_at_rung = last in book.milestones and trial.trial_id not in book.promoted[last]
        if trial.status == Trial.PENDING and paused_at_rung:
            trial.set_status(Trial.PAUSED)  # before Ray files it under its status

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        epoch = int(result.get(EPOCH, 0))
        book = self._book()
        if epoch not in book.milestones:
            return TrialScheduler.CONTINUE
        book.record(trial.trial_id, epoch, result.get(self._metric))
        job = book.next_promotion(self._paused_ids(tune_controller) | {trial.trial_id})
        if job == (trial.trial_id, epoch):
            book.promote(trial.trial_id, epoch)
            return TrialScheduler.CONTINUE  # paused and at once promoted again: no need to stop
        return TrialScheduler.PAUSE

    def choose_trial_to_run(self, tune_controller) -> Trial | None:
        paused = {t.trial_id: t for t in tune_controller.get_trials() if t.status == Trial.PAUSED}
        job = self._book().next_promotion(paused)
        if job is not None:
            self._book().promote(*job)
            return paused[job[0]]
        for trial in tune_controller.get_trials():
            if trial.status == Trial.PENDING:
                return trial
        if paused and not self._any_running(tune_controller):
            self._end_waiting(tune_controller, paused)
        return None

    def _end_waiting(self, tune_controller, paused: dict[str, Trial]) -> None:
        """Nothing runs and nothing is promotable: no paused trial can move up any more, unless a
        new trial comes. If none can come, they all end; if the search algorithm is only held back
        by a concurrency limit (paused trials count as running for it), the least promising ends."""
        if tune_controller.search_alg.is_finished():
            ending = list(paused)
        else:
            ending = [self._book().worst_waiting(paused)]
        for trial_id in ending:
            self.ended_at_rung[trial_id] = self._book().rung_of(trial_id) or 0
            tune_controller.stop_trial(paused[trial_id])
            _save_with_next_snapshot(tune_controller, paused[trial_id])

    @staticmethod
    def _paused_ids(tune_controller) -> set[str]:
        return {t.trial_id for t in tune_controller.get_trials() if t.status == Trial.PAUSED}

    @staticmethod
    def _any_running(tune_controller) -> bool:
        return any(t.status == Trial.RUNNING for t in tune_controller.get_trials())

    def debug_string(self) -> str:
        book = self._book()
        rungs = ", ".join(f"epoch {m}: {len(book.results[m])} reached, {len(book.promoted[m])} "
                          f"promoted" for m in book.milestones)
        return f"Promotion ASHA ({rungs})"


def _save_with_next_snapshot(tune_controller, trial: Trial) -> None:
    """Has Ray write the trial's ended status into its experiment state.

    Ray 2.60's `TuneController._schedule_trial_stop` returns before marking a trial that has no
    actor (a paused one) for the next experiment snapshot, so the saved state would keep it PAUSED
    and a finished search would look unfinished. No public API marks it; this is the one place that
    reaches past the scheduler's view of the controller.
    """
    controller = getattr(tune_controller, "_tune_controller", tune_controller)
    controller._mark_trial_to_checkpoint(trial)
