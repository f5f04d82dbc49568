"""The console: what a person watching a search sees, and the quiet of Ray's and MLflow's own output.

`SearchConsole` is a Ray Tune callback. On a terminal it draws a rich live view: a bar of the epochs
trained against the budget (trials x max_epochs; with ASHA an upper bound) with the elapsed time and
an estimate of the rest, one line per running trial, the best trial so far and the latest rung
decisions. Elsewhere (CI, a log file, nohup) it prints plain lines, one per event: a trial started,
an epoch reported (at most one line per trial and epoch), a rung decision, a trial ended (and how),
the search ended. Rung decisions come from the scheduler it follows (`PromotionASHA.decisions`).

`quiet_outside_systems` turns off Ray's and MLflow's own tables, progress bars and warnings
(`--verbose` keeps them).
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections import deque
from typing import Any, TextIO

from ray.tune import Callback
from ray.tune.experiment import Trial

from search.record.outcome import KINDS, TrialEnds, TrialOutcome
from search.record.tracking import run_name
from trainables.metrics import EPOCH, finite

NOISY_LOGGERS = ("ray", "ray.tune", "ray.train", "ray.data", "mlflow", "alembic", "optuna")
# Where Ray Tune logs a trial's failure (with its traceback) and the list of failed trials at the
# end: the console tells each failure in one line with the path of its log instead.
TRIAL_FAILURE_LOGGERS = ("ray.tune.execution.tune_controller", "ray.tune.tune")
RECENT_DECISIONS = 5  # rung decisions kept on the live view


def quiet_outside_systems(verbose: bool) -> None:
    """Raises Ray's, MLflow's and Optuna's loggers to ERROR and ignores their warnings, unless
    `verbose`. Errors still show."""
    if verbose:
        return
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for name in TRIAL_FAILURE_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    # Ray Tune's new output engine prints its configuration box and a block per failed trial even
    # at verbose=0; its legacy engine prints nothing at verbose=0 (Ray's documented switch).
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    warnings.filterwarnings("ignore", module=r"(ray|mlflow|optuna|pydantic|alembic)(\.|$)")
    warnings.filterwarnings("ignore", category=FutureWarning)


def trial_label(trial_id: str) -> str:
    """'t07', as in the child runs' names."""
    return run_name(trial_id, {}, [])


class SearchConsole(Callback):
    """Ray Tune callback that tells a search as it runs (see the module's docstring)."""

    def __init__(self, name: str, metric: str, mode: str, total_trials: int, max_epochs: int,
                 dimensions: list[str], rungs: tuple[int, ...] = (), epochs_done: int = 0,
                 stream: TextIO | None = None, live: bool | None = None,
                 also: tuple[str, ...] = (), ends: TrialEnds | None = None):
        """`ends`: the search's TrialEnds, shared with the MLflow callback (else one of its own)."""
        self.name, self.metric, self.mode = name, metric, mode
        self.ends = ends or TrialEnds(max_epochs, rungs)
        self.also = tuple(also)  # further objectives, shown beside the metric
        self.total_trials, self.max_epochs = total_trials, max_epochs
        self.dimensions, self.rungs = list(dimensions), tuple(rungs)
        self.epochs = epochs_done  # trained, this run and earlier ones
        self._stream = stream
        self._live_wanted = live
        self._scheduler = None
        self._reset()

    def _reset(self) -> None:
        self._start = time.monotonic()
        self._seen_decisions = 0
        self._reported: set[tuple[str, int]] = set()
        self._started: set[str] = set()
        self._running: dict[str, dict[str, Any]] = {}  # trial id -> its last result
        self._about: dict[str, str] = {}  # trial id -> its searched values, as in its run name
        self._best: tuple[str, float, int] | None = None  # trial id, value, epoch
        self._ended: dict[str, str] = {}  # trial id -> how
        self._recent: deque[str] = deque(maxlen=RECENT_DECISIONS)
        self._view = None

    def __getstate__(self) -> dict:
        # Ray pickles callbacks with the Tuner: keep the settings, not the stream or the live view.
        keep = ("name", "metric", "mode", "total_trials", "max_epochs", "dimensions", "rungs",
                "epochs", "_live_wanted", "ends")
        return {k: self.__dict__[k] for k in keep}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._stream, self._scheduler = None, None
        self._reset()

    def follow(self, scheduler) -> None:
        """Tells rung decisions from `scheduler.decisions` (schedulers without them: none)."""
        self._scheduler = scheduler

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stdout

    @property
    def live(self) -> bool:
        return self._live_wanted if self._live_wanted is not None else self.stream.isatty()

    # --- Ray Tune's events ----------------------------------------------------------------------

    def setup(self, **info) -> None:
        self._start = time.monotonic()
        rungs = f"ASHA rungs at epochs {', '.join(map(str, self.rungs))}" if self.rungs else \
            "no early stopping"
        self._say(f"search {self.name!r}: {self.total_trials} trials x up to {self.max_epochs} "
                  f"epochs ({rungs}), by {self.metric} ({self.mode})")
        if self.live:
            self._view = _LiveView(self)

    def on_trial_start(self, iteration: int, trials: list, trial: Trial, **info) -> None:
        self._tell_decisions()
        self._running.setdefault(trial.trial_id, {})
        if trial.trial_id in self._started:
            return  # promoted from a rung, or retried: told already
        self._started.add(trial.trial_id)
        about = run_name(trial.trial_id, trial.config, self.dimensions).partition(" ")[2]
        self._about[trial.trial_id] = about
        self._event(f"{trial_label(trial.trial_id)} started" + (f": {about}" if about else ""))

    def on_trial_result(self, iteration: int, trials: list, trial: Trial, result: dict,
                        **info) -> None:
        epoch = int(result.get(EPOCH, 0))
        key = (trial.trial_id, epoch)
        if key in self._reported:
            self._tell_decisions()
            return
        self._reported.add(key)
        self.epochs += 1
        self._running[trial.trial_id] = result
        value = result.get(self.metric)
        if finite(value) and (self._best is None or self._better(value, self._best[1])):
            self._best = (trial.trial_id, float(value), epoch)
        others = "".join(f", {m} {_num(result.get(m))}" for m in self.also)
        line = (f"{trial_label(trial.trial_id)} epoch {epoch}/{self.max_epochs}: "
                f"{self.metric} {_num(value)}{others}, {result.get('images_per_s', 0):.0f} img/s")
        decision = self._decision_now(trial.trial_id, epoch)
        if decision is not None and decision.outcome == "paused":
            self._running.pop(trial.trial_id, None)
        told = f"; {self._decision_text(decision)}" if decision else ""
        self._event(line + told, print_live=False)
        self._tell_decisions(told=decision)

    def on_trial_complete(self, iteration: int, trials: list, trial: Trial, **info) -> None:
        self._tell_decisions()
        self._running.pop(trial.trial_id, None)
        outcome = self.ends.completed(trial)
        ended = self._ended_decision(trial.trial_id)
        self._tell_end(trial, outcome, self._below_cut(ended) if ended is not None else "")

    def on_trial_error(self, iteration: int, trials: list, trial: Trial, **info) -> None:
        self._running.pop(trial.trial_id, None)
        self._tell_end(trial, self.ends.errored(trial))

    def on_trial_recover(self, iteration: int, trials: list, trial: Trial, **info) -> None:
        self._running.pop(trial.trial_id, None)
        self._event(f"{trial_label(trial.trial_id)} failed, retried from its last checkpoint: "
                    f"{TrialOutcome.errored(trial).error_text}")

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        self._tell_decisions()  # promotions chosen between results

    def on_experiment_end(self, trials: list, **info) -> None:
        self._tell_decisions()
        counts: dict[str, int] = {}
        for how in self._ended.values():
            counts[how] = counts.get(how, 0) + 1
        told = ", ".join(f"{n} {KINDS[how]}" for how, n in sorted(counts.items()))
        ended = sum(t.status in (Trial.TERMINATED, Trial.ERROR) for t in trials)
        best = (f"; best {trial_label(self._best[0])} {self.metric} {_num(self._best[1])} "
                f"(epoch {self._best[2]})" if self._best else "")
        how = "ended" if ended >= self.total_trials else "stopped"
        self._event(f"search {how}: {ended} of {self.total_trials} trials ended"
                    + (f" ({told} in this run)" if told else "")
                    + f", {self.epochs} epochs trained in {_clock(self.elapsed)}{best}")
        self.close()

    def close(self) -> None:
        """Stops the live view (idempotent)."""
        if self._view:
            self._view.stop()
            self._view = None

    # --- what is told ---------------------------------------------------------------------------

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def _tell_end(self, trial: Trial, outcome: TrialOutcome, why: str = "") -> None:
        self._ended[trial.trial_id] = outcome.kind
        self._event(f"{trial_label(trial.trial_id)} ended: {outcome.console_text(self.metric, why)}")

    def _decisions(self) -> list:
        return list(getattr(self._scheduler, "decisions", None) or [])

    def _tell_decisions(self, told=None) -> None:
        """Tells the decisions made since the last event: a promotion of a paused trial gets a
        line of its own; one taken on a result (`told`) is in that epoch's line, and a trial ended
        at its rung is told by its end line."""
        decisions = self._decisions()
        for d in decisions[self._seen_decisions:]:
            label = trial_label(d.trial_id)
            if d.outcome == "promoted" and d is not told:
                self._event(f"{label} promoted from rung {self._rung(d)} (epoch {d.epoch}): "
                            f"{self._below_cut(d)}")
            self._recent.append(f"{label} epoch {d.epoch}: {self._decision_text(d)}")
        self._seen_decisions = len(decisions)

    def _decision_now(self, trial_id: str, epoch: int):
        """The decision taken on this very result (the scheduler decides before callbacks run)."""
        for d in reversed(self._decisions()[self._seen_decisions:]):
            if d.trial_id == trial_id and d.epoch == epoch:
                return d
        return None

    def _rung(self, d) -> str:
        return str(self.rungs.index(d.epoch) + 1) if d.epoch in self.rungs else "?"

    def _decision_text(self, d) -> str:
        if d.outcome in ("promoted", "paused"):
            return f"rung {self._rung(d)}: {d.outcome} ({self._versus_cut(d)})"
        return f"stopped at rung {self._rung(d)}: {self._below_cut(d)}"

    def _ended_decision(self, trial_id: str):
        return next((d for d in reversed(self._decisions())
                     if d.trial_id == trial_id and d.outcome == "ended"), None)

    def _versus_cut(self, d) -> str:
        if d.standing:  # ranked by Pareto rank: no single cut
            return d.standing
        if d.cut is None:
            return "too few trials had reached the rung to promote any"
        if finite(d.value) and not self._better(d.cut, d.value):
            return f"at or above the rung's cut {_num(d.cut)}" if self.mode == "max" else \
                f"at or below the rung's cut {_num(d.cut)}"
        side = "below" if self.mode == "max" else "above"
        return f"{side} the rung's cut {_num(d.cut)}"

    def _below_cut(self, d) -> str:
        joint = ", " if d.standing else " " if d.cut is not None else ", but "
        return f"{self.metric} {_num(d.value)}{joint}{self._versus_cut(d)}"

    def _better(self, a: float, b: float) -> bool:
        return a > b if self.mode == "max" else a < b

    def _event(self, line: str, print_live: bool = True) -> None:
        """A plain line (without a terminal), or a line above the live view."""
        if self._view is None:
            print(f"[{_clock(self.elapsed)}] {line}", file=self.stream, flush=True)
        elif print_live:
            self._view.print(f"[{_clock(self.elapsed)}] {line}")
        if self._view:
            self._view.refresh()  # the elapsed and remaining times refresh by themselves

    def _say(self, line: str) -> None:
        print(line, file=self.stream, flush=True)


class _LiveView:
    """The rich live view of a SearchConsole (only on a terminal)."""

    def __init__(self, console: SearchConsole):
        from rich.console import Console
        from rich.live import Live
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.owner = console
        self.rich = Console(file=console.stream)
        self.progress = Progress(TextColumn("epochs"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("left (at most)"),
                                 TimeRemainingColumn(), console=self.rich)
        budget = console.total_trials * console.max_epochs
        self.task = self.progress.add_task("epochs", total=budget, completed=console.epochs)
        self.live = Live(self._render(), console=self.rich, refresh_per_second=4, transient=False)
        self.live.start()

    def print(self, line: str) -> None:
        self.live.console.print(line, highlight=False, markup=False)

    def refresh(self) -> None:
        self.progress.update(self.task, completed=self.owner.epochs)
        self.live.update(self._render())

    def stop(self) -> None:
        self.refresh()
        self.live.stop()

    def _render(self):
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        c = self.owner
        table = Table(box=None, pad_edge=False, header_style="bold")
        for column in ("trial", "epoch", c.metric, *c.also, "img/s", "config"):
            table.add_column(column)
        for trial_id, result in sorted(c._running.items()):
            table.add_row(trial_label(trial_id), str(result.get(EPOCH, "-")),
                          _num(result.get(c.metric)), *(_num(result.get(m)) for m in c.also),
                          f"{result.get('images_per_s', 0):.0f}", c._about.get(trial_id, ""))
        parts = [self.progress, table]
        if c._best:
            parts.append(Text(f"best so far: {trial_label(c._best[0])} {c.metric} "
                              f"{_num(c._best[1])} at epoch {c._best[2]}"))
        parts += [Text(line, style="dim") for line in c._recent]
        return Group(*parts)


def _num(value: Any) -> str:
    return f"{value:.4g}" if finite(value) else str(value)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:2d}:{secs:02d}"
