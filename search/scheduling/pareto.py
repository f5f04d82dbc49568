"""Several objectives: the Pareto front of a search, and the best model within a latency budget.

A search with `objectives = {"val_acc": "max", "latency_ms": "min"}` asks for every trade-off, not
one winner. A trial is judged by its values after its last epoch (the model it would ship: the
checkpoint kept is its latest), and only trials that trained all `max_epochs` can be on the front:
one stopped early has low-fidelity values (an accuracy of epoch 2 is not one of epoch 20), so it is
shown, marked, but never on the front and never the best model. Early stopping itself still ranks
by the first objective.

Optuna learns the same way: `FinalResultsOptuna` tells it a trial's values only when the trial ran
to the end; Ray reports a trial stopped early as complete with its last result, which would teach
Optuna (and its multi-objective front) low-fidelity values, so such a trial is told as pruned.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.tune.search.optuna import OptunaSearch

from core.hparams import HPARAMS
from search.door.domains import may_take
from trainables.metrics import EPOCH, finite_float

# A child run's tune_run.pareto tag, and how pareto.png draws each kind of trial.
ON_FRONT, DOMINATED, EARLY, NO_VALUE = "on-front", "dominated", "stopped-early", "no-value"


@dataclass(frozen=True)
class Objective:
    metric: str
    mode: str  # max | min

    def better(self, a: float, b: float) -> bool:
        return a > b if self.mode == "max" else a < b


def spec_objectives(spec) -> list[Objective]:
    """The objectives of a search spec: its `objectives` setting, else its one metric."""
    given = spec.settings.get("objectives") or {spec.metric: spec.mode}
    return [Objective(metric, mode) for metric, mode in given.items()]


def rung_objectives(spec) -> tuple[tuple[str, str], ...]:
    """The objectives beyond the first that promotion ASHA's rungs rank by (`promote_by: pareto`);
    none where rungs rank by the first objective alone."""
    if spec.promote_by != "pareto":
        return ()
    return tuple((o.metric, o.mode) for o in spec_objectives(spec)[1:])


def judged_on_last_epoch(spec) -> bool:
    """Whether trials are judged (and their model kept) at their last epoch rather than their best:
    with several objectives, or where channel pruning can shrink the model after its best epoch."""
    method = spec.space.get("prune_method", HPARAMS["prune_method"].default)
    ratio = spec.space.get("prune_ratio", HPARAMS["prune_ratio"].default)
    prunes = not isinstance(ratio, (int, float)) or ratio > 0
    return len(spec_objectives(spec)) > 1 or (prunes and may_take(method, "channel"))


def front(points: dict[str, dict[str, float]], objectives: list[Objective]) -> set[str]:
    """The ids of the points no other point dominates: the first layer of non-dominated sorting."""
    layers = nondominated_layers({i: _maximised(p, objectives) for i, p in points.items()})
    return {i for i, layer in layers.items() if layer == 1}


def _maximised(point: dict[str, float], objectives: list[Objective]) -> tuple[float, ...]:
    """The point's objectives as values to maximise (a min objective's value negated)."""
    return tuple(point[o.metric] if o.mode == "max" else -point[o.metric] for o in objectives)


def nondominated_layers(vectors: dict[str, tuple[float, ...]]) -> dict[str, int]:
    """Non-dominated sorting of points whose every coordinate is maximised: layer 1 is the front,
    layer 2 the front of the rest, and so on (NSGA-II's ranks)."""
    layers: dict[str, int] = {}
    left = dict(vectors)
    layer = 0
    while left:
        layer += 1
        current = {i for i, v in left.items()
                   if not any(_beats(w, v) for j, w in left.items() if j != i)}
        for i in current:
            layers[i] = layer
            del left[i]
    return layers


def crowding_distances(vectors: dict[str, tuple[float, ...]],
                       layers: dict[str, int]) -> dict[str, float]:
    """NSGA-II's crowding distance of each point within its layer: the ends of the layer in any
    coordinate get infinity, the others the sum over coordinates of the gap between their
    neighbours, as a share of the layer's range. Larger: a sparser part of the front."""
    distance = dict.fromkeys(vectors, 0.0)
    for layer in set(layers.values()):
        members = [i for i in vectors if layers[i] == layer]
        for k in range(len(next(iter(vectors.values())))):
            ranked = sorted(members, key=lambda i: vectors[i][k])
            low, high = vectors[ranked[0]][k], vectors[ranked[-1]][k]
            distance[ranked[0]] = distance[ranked[-1]] = math.inf
            if not math.isfinite(high - low) or high == low:
                continue
            for before, i, after in zip(ranked, ranked[1:], ranked[2:]):
                distance[i] += (vectors[after][k] - vectors[before][k]) / (high - low)
    return distance


def _beats(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Whether `a` dominates `b`: at least as good in every (maximised) coordinate, better in one."""
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def hypervolume_2d(points: list[dict[str, float]], objectives: list[Objective],
                   reference: dict[str, float]) -> float:
    """Area dominated by `points` up to `reference`, for two objectives (the usual quality figure
    of a front: larger is better, and it grows only when the front moves out)."""
    if len(objectives) != 2:
        raise ValueError(f"hypervolume_2d takes two objectives, got {len(objectives)}")
    x, y = objectives
    # As minimisation of both: a max objective's value is negated.
    sign = {o.metric: -1.0 if o.mode == "max" else 1.0 for o in objectives}
    ref = (sign[x.metric] * reference[x.metric], sign[y.metric] * reference[y.metric])
    pts = sorted((sign[x.metric] * p[x.metric], sign[y.metric] * p[y.metric]) for p in points)
    area, best_y = 0.0, ref[1]
    for px, py in pts:
        if px < ref[0] and py < best_y:
            area += (ref[0] - px) * (best_y - py)
            best_y = py
    return area


# --- a search's trials on the front -------------------------------------------------------------

def pareto_rows(spec, histories: list[tuple[Any, list[dict]]],
                objectives: list[Objective] | None = None) -> list[dict[str, Any]]:
    """One row per trial: its objectives (by default the spec's) after its last epoch, epochs,
    whether it ran to the end, and where it stands (ON_FRONT, DOMINATED, EARLY or NO_VALUE);
    front first, by first objective."""
    objectives = objectives or spec_objectives(spec)
    rows = []
    for trial, history in histories:
        last = history[-1] if history else {}
        values = {o.metric: finite_float(last.get(o.metric)) for o in objectives}
        full = bool(history) and ran_to_the_end(last, spec.max_epochs)
        rows.append({"trial": trial.trial_id, "epochs": int(last.get(EPOCH, 0)), "full": full,
                     **values, "params": finite_float(last.get("params")),
                     **{k: trial.config.get(k) for k in spec.dimensions}})
    scored = {r["trial"]: r for r in rows if r["full"] and None not in (r[o.metric] for o in objectives)}
    on_front = front(scored, objectives)
    for r in rows:
        has_values = None not in (r[o.metric] for o in objectives)
        r["pareto"] = (ON_FRONT if r["trial"] in on_front else DOMINATED if r["trial"] in scored
                       else EARLY if has_values and not r["full"] else NO_VALUE)
    first = objectives[0]
    order = [ON_FRONT, DOMINATED, EARLY, NO_VALUE]
    rows.sort(key=lambda r: (order.index(r["pareto"]), _rank(r[first.metric], first)))
    return rows


def best_row(rows: list[dict[str, Any]], objectives: list[Objective],
             max_latency_ms: float | None) -> tuple[dict[str, Any] | None, str]:
    """The trial to ship, and why: the best in the first objective among the front (within the
    latency budget when one is set; ties go to the better in the next objectives). None when no
    trial ran to the end with every objective."""
    front_rows = [r for r in rows if r["pareto"] == ON_FRONT]
    if not front_rows:
        return None, "no trial ran all its epochs"
    within = front_rows
    if max_latency_ms is not None:
        within = [r for r in front_rows if r.get("latency_ms") is not None
                  and r["latency_ms"] <= max_latency_ms]
        if not within:
            fastest = min(r.get("latency_ms") or math.inf for r in front_rows)
            return None, (f"no trial on the front is within max_latency_ms {max_latency_ms:g} "
                          f"(the fastest takes {fastest:.3g} ms)")
    best = min(within, key=lambda r: tuple(_rank(r[o.metric], o) for o in objectives))
    why = f"most {objectives[0].metric} on the front" + (
        f" within {max_latency_ms:g} ms" if max_latency_ms is not None else "")
    return best, why


def write_front(spec, rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """pareto.csv (every trial, where it stands) and pareto.png (the first two objectives)."""
    objectives = spec_objectives(spec)
    columns = ["trial", "pareto", "epochs", *(o.metric for o in objectives), "params",
               *spec.dimensions]
    columns = list(dict.fromkeys(columns))
    with open(out / "pareto.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: "" if r.get(k) is None else r.get(k) for k in columns} for r in rows)
    files = [out / "pareto.csv"]
    if len(objectives) >= 2:
        files.append(_plot_front(rows, objectives, out / "pareto.png"))
    return files


def front_table(rows: list[dict[str, Any]], objectives: list[Objective]) -> list[dict[str, Any]]:
    """The front's rows with the columns a reader compares (for the console and descriptions)."""
    return [{"trial": r["trial"], **{o.metric: r[o.metric] for o in objectives}, "params": r["params"]}
            for r in rows if r["pareto"] == ON_FRONT]


def _plot_front(rows: list[dict[str, Any]], objectives: list[Objective], path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    x, y = objectives[1], objectives[0]  # cost across, the first objective up
    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    styles = {DOMINATED: dict(color="0.65", marker="o", label="dominated"),
              EARLY: dict(color="0.65", marker="x", label="stopped early (not eligible)"),
              ON_FRONT: dict(color="tab:red", marker="o", label="on the front")}
    for kind, style in styles.items():
        pts = [(r[x.metric], r[y.metric]) for r in rows if r["pareto"] == kind]
        if pts:
            ax.scatter(*zip(*pts), s=36, zorder=3 if kind == ON_FRONT else 2, **style)
    line = sorted((r[x.metric], r[y.metric]) for r in rows if r["pareto"] == ON_FRONT)
    if len(line) > 1:
        ax.plot(*zip(*line), color="tab:red", drawstyle="steps-post" if x.mode == "min" else None,
                linewidth=1, zorder=2)
    for r in rows:
        if r["pareto"] == ON_FRONT:
            ax.annotate(r["trial"].rsplit("_", 1)[-1], (r[x.metric], r[y.metric]), fontsize=7,
                        xytext=(4, 3), textcoords="offset points")
    ax.set_xlabel(f"{x.metric} ({x.mode})")
    ax.set_ylabel(f"{y.metric} ({y.mode})")
    ax.set_title("Pareto front: trials no other trial beats in every objective")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _rank(value: float | None, objective: Objective) -> float:
    if value is None:
        return math.inf
    return -value if objective.mode == "max" else value


# --- what Optuna is told ------------------------------------------------------------------------

class FinalResultsOptuna(OptunaSearch):
    """Ray's OptunaSearch, told a trial's values only when it trained all `max_epochs` epochs.

    Ray calls `on_trial_complete` with the last result of a trial that ASHA stopped or that
    diverged, and OptunaSearch would record it COMPLETE at those low-fidelity values; here it is
    recorded PRUNED (and an errored trial FAIL). With several objectives the study is
    multi-objective (Optuna's TPE handles both), and the Tuner's single metric (the first
    objective, for early stopping) does not replace the list.
    """

    def __init__(self, objectives: list[Objective], max_epochs: int, **kwargs):
        multi = len(objectives) > 1
        super().__init__(metric=[o.metric for o in objectives] if multi else None,
                         mode=[o.mode for o in objectives] if multi else None, **kwargs)
        self.max_epochs = max_epochs
        self.multi_objective = multi

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec) -> bool:
        if self.multi_objective:
            metric, mode = None, None  # keep the objectives' lists
        return super().set_search_properties(metric, mode, config, **spec)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._adopt(trial_id, result)
        if trial_id in self._ot_trials:
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if result:
            self._adopt(trial_id, result)
        if trial_id not in self._ot_trials:
            return  # never suggested here, and nothing to say about it
        if error or (result and not ran_to_the_end(result, self.max_epochs)):
            # OptunaSearch records a trial without a result as FAIL (error) or PRUNED; with one, it
            # would tell COMPLETE even for an error.
            result = None
        super().on_trial_complete(trial_id, result=result, error=error)

    def _adopt(self, trial_id: str, result: dict) -> None:
        """Gives Optuna a trial of the experiment it has no record of, asked with the trial's own
        configuration. Ray copies its snapshot files one by one: a driver killed during the copy
        can leave a searcher state older than the experiment state, whose newer trials then
        report to a study that never asked for them (a KeyError that ended the resumed search)."""
        if trial_id in self._ot_trials or callable(self._space) or not self._space:
            return
        params = {name: result.get(f"config/{name}") for name in self._space}
        if any(value is None for value in params.values()):
            return
        self._ot_study.enqueue_trial(params)
        self._ot_trials[trial_id] = self._ot_study.ask(fixed_distributions=self._space)


def ran_to_the_end(result: dict, max_epochs: int) -> bool:
    return int(result.get(EPOCH, 0)) >= max_epochs and not result.get("diverged")
