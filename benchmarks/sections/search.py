"""Section `search`: how much a search finds per epoch, replayed in virtual time on a surrogate.

Every method (benchmarks/virtual/methods.py: tune-run's searchers with promotion ASHA, and the
baselines in their libraries' own code) runs k asynchronous workers against a learning-curve
surrogate (benchmarks/virtual/surrogate.py, LCBench by default) on a virtual clock
(benchmarks/virtual/replay.py), for YAHPO Gym's budget: 20 + 40 * sqrt(d) full-fidelity
evaluations counted in epochs. The measure is normalized regret of the surrogate's metric at 10, 25,
50 and 100 % of the budget, per task, then averaged over tasks: (y_best - y) / (y_best - y_worst),
where y_best and y_worst pool every evaluation (every epoch) of every method and seed on the task,
as YAHPO does; and against a fixed reference, the best and worst of 20,000 random configurations at
the last epoch, which does not move with the methods run (a method can beat its best: below 0).
It also times tune-run's own work per decision at 100, 1,000 and 5,000 trials (part 7).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import mean, stdev

from benchmarks.harness import Context, Report, Section, Table, Target, fmt

RESULTS = "RESULTS-search.md"
SURROGATE = Path("/work/shared/benchmarks/lcbench")
SHARES = (0.10, 0.25, 0.50, 1.00)
CURVE_POINTS = 100  # the best value is kept at each 1 % of the budget, for the plot
REFERENCE_CONFIGS = 20_000
COST_SIZES = (100, 1_000, 5_000)
REPLAYS_FILE = "search-replays.jsonl"  # each replay as it ends, beside the results (reused)
# YAHPO Gym's study (Pfisterer et al. 2022), one worker, normalized regret at the full budget, read
# off the paper's plots (about +-15 %), on LCBench tasks 167168, 189873, 189906.
YAHPO_TASKS = ("167168", "189873", "189906")
YAHPO = {"random": (0.12, 0.17, 0.08), "hyperband": (0.088, 0.12, 0.065),
         "dehb": (0.076, 0.115, 0.054), "bohb": (0.040, 0.063, 0.034),
         "optuna TPE + median pruner": (0.058, 0.059, 0.026), "smac-hb": (0.022, 0.021, 0.011)}
YAHPO_OURS = {"random": "random", "hyperband": "hyperband", "dehb": "dehb", "bohb": "bohb",
              "optuna TPE + median pruner": "tpe+asha", "smac-hb": "smac-hb"}

SEARCHER_VS_BOHB = Target("tune-run's searcher: mean regret <= BOHB's (ratio <= 1)", "<=", 1.0)
SEARCHER_VS_DEHB = Target("tune-run's searcher: mean regret <= DEHB's (ratio <= 1)", "<=", 1.0)
SEARCHER_VS_RANDOM_ASHA = Target("tune-run's searcher: mean regret <= half of random + promotion "
                                 "ASHA's (ratio <= 0.5)", "<=", 0.5)
SUGGESTION_MS = Target("<= 50 ms per suggestion at 5,000 trials", "<=", 50.0)
RUNG_DECISION_MS = Target("<= 5 ms per rung decision at 5,000 trials", "<=", 5.0)
TARGET_SHARES = (0.25, 1.00)


@dataclass(frozen=True)
class Sizes:
    tasks: tuple[str, ...] | None  # None: every task of the surrogate
    seeds: int
    first_seed: int
    workers: tuple[int, ...]
    costs: tuple[int, ...]
    budget_share: float = 1.0  # of YAHPO's budget (quick runs only)


FULL = Sizes(tasks=None, seeds=10, first_seed=0, workers=(1, 4), costs=COST_SIZES)
QUICK = Sizes(tasks=("167168",), seeds=1, first_seed=0, workers=(1, 2), costs=(100,),
              budget_share=0.05)


def yahpo_budget(dimensions: int, max_epochs: int) -> int:
    """YAHPO Gym's multi-fidelity budget in epochs: 20 + 40 * sqrt(d) full evaluations."""
    return int(round((20 + 40 * math.sqrt(dimensions)) * max_epochs))


def _sizes(ctx: Context) -> Sizes:
    """The section's sizes with the driver's --tasks, --seeds, --first-seed and --workers."""
    o, s = ctx.options, ctx.sizes
    return Sizes(tasks=tuple(o["tasks"].split(",")) if o.get("tasks") else s.tasks,
                 seeds=o.get("seeds") or s.seeds,
                 first_seed=s.first_seed if o.get("first_seed") is None else o["first_seed"],
                 workers=tuple(int(k) for k in o["workers"].split(",")) if o.get("workers")
                 else s.workers, costs=s.costs, budget_share=s.budget_share)


def available_methods(problem) -> tuple[list, dict[str, str]]:
    """The methods that run here, and why each of the others does not."""
    from benchmarks.virtual.methods import METHODS, replay_spec

    ready, skipped = [], {}
    for method in METHODS:
        try:
            if method.library:
                importlib.import_module(method.library)
            if method.search:
                replay_spec(problem, method.search, "asha")  # the door knows the searcher
        except Exception as e:  # not installed, not written yet, or refused by the door
            skipped[method.name] = f"{type(e).__name__}: {e}".splitlines()[0][:200]
            continue
        ready.append(method)
    return ready, skipped


def run_search(ctx: Context) -> dict:
    import optuna

    from benchmarks.virtual.methods import Problem, default_method, default_search
    from benchmarks.virtual.surrogate import Surrogate, ray_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sizes = _sizes(ctx)
    surrogate = Surrogate(ctx.options.get("surrogate") or SURROGATE)
    tasks = list(sizes.tasks or surrogate.instances)
    unknown = [t for t in tasks if t not in surrogate.instances]
    if unknown:
        raise ValueError(f"--tasks: {', '.join(unknown)} not in {surrogate.folder}'s instances "
                         f"({', '.join(surrogate.instances)})")
    space = ray_space(surrogate.searched)
    full_budget = yahpo_budget(len(surrogate.searched), surrogate.max_epochs)
    budget = max(surrogate.max_epochs, int(full_budget * sizes.budget_share))

    def problem(task: str, workers: int, seed: int) -> Problem:
        return Problem(surrogate.searched, space, surrogate.min_epochs, surrogate.max_epochs,
                       workers, seed, surrogate.mode, lambda c: surrogate.curve(task, c))

    methods, skipped = available_methods(problem(tasks[0], 1, 0))
    searcher_source = _source_digest("search.scheduling.multifidelity")  # as imported, not later
    seeds = list(range(sizes.first_seed, sizes.first_seed + sizes.seeds))
    kept = _kept_replays(ctx, surrogate, budget)
    replays = []
    for task in tasks:
        for workers in sizes.workers:
            for seed in seeds:
                for method in methods:
                    key = _replay_key(method.name, task, workers, seed)
                    if key not in kept:
                        kept[key] = _replay_once(method, problem(task, workers, seed), budget)
                        kept[key] |= {"method": method.name, "task": task, "workers": workers,
                                      "seed": seed}
                        _keep(ctx, surrogate, budget, kept[key])
                    replays.append(kept[key])
                surrogate.forget()  # the curves of one seed's methods: bounded memory
                print(f"  task {task}, {workers} workers: {len(seeds)} seeds done", flush=True)
    reference = {task: _reference(surrogate, task, space) for task in tasks}
    summary = summarise(replays, reference, surrogate.mode)
    costs = measure_costs(problem(tasks[0], 1, 0), sizes.costs,
                          [m.search for m in methods if m.search])
    out = {"surrogate": str(surrogate.folder), "metric": surrogate.metric, "mode": surrogate.mode,
           "budget_epochs": budget, "full_budget_epochs": full_budget,
           "dimensions": len(surrogate.searched), "max_epochs": surrogate.max_epochs,
           "tasks": tasks, "all_tasks": surrogate.instances, "seeds": seeds,
           "workers": list(sizes.workers), "methods": [m.name for m in methods],
           "skipped": skipped, "default_searcher": default_search(),
           "default_method": default_method(), "reference": reference, "costs": costs,
           "searcher_source": searcher_source,
           **summary, "replays": replays}
    plot = ctx.options.get("out")
    if plot:
        out["plot"] = _plot(out, Path(plot) / ("RESULTS-search-quick.png" if ctx.quick
                                               else "RESULTS-search.png"))
    return out


def _source_digest(module: str) -> str | None:
    """The first 12 hex digits of a module's source's SHA-256: which version of it was measured."""
    import hashlib

    try:
        path = importlib.util.find_spec(module).origin
    except (ImportError, AttributeError):
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def _replay_once(method, problem, budget: int) -> dict:
    from benchmarks.virtual.replay import best_after, replay

    began = time.perf_counter()
    run = replay(method.build(problem), problem.curve_of, problem.workers, budget,
                 1.0 if problem.mode == "max" else -1.0)
    curve = [best_after(run, budget, share) for share in _curve_shares()]
    return {"curve": curve, "lowest": run.lowest, "highest": run.highest,
            "epochs": len(run.best), "trials": run.trials, "virtual_hours": run.seconds / 3600,
            "wall_s": time.perf_counter() - began}


def _replay_key(method: str, task: str, workers: int, seed: int) -> str:
    return f"{method}|{task}|{workers}|{seed}"


def _kept_replays(ctx: Context, surrogate, budget: int) -> dict[str, dict]:
    """Replays of an earlier run of the same surrogate and budget, from --out's replays file
    (a full protocol takes hours; delete the file to measure again). None on a quick run."""
    path = _replays_path(ctx)
    kept = {}
    if path is None or not path.exists():
        return kept
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row.get("surrogate") == str(surrogate.folder) and row.get("budget") == budget:
            kept[_replay_key(row["method"], row["task"], row["workers"], row["seed"])] = row
    return kept


def _keep(ctx: Context, surrogate, budget: int, row: dict) -> None:
    path = _replays_path(ctx)
    if path is not None:
        with path.open("a") as f:
            f.write(json.dumps(row | {"surrogate": str(surrogate.folder), "budget": budget}) + "\n")


def _replays_path(ctx: Context) -> Path | None:
    out = ctx.options.get("out")
    return None if ctx.quick or not out else Path(out) / REPLAYS_FILE


def _reference(surrogate, task: str, space: dict) -> dict:
    """The best and worst of REFERENCE_CONFIGS random configurations at the last epoch."""
    import numpy as np

    rng = np.random.default_rng(0)
    samples = {name: d.sample(size=REFERENCE_CONFIGS, random_state=rng)
               for name, d in space.items() if hasattr(d, "sample")}
    configs = [{name: samples[name][i] if name in samples else space[name] for name in space}
               for i in range(REFERENCE_CONFIGS)]
    values = surrogate.final_values(task, configs)
    sign = 1.0 if surrogate.mode == "max" else -1.0
    return {"best": float(sign * np.max(sign * values)), "worst": float(sign * np.min(sign * values)),
            "configs": REFERENCE_CONFIGS}


def regret(value: float, best: float, worst: float, sign: float) -> float:
    """(y_best - y) / (y_best - y_worst), for a maximised metric (sign 1; -1 when minimised)."""
    span = sign * (best - worst)
    return sign * (best - value) / span if span > 0 else 0.0


def summarise(replays: list[dict], reference: dict, mode: str) -> dict:
    """Normalized regret per replay, per task (pooled and fixed reference), and the rows: mean
    and standard error over the tasks (each task's mean over its seeds) per method, workers and
    share of the budget."""
    sign = 1.0 if mode == "max" else -1.0
    pooled = {}
    for r in replays:
        best, worst = pooled.get(r["task"], (-sign * math.inf, sign * math.inf))
        hi, lo = (r["highest"], r["lowest"]) if sign > 0 else (r["lowest"], r["highest"])
        pooled[r["task"]] = (max(best, hi) if sign > 0 else min(best, hi),
                             min(worst, lo) if sign > 0 else max(worst, lo))
    per_task: dict[tuple, list] = {}
    for r in replays:
        for share in sorted({round(s, 2) for s in (*SHARES, *_curve_shares())}):
            y = r["curve"][int(round(share * CURVE_POINTS)) - 1]
            for norm, (best, worst) in (("pooled", pooled[r["task"]]),
                                        ("fixed", (reference[r["task"]]["best"],
                                                   reference[r["task"]]["worst"]))):
                key = (r["method"], r["workers"], round(share, 2), norm, r["task"])
                per_task.setdefault(key, []).append(regret(y, best, worst, sign))
    by_cell: dict[tuple, list[float]] = {}
    for (method, workers, share, norm, task), values in per_task.items():
        by_cell.setdefault((method, workers, share, norm), []).append(mean(values))
    rows = [{"method": m, "workers": k, "share": s, "normalisation": n, "mean": mean(v),
             "se": stdev(v) / math.sqrt(len(v)) if len(v) > 1 else None, "tasks": len(v)}
            for (m, k, s, n), v in sorted(by_cell.items()) if s in SHARES]
    task_rows = [{"method": m, "workers": k, "share": s, "normalisation": n, "task": t,
                  "mean": mean(v), "seeds": len(v)}
                 for (m, k, s, n, t), v in sorted(per_task.items()) if s in SHARES]
    curves = {}  # "method|workers": the mean pooled regret at each 1 % of the budget
    for (m, k, s, n), v in sorted(by_cell.items()):
        if n == "pooled" and s in {round(x, 2) for x in _curve_shares()}:
            curves.setdefault(f"{m}|{k}", []).append(mean(v))
    return {"pooled": {t: {"best": b, "worst": w} for t, (b, w) in pooled.items()},
            "rows": rows, "task_rows": task_rows, "curves": curves}


def _curve_shares() -> list[float]:
    return [(i + 1) / CURVE_POINTS for i in range(CURVE_POINTS)]


def measure_costs(problem, sizes: tuple[int, ...], searches: list[str]) -> dict:
    from benchmarks.virtual.costs import rung_decision_ms, suggestion_ms

    out = {"rung_decision": {}, "suggestion": {}}
    for n in sizes:
        out["rung_decision"][str(n)] = rung_decision_ms(n, problem)
        print(f"  rung decision at {n} trials: {out['rung_decision'][str(n)]}", flush=True)
    for search in searches:
        out["suggestion"][search] = {}
        for n in sizes:
            out["suggestion"][search][str(n)] = suggestion_ms(search, n, problem)
            print(f"  {search} suggestion at {n} trials: {out['suggestion'][search][str(n)]:.1f} ms",
                  flush=True)
    return out


def _plot(r: dict, path: Path) -> str | None:
    """Mean pooled regret against the share of the budget, a panel per number of workers."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    xs = [100 * s for s in _curve_shares()]
    fig, axes = plt.subplots(1, len(r["workers"]), figsize=(6 * len(r["workers"]), 4.5),
                             squeeze=False)
    for ax, workers in zip(axes[0], r["workers"]):
        for method in r["methods"]:
            ys = r["curves"].get(f"{method}|{workers}", [])
            ax.plot(xs[:len(ys)], ys, label=method,
                    linewidth=2.5 if method == r["default_method"] else 1.2)
        ax.set_yscale("log")
        ax.set_xlabel(f"% of the budget ({r['budget_epochs']:,} epochs)")
        ax.set_ylabel("mean normalized regret (pooled)")
        ax.set_title(f"{workers} worker{'s' if workers > 1 else ''}, {len(r['tasks'])} tasks, "
                     f"{len(r['seeds'])} seeds")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


# ---------------------------------------------------------------------------------------------------
# The report.


def _cell(rows: list[dict], method: str, workers: int, share: float, norm: str = "pooled"):
    return next((r for r in rows if r["method"] == method and r["workers"] == workers
                 and r["share"] == share and r["normalisation"] == norm), None)


def _mean_se(row: dict | None) -> str:
    if row is None:
        return "-"
    return f"{row['mean']:.3f}" + (f" ± {row['se']:.3f}" if row["se"] is not None else "")


def report_search(raw: dict) -> Report:
    r = raw["search"]
    rows, blocks = r["rows"], []
    full = (set(r["tasks"]) == set(r["all_tasks"]) and len(r["seeds"]) >= 10
            and set(r["workers"]) >= {1, 4} and r["budget_epochs"] == r["full_budget_epochs"])
    blocks.append(
        f"Surrogate `{r['surrogate']}`: metric {r['metric']} ({r['mode']}), {r['dimensions']} "
        f"hyperparameters, 1-{r['max_epochs']} epochs. Budget {r['budget_epochs']:,} epochs "
        f"(YAHPO's 20 + 40 * sqrt({r['dimensions']}) full evaluations = "
        f"{r['full_budget_epochs']:,}). Tasks: {len(r['tasks'])} of {len(r['all_tasks'])} "
        f"({', '.join(r['tasks'])}); seeds {', '.join(map(str, r['seeds']))}; workers "
        f"{', '.join(map(str, r['workers']))}. "
        + ("The full protocol." if full else
           "**A reduced protocol** (the full one: every task, 10 seeds, 1 and 4 workers, "
           "`python -m benchmarks.run --sections search`).")
        + f" tune-run's default searcher: `{r['default_searcher']}` (method `{r['default_method']}`).")
    if r["skipped"]:
        blocks.append("Not run: " + "; ".join(f"`{m}` ({why})" for m, why in r["skipped"].items()))
    header = ["method", "workers", *(f"{s:.0%}" for s in SHARES), "100 %, fixed reference"]
    table = [[m, k, *(_mean_se(_cell(rows, m, k, s)) for s in SHARES),
              _mean_se(_cell(rows, m, k, 1.0, "fixed"))]
             for k in r["workers"] for m in r["methods"]]
    blocks += ["Mean normalized regret over the tasks (each task's mean over its seeds) ± its "
               "standard error over the tasks, at each share of the budget; y_best and y_worst "
               "pool every evaluation of every method and seed on the task (as YAHPO does), so "
               "they move with the methods run; the last column uses a fixed reference instead: "
               f"the best and worst of {REFERENCE_CONFIGS:,} random configurations at the last "
               "epoch (negative: better than all of them).", Table(header, table)]
    if r.get("plot"):
        blocks.append(f"![regret against budget]({r['plot']})")
    blocks += _task_tables(r)
    blocks += _yahpo_blocks(r)
    blocks += _run_table(r)
    cost_blocks, verdicts = _costs(r)
    blocks += cost_blocks
    return Report("Search: normalized regret per epoch of budget, replayed in virtual time",
                  blocks, _searcher_verdicts(r) + verdicts)


def _task_tables(r: dict) -> list:
    blocks = []
    for workers in r["workers"]:
        rows = []
        for task in r["tasks"]:
            cells = {row["method"]: row["mean"] for row in r["task_rows"]
                     if row["task"] == task and row["workers"] == workers and row["share"] == 1.0
                     and row["normalisation"] == "pooled"}
            rows.append([task, *(fmt(cells.get(m), ".3f") for m in r["methods"])])
        blocks += [f"Per task, {workers} worker{'s' if workers > 1 else ''}: mean pooled regret "
                   "at the full budget over the seeds.", Table(["task", *r["methods"]], rows)]
    return blocks


def _yahpo_blocks(r: dict) -> list:
    tasks = [t for t in YAHPO_TASKS if t in r["tasks"]]
    if 1 not in r["workers"] or not tasks:
        return []
    ours = {}
    for theirs, method in YAHPO_OURS.items():
        cells = [next((row["mean"] for row in r["task_rows"] if row["method"] == method
                       and row["task"] == t and row["workers"] == 1 and row["share"] == 1.0
                       and row["normalisation"] == "pooled"), None) for t in tasks]
        ours[theirs] = cells if None not in cells else None
    rank_yahpo = _ranks({m: mean(YAHPO[m][YAHPO_TASKS.index(t)] for t in tasks) for m in YAHPO})
    rank_ours = _ranks({m: mean(v) for m, v in ours.items() if v})
    rows = []
    for theirs, method in YAHPO_OURS.items():
        y = [YAHPO[theirs][YAHPO_TASKS.index(t)] for t in tasks]
        o = ours[theirs]
        ratio_y = mean(y) / mean(YAHPO["random"][YAHPO_TASKS.index(t)] for t in tasks)
        ratio_o = mean(o) / mean(ours["random"]) if o and ours.get("random") else None
        rows.append([theirs, method, " / ".join(f"{v:.3f}" for v in y),
                     " / ".join(f"{v:.3f}" for v in o) if o else "-", rank_yahpo.get(theirs, "-"),
                     rank_ours.get(theirs, "-"), f"{ratio_y:.2f}", fmt(ratio_o, ".2f")])
    extra = [m for m in ("tune-run", "random+asha") if m in r["methods"]]
    for method in extra:
        o = [next(row["mean"] for row in r["task_rows"] if row["method"] == method
                  and row["task"] == t and row["workers"] == 1 and row["share"] == 1.0
                  and row["normalisation"] == "pooled") for t in tasks]
        rows.append(["-", method, "-", " / ".join(f"{v:.3f}" for v in o), "-", "-", "-",
                     fmt(mean(o) / mean(ours["random"]) if ours.get("random") else None, ".2f")])
    return [f"Beside YAHPO Gym's study (1 worker, full budget, tasks {' / '.join(tasks)}; read off "
            "its plots, about ±15 %). Both pool the evaluations of the methods each ran, so only "
            "ranks and ratios (regret / random's regret) compare; YAHPO's Optuna row is TPE with "
            "a median pruner, ours TPE with promotion ASHA.",
            Table(["YAHPO method", "ours", "YAHPO regret", "our regret", "YAHPO rank", "our rank",
                   "YAHPO / random", "ours / random"], rows)]


def _ranks(values: dict[str, float]) -> dict[str, int]:
    return {m: i + 1 for i, m in enumerate(sorted(values, key=values.get))}


def _run_table(r: dict) -> list:
    rows = []
    for workers in r["workers"]:
        for method in r["methods"]:
            mine = [x for x in r["replays"] if x["method"] == method and x["workers"] == workers]
            if mine:
                rows.append([method, workers, mean(x["trials"] for x in mine),
                             mean(x["virtual_hours"] for x in mine), mean(x["wall_s"] for x in mine)])
    return ["What each replay did (means over tasks and seeds): trials started, virtual hours "
            "of the k workers' clock at the end of the budget, and the replay's own wall seconds "
            "here (one process, one thread).",
            Table(["method", "workers", "trials", "virtual hours", "wall s per replay"], rows)]


def _searcher_verdicts(r: dict) -> list:
    verdicts = []
    ours = "tune-run"
    for workers in (1, 4):
        for share in TARGET_SHARES:
            mine = _cell(r["rows"], ours, workers, share)
            for target, other, label in ((SEARCHER_VS_BOHB, "bohb", "BOHB"),
                                         (SEARCHER_VS_DEHB, "dehb", "DEHB"),
                                         (SEARCHER_VS_RANDOM_ASHA, "random+asha",
                                          "random + promotion ASHA")):
                theirs = _cell(r["rows"], other, workers, share)
                what = (f"{workers} worker{'s' if workers > 1 else ''}, {share:.0%}: "
                        f"{target.what}")
                if mine is None or theirs is None or theirs["mean"] <= 0:
                    verdicts.append(target.check(None, "not measured", what))
                    continue
                ratio = mine["mean"] / theirs["mean"]
                verdicts.append(target.check(ratio, f"{ratio:.2f} ({mine['mean']:.3f} / "
                                                    f"{theirs['mean']:.3f} {label})", what))
    return verdicts


def _costs(r: dict) -> tuple[list, list]:
    from benchmarks.virtual.costs import TIMED_CALLS

    c = r["costs"]
    sizes = list(c["rung_decision"])
    rows = [["rung decision: a trial reports at a rung (`at_rung`)",
             *(fmt(c["rung_decision"][n]["at_rung_ms"], ".3f") for n in sizes)],
            ["rung decision: a worker is free (`free_worker`)",
             *(fmt(c["rung_decision"][n]["free_worker_ms"], ".3f") for n in sizes)]]
    rows += [[f"suggestion: search `{s}`", *(fmt(v[n], ".2f") for n in sizes)]
             for s, v in c["suggestion"].items()]
    verdicts = []
    last = sizes[-1]
    if last == str(COST_SIZES[-1]):
        worst = max(c["rung_decision"][last].values())
        verdicts.append(RUNG_DECISION_MS.check(worst, f"{worst:.2f} ms (the slower of the two)"))
        for search, v in c["suggestion"].items():
            verdicts.append(SUGGESTION_MS.check(v[last], f"{v[last]:.1f} ms",
                                                f"search `{search}`: {SUGGESTION_MS.what}"))
    return [f"tune-run's own work per decision (ms, mean of {TIMED_CALLS} calls) with this many trials "
            "already in the search (benchmarks/virtual/costs.py: the rungs in the steady state, "
            "where a decision looks through every rung; a searcher told every earlier trial at "
            "each rung it reached).",
            Table(["work", *(f"{int(n):,} trials" for n in sizes)], rows)], verdicts


SECTIONS = (
    Section("search", "normalized regret of tune-run's searchers and of Hyperband, BOHB, DEHB, "
            "SMAC-HB on a learning-curve surrogate, in virtual time", RESULTS, run_search,
            report_search, (SEARCHER_VS_BOHB, SEARCHER_VS_DEHB, SEARCHER_VS_RANDOM_ASHA,
                            SUGGESTION_MS, RUNG_DECISION_MS), FULL, QUICK, default=False),
)
