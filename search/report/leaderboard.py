"""A search told by its parent run: leaderboard, plots and hyperparameter importance.

Everything comes from Ray's experiment folder (each trial's result.json), so a finished search, an
interrupted one and one rebuilt by `tune-run sync` get the same report; nothing is trained.
Plots use matplotlib's Agg canvas directly: no pyplot state, no display needed.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from ray.tune.experiment import Trial
from ray.tune.search.sample import Float, Integer

from search.door.domains import domain_choices, is_log, value_set
from search.door.spec import SearchSpec
from search.errors import SpecError
from search.place import experiment_folder
from search.record.outcome import outcome_kind, outcome_of
from search.record.tracking import SearchRecord
from search.scheduling.pareto import front_table, pareto_rows, rung_objectives, spec_objectives, write_front
from trainables.metrics import EPOCH, finite, finite_float

REPORT_DIR = "report"  # in the experiment folder, and the artifact folder of the parent run
# Trials that ran to their own end (ASHA's stop included); only these inform the importance.
ENDED = ("completed", "stopped_early", "diverged")


@dataclass
class Report:
    rows: list[dict[str, Any]]  # one per trial, best first (see `leaderboard_rows`)
    files: list[Path] = field(default_factory=list)
    importance: dict[str, Any] = field(default_factory=dict)  # what importance.json holds
    histories: list[tuple[Trial, list[dict]]] = field(default_factory=list)  # Ray's order
    pareto: list[dict[str, Any]] = field(default_factory=list)  # several objectives: pareto_rows


def build_report(spec: SearchSpec, out_dir: str | Path) -> Report:
    """Writes the report of the search of `spec` into `out_dir` and returns its rows and files.

    Files: leaderboard.csv and leaderboard.md (one row per trial, best first), learning_curves.png,
    metric_vs_<hparam>.png per searched hyperparameter, parallel_coordinates.png, importance.json,
    and importance.png when the importance could be computed (>= 2 ended trials and a dimension
    with more than one observed value). Raises SpecError if there is no experiment folder.
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SpecError(f"{out}: cannot create the report folder: {e.strerror}") from None
    histories = trial_histories(spec)
    rows = leaderboard_rows(spec, histories)
    report = Report(rows, histories=histories)
    report.files += _write_leaderboard(spec, rows, out)
    report.files.append(_plot_learning_curves(spec, rows, histories, out / "learning_curves.png"))
    for name in spec.dimensions:
        report.files.append(_plot_metric_vs(spec, rows, name, out / f"metric_vs_{name}.png"))
    report.files.append(_plot_parallel(spec, rows, out / "parallel_coordinates.png"))
    ended = [(r, r[spec.metric]) for r in rows if r["status"] in ENDED and finite(r[spec.metric])]
    report.importance = hparam_importance(
        {k: spec.space[k] for k in spec.dimensions}, spec.mode,
        [({k: r[k] for k in spec.dimensions}, value) for r, value in ended],
    ) | {"metric": spec.metric, "mode": spec.mode}
    (out / "importance.json").write_text(json.dumps(report.importance, indent=2) + "\n")
    report.files.append(out / "importance.json")
    if "importances" in report.importance:
        report.files.append(_plot_importance(report.importance, out / "importance.png"))
    if len(spec_objectives(spec)) > 1:
        report.pareto = pareto_rows(spec, histories)
        report.files += write_front(spec, report.pareto, out)
    return report


def log_report(spec: SearchSpec, record: SearchRecord, out_dir: str | Path | None = None) -> Report:
    """Builds the report (by default into the experiment folder's report/) and logs its files to
    the parent run under report/; running it again overwrites them."""
    report = build_report(spec, out_dir or spec.experiment_path / REPORT_DIR)
    record.log_files(report.files, REPORT_DIR)
    return report


# --- the data -----------------------------------------------------------------------------------

def trial_histories(spec: SearchSpec) -> list[tuple[Trial, list[dict]]]:
    """Every trial of the experiment folder with its reported epochs, in Ray's order."""
    if not spec.experiment_path.is_dir():
        raise SpecError(f"no experiment folder at {spec.experiment_path}")
    return experiment_folder.trial_histories(spec.experiment_path)


def leaderboard_rows(spec: SearchSpec, histories: list[tuple[Trial, list[dict]]]
                     ) -> list[dict[str, Any]]:
    """One row per trial, best first by spec.metric (trials without it last): trial, status,
    epochs, the best value of the metric and its epoch (best_epoch), final_val_loss, and the
    value of each searched hyperparameter."""
    rows = []
    for trial, history in histories:
        scored = [h for h in history if finite(h.get(spec.metric))]
        pick = max if spec.mode == "max" else min
        best = pick(scored, key=lambda h: h[spec.metric]) if scored else None
        rows.append({
            "trial": trial.trial_id,
            "status": outcome_kind(trial.status, history[-1] if history else {}, spec.max_epochs),
            "epochs": int(history[-1][EPOCH]) if history else 0,
            spec.metric: float(best[spec.metric]) if best else None,
            "best_epoch": int(best[EPOCH]) if best else None,
            "final_val_loss": finite_float(history[-1].get("val_loss")) if history else None,
            **{k: trial.config.get(k) for k in spec.dimensions},
        })
    sign = -1 if spec.mode == "max" else 1
    rows.sort(key=lambda r: (r[spec.metric] is None, sign * (r[spec.metric] or 0.0)))
    return rows


# --- the leaderboard ----------------------------------------------------------------------------

def _write_leaderboard(spec: SearchSpec, rows: list[dict[str, Any]], out: Path) -> list[Path]:
    columns = _columns(spec)
    with open(out / "leaderboard.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: "" if r[k] is None else r[k] for k in columns} for r in rows)
    (out / "leaderboard.md").write_text(
        f"# {spec.name}: trials by {spec.metric} ({spec.mode})\n\n" + leaderboard_markdown(rows)
        + "\n")
    return [out / "leaderboard.csv", out / "leaderboard.md"]


def _columns(spec: SearchSpec) -> list[str]:
    return ["trial", "status", "epochs", spec.metric, "best_epoch", "final_val_loss",
            *spec.dimensions]


def leaderboard_markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (columns of the first row; floats to 4 significant digits)."""
    if not rows:
        return "(no trials)"
    columns = list(rows[0])
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    lines = [columns, ["-" * w for w in widths], *cells]
    return "\n".join(
        "| " + " | ".join(v.ljust(w) for v, w in zip(line, widths)) + " |" for line in lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


# --- hyperparameter importance ------------------------------------------------------------------

def hparam_importance(dimensions: dict[str, Any], mode: str,
                      trials: list[tuple[dict[str, Any], float]]) -> dict[str, Any]:
    """fANOVA importance of each searched hyperparameter for the trials' scores.

    `dimensions` maps names to Ray Tune domains (tune.grid_search too); `trials` are
    (hyperparameters, score) pairs. Returns {"method", "trials", "importances": {name: share},
    "not_used": {name: why}}, importances summing to 1, most important first; or {"trials",
    "note"} when there is too little to go on (fewer than 2 trials, no hyperparameter with two
    observed values, or every trial scoring the same).
    """
    import optuna

    if len(trials) < 2:
        return {"trials": len(trials),
                "note": f"needs at least 2 ended trials with a score, got {len(trials)}"}
    distributions, not_used = {}, {}
    for name, domain in dimensions.items():
        dist = _distribution(domain, [params.get(name) for params, _ in trials])
        if isinstance(dist, str):
            not_used[name] = dist
        else:
            distributions[name] = dist
    varied = [k for k in distributions if len({repr(p[k]) for p, _ in trials}) > 1]
    note = None
    if not varied:
        note = "no searched hyperparameter took more than one value in these trials"
    elif len({value for _, value in trials}) < 2:
        note = "every trial scored the same"
    if note:
        return {"trials": len(trials), "note": note} | ({"not_used": not_used} if not_used else {})

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    study.add_trials([
        optuna.trial.create_trial(params={k: params[k] for k in distributions},
                                  distributions=distributions, value=float(value))
        for params, value in trials
    ])
    importances = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    return {"method": "fANOVA (optuna FanovaImportanceEvaluator, seed 0)", "trials": len(trials),
            "importances": {k: float(v) for k, v in importances.items()}} | (
        {"not_used": not_used} if not_used else {})


def _distribution(domain: Any, observed: list[Any]):
    """The Optuna distribution of a Ray Tune domain, widened to hold the observed values; or a
    string saying why there is none."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if any(v is None for v in observed):
        return "some trials have no value"
    choices = domain_choices(domain)
    if choices is not None:
        if not all(c is None or isinstance(c, (bool, int, float, str)) for c in choices):
            return "categories other than None, bool, int, float or str"
        return CategoricalDistribution(choices)
    if isinstance(domain, (Float, Integer)):
        values = value_set(domain)
        bounds = [] if values is None else [values.low, values.high]
        low, high = min(observed + bounds), max(observed + bounds)
        if isinstance(domain, Integer):
            return IntDistribution(int(low), int(high), log=is_log(domain))
        return FloatDistribution(float(low), float(high), log=is_log(domain))
    return f"{type(domain).__name__} domains have no Optuna distribution"


# --- descriptions (what the MLflow UI shows first on a run's page) -----------------------------

# What each file of the report holds, as the parent run's description lists them.
REPORT_FILES = {
    "leaderboard.csv, leaderboard.md": "every trial ranked, with how it ended and its hyperparameters",
    "learning_curves.png": "the metric per epoch of every trial (those ASHA stopped dashed)",
    "metric_vs_<hyperparameter>.png": "each trial's best metric against each searched value",
    "parallel_coordinates.png": "every trial's hyperparameters, coloured by its best metric",
    "importance.json, importance.png": "fANOVA importance of each hyperparameter",
}
PARETO_FILES = {
    "pareto.csv, pareto.png": "each trial's objectives after its last epoch and where it stands: on "
                              "the front, dominated, or stopped early (never eligible)",
}


def describe_runs(spec: SearchSpec, record: SearchRecord, report: Report,
                  summary: dict[str, Any] | None) -> None:
    """Sets the Description of the parent run (the search, its top 5, best configuration and test
    accuracy, what the report holds) and of each child run (how its trial ended, and why)."""
    cuts = rung_cuts(spec, report.histories)
    standing = {r["trial"]: r["pareto"] for r in report.pareto}
    for trial, history in report.histories:
        run_id = record.opened(trial.trial_id)
        if run_id:
            tags = {"tune_run.pareto": standing[trial.trial_id]} if trial.trial_id in standing else {}
            record.describe(run_id, trial_description(spec, trial, history, cuts), tags)
    record.describe(record.parent_id, search_description(spec, report, summary))


def rung_book(spec: SearchSpec, histories: list[tuple[Trial, list[dict]]]):
    """ASHA's rungs (search/scheduling/promotion.py's Rungs) rebuilt from every trial's results."""
    from search.scheduling.promotion import Rungs, spec_rungs

    also = rung_objectives(spec)
    rungs = Rungs(list(spec_rungs(spec)), spec.reduction_factor, spec.mode,
                  tuple(mode for _, mode in also))
    for trial, history in histories:
        for row in history:
            if int(row[EPOCH]) in rungs.milestones:
                rungs.record(trial.trial_id, int(row[EPOCH]), row.get(spec.metric),
                             tuple(row.get(metric) for metric, _ in also))
    return rungs


def rung_cuts(spec: SearchSpec, histories: list[tuple[Trial, list[dict]]]
              ) -> dict[int, tuple[float | None, int]]:
    """Each rung's epoch -> (its cut over every trial that reached it, how many reached it)."""
    rungs = rung_book(spec, histories)
    return {m: (rungs.cut(m), len(rungs.results[m])) for m in rungs.milestones}


def trial_description(spec: SearchSpec, trial: Trial, history: list[dict],
                      cuts: dict[int, tuple[float | None, int]]) -> str:
    """How a trial ended and why, in a sentence or two of Markdown (`TrialOutcome.description`,
    with why ASHA stopped it at its rung from `cuts`, those of `rung_cuts`)."""
    last = history[-1] if history else {}
    outcome = outcome_of(trial, last, spec.max_epochs, tuple(cuts))
    scored = [h for h in history if finite(h.get(spec.metric))]
    pick = max if spec.mode == "max" else min
    best = pick(scored, key=lambda h: h[spec.metric]) if scored else None
    why = _why_stopped(spec, last.get(spec.metric), *cuts[outcome.epochs]) if outcome.rung else ""
    return outcome.description(spec.metric, best, why,
                               experiment_folder.resume_command(spec.name, spec.storage))


def _why_stopped(spec: SearchSpec, value: Any, cut: float | None, reached: int) -> str:
    """Why ASHA kept a trial with `value` at a rung that `reached` trials reached, against `cut`."""
    keep = f"the top 1/{spec.reduction_factor:g} of the {reached} trials that reached it"
    if spec.promote_by == "pareto":
        names = ", ".join(o.metric for o in spec_objectives(spec))
        return (f"it ranked below {keep} by Pareto rank of {names}, or was not promoted "
                "before the search ended")
    if cut is None:
        return f"too few trials reached it for any to go on ({keep})"
    if finite(value) and (value < cut if spec.mode == "max" else value > cut):
        side = "below" if spec.mode == "max" else "above"
        return f"{spec.metric} {value:.4g} was {side} the rung's cut {cut:.4g} ({keep} went on)"
    return (f"{spec.metric} {_cell(finite_float(value))} against the rung's cut {cut:.4g} ({keep}); "
            "it was not promoted before the search ended")


def search_description(spec: SearchSpec, report: Report, summary: dict[str, Any] | None) -> str:
    """The parent run's Description: the search in one sentence, its top 5, the best
    configuration and its test accuracy, and what the report artifacts hold."""
    s = spec.settings
    rows = report.rows
    epochs = sum(len(h) for _, h in report.histories)
    data = s["dataset"] + (f" ({s['subset']} training images)" if s["subset"] else "")
    scheduler = {"asha": "promotion ASHA", "asha_stopping": "Ray's stopping ASHA",
                 "fifo": "no early stopping"}.get(s["scheduler"], s["scheduler"])
    lines = [f"Search of `{Path(spec.origin).name}` on {data}: {len(rows)} trials "
             f"({s['search']} search, {scheduler}) of up to {spec.max_epochs} epochs, "
             f"{epochs} epochs trained in {_duration(_wall_s(report.histories))}, by "
             f"{spec.metric} ({spec.mode}).", ""]
    if summary is None:
        asked = experiment_folder.stop_request(spec.experiment_path)
        how = (f" (stopped by `tune-run stop` from {asked.get('by', '?')} at "
               f"{_when(asked.get('at'))})" if asked else "")
        lines += [f"**Unfinished**{how}: resume it with "
                  f"`{experiment_folder.resume_command(spec.name, spec.storage)}`.", ""]
    lines += [f"**Top {min(5, len(rows))}** by {spec.metric}:", "",
              leaderboard_markdown([{k: r[k] for k in _columns(spec) if k != "final_val_loss"}
                                    for r in rows[:5]]), ""]
    if summary is not None:
        lines += [f"**Best configuration** ({summary['best_trial_id']}, also in "
                  f"`best_config.json`): `{json.dumps(summary['best_config'], default=str)}`", "",
                  f"**Test accuracy** of its best checkpoint: {summary['test_acc']:.4f} (loss "
                  f"{summary['test_loss']:.4f}), on the test split, used once at the end.", ""]
    if report.pareto:
        objectives = spec_objectives(spec)
        front = front_table(report.pareto, objectives)
        names = " against ".join(f"{o.metric} ({o.mode})" for o in objectives)
        lines += [f"**Pareto front** of {names}: {len(front)} trials, at their last epoch "
                  "(trials stopped early are not eligible):", "", leaderboard_markdown(front), ""]
        if summary is not None and summary.get("why"):
            lines += [f"The best model is {summary['best_trial_id']}'s: {summary['why']}.", ""]
    lines += [f"**Report** (artifacts under `{REPORT_DIR}/`):", ""]
    files = REPORT_FILES | (PARETO_FILES if report.pareto else {})
    lines += [f"- `{name}`: {what}" for name, what in files.items()]
    return "\n".join(lines)


def _when(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def _wall_s(histories: list[tuple[Trial, list[dict]]]) -> float:
    """From the first trial's start to the last result, from the rows' timestamps (s)."""
    timed = [h for _, h in histories if h and "timestamp" in h[0] and "timestamp" in h[-1]]
    starts = [h[0]["timestamp"] - h[0].get("time_this_iter_s", 0) for h in timed]
    ends = [h[-1]["timestamp"] for h in timed]
    return max(ends) - min(starts) if ends else 0.0


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


# --- plots --------------------------------------------------------------------------------------

STYLE = {  # status -> how a trial's line or point is drawn, and its legend text
    "completed": {"color": "tab:blue", "linestyle": "-", "marker": "o",
                  "label": "completed"},
    "stopped_early": {"color": "0.55", "linestyle": "--", "marker": "X",
                      "label": "stopped early by ASHA"},
    "other": {"color": "tab:red", "linestyle": ":", "marker": "v",
              "label": "diverged, error or interrupted"},
}


def _style(status: str) -> dict[str, str]:
    return STYLE.get(status, STYLE["other"])


def _figure(width: float = 7.0, height: float = 4.5) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _plot_learning_curves(spec: SearchSpec, rows: list[dict[str, Any]],
                          histories: list[tuple[Trial, list[dict]]], path: Path) -> Path:
    fig, ax = _figure()
    status = {r["trial"]: r["status"] for r in rows}
    curves = {t.trial_id: [(h[EPOCH], h[spec.metric]) for h in history
                           if finite(h.get(spec.metric))] for t, history in histories}
    for style in STYLE.values():
        mine = [c for trial_id, c in curves.items() if c and _style(status[trial_id]) is style]
        for i, curve in enumerate(mine):
            ax.plot(*zip(*curve), color=style["color"], linestyle=style["linestyle"],
                    marker=style["marker"], markersize=5, alpha=0.8,
                    label=f"{style['label']} ({len(mine)})" if i == 0 else None)
    best = rows[0]["trial"] if rows and rows[0][spec.metric] is not None else None
    if best:
        ax.plot(*zip(*curves[best]), color="tab:orange", linewidth=2.5, marker="o", zorder=3,
                label=f"best: {best}")
    ax.set_xlabel("epoch")
    ax.set_ylabel(spec.metric)
    ax.set_title(f"{spec.name}: {spec.metric} per epoch, {len(histories)} trials")
    ax.xaxis.get_major_locator().set_params(integer=True)
    if best:
        ax.legend(fontsize="small")
    fig.savefig(path)
    return path


def _plot_metric_vs(spec: SearchSpec, rows: list[dict[str, Any]], name: str, path: Path) -> Path:
    fig, ax = _figure(6.0, 4.0)
    scored = [r for r in rows if r[spec.metric] is not None and r[name] is not None]
    kind, categories = _axis_kind(spec.space[name], [r[name] for r in scored])
    jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(scored))
    for style in STYLE.values():
        mine = [(i, r) for i, r in enumerate(scored) if _style(r["status"]) is style]
        if not mine:
            continue
        x = [_position(r[name], categories) + jitter[i] if kind == "categorical" else r[name]
             for i, r in mine]
        ax.scatter(x, [r[spec.metric] for _, r in mine], color=style["color"],
                   marker=style["marker"], label=f"{style['label']} ({len(mine)})",
                   edgecolor="black", linewidth=0.5)
    if kind == "log":
        ax.set_xscale("log")
    if kind == "categorical":
        ax.set_xticks(range(len(categories)), [str(c) for c in categories])
        ax.set_xlim(-0.5, len(categories) - 0.5)
    ax.set_xlabel(name + (" (log scale)" if kind == "log" else ""))
    ax.set_ylabel(f"best {spec.metric}")
    ax.set_title(f"best {spec.metric} of each trial vs {name}")
    if scored:
        ax.legend(fontsize="small")
    fig.savefig(path)
    return path


def _axis_kind(domain: Any, values: list[Any]) -> tuple[str, list[Any]]:
    """'log', 'linear' or 'categorical', and the categories in their order."""
    if isinstance(domain, (Float, Integer)):
        return ("log" if is_log(domain) else "linear"), []
    categories = domain_choices(domain)
    if categories is None and values and all(finite(v) for v in values):  # sample_from numbers
        return "linear", []
    if categories is None:
        categories = sorted({repr(v): v for v in values}.values(), key=str)
    for v in values:
        if _position(v, categories) < 0:
            categories.append(v)
    return "categorical", categories


def _position(value: Any, categories: list[Any]) -> int:
    return next((i for i, c in enumerate(categories) if repr(c) == repr(value)), -1)


def _plot_parallel(spec: SearchSpec, rows: list[dict[str, Any]], path: Path) -> Path:
    dims = spec.dimensions
    fig, ax = _figure(max(5.0, 1.8 * len(dims) + 2), 4.5)
    scored = [r for r in rows if r[spec.metric] is not None and
              all(r[k] is not None for k in dims)]
    scales = {k: _scale(spec.space[k], [r[k] for r in scored]) for k in dims}
    values = [r[spec.metric] for r in scored]
    norm = _norm(values)
    cmap = _colormap("viridis" if spec.mode == "max" else "viridis_r")
    # Worst first, so the best lines are drawn on top.
    for r in sorted(scored, key=lambda r: r[spec.metric], reverse=spec.mode == "min"):
        ax.plot(range(len(dims)), [scales[k][0](r[k]) for k in dims], marker="o",
                color=cmap(norm(r[spec.metric])), alpha=0.85)
    for i, k in enumerate(dims):
        ax.axvline(i, color="black", linewidth=0.8)
        for y, text in scales[k][1]:
            ax.annotate(text, (i, y), xytext=(4, 0), textcoords="offset points", fontsize=7,
                        va="center")
    ax.set_xticks(range(len(dims)), dims)
    ax.set_xlim(-0.2, len(dims) - 0.5)
    ax.set_ylim(-0.05, 1.05)
    ax.set_yticks([])
    ax.set_title(f"hyperparameters of {len(scored)} trials, coloured by best {spec.metric}")
    from matplotlib.cm import ScalarMappable

    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=f"best {spec.metric}")
    fig.savefig(path)
    return path


def _colormap(name: str):
    import matplotlib

    return matplotlib.colormaps[name]


def _norm(values: list[float]):
    from matplotlib.colors import Normalize

    if not values:
        return Normalize(0.0, 1.0)
    low, high = min(values), max(values)
    return Normalize(low, high if high > low else low + 1e-12)


def _scale(domain: Any, values: list[Any]):
    """A map of values to [0, 1] on one axis, and the (position, text) tick labels of the axis."""
    kind, categories = _axis_kind(domain, values)
    if kind == "categorical":
        span = max(len(categories) - 1, 1)
        return (lambda v: _position(v, categories) / span,
                [(i / span, str(c)) for i, c in enumerate(categories)])
    to_axis = math.log10 if kind == "log" else float
    low, high = (min(map(to_axis, values)), max(map(to_axis, values))) if values else (0.0, 1.0)
    width = high - low

    def place(v):
        return (to_axis(v) - low) / width if width else 0.5

    ends = [(0.0, min(values)), (1.0, max(values))] if values and width else (
        [(0.5, values[0])] if values else [])
    return place, [(y, f"{v:.3g}") for y, v in ends]


def _plot_importance(importance: dict[str, Any], path: Path) -> Path:
    shares = importance["importances"]
    fig, ax = _figure(6.0, 2.5 + 0.4 * len(shares))
    names = list(shares)[::-1]  # most important on top
    ax.barh(names, [shares[k] for k in names], color="tab:blue")
    ax.set_xlabel(f"share of the variance of best {importance['metric']} (fANOVA)")
    ax.set_title(f"hyperparameter importance, {importance['trials']} trials")
    ax.set_xlim(0, 1)
    fig.savefig(path)
    return path
