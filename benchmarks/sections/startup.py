"""Section `startup`: where the wall time of a tiny search goes, on this code and on an older commit.

The search is `spaces/digits.py --quick` (4 trials, at most 3 epochs, ASHA), run through the real
`tune-run` command line in a fresh process, each with its own storage folder and SQLite store. A
small launcher (`_LAUNCHER`) times the phases from outside the code under test, by wrapping only
third-party entry points that every version calls the same way (`ray.init`, `Tuner.fit`, MLflow's
`SqlAlchemyStore`), plus Ray's own per-result timestamps in the trials' result.json files. So the
same split holds for the code before a change and after it, run alternately in one session:

- imports: the process start to `search.cli` imported (Python, torch, Ray, MLflow, the code);
- checks: the door, the pre-start checks and the data, up to `ray.init`;
- ray: `ray.init` (GCS, raylet, the first workers);
- actors: `Tuner.fit` called to the first trial's first epoch beginning (the trial workers' processes,
  their imports and the trial's set-up);
- training: the trials' own epochs (Ray's `time_this_iter_s`), divided by the trials run at once;
- between: the rest of the time in which trials ran (scheduling, checkpoints, results);
- record: `Tuner.fit` returned to the process's end (Ray's shutdown, the MLflow record, the best
  model, its card, the report);
- store: the time spent making MLflow's SQLite store (MLflow creating and migrating a new one; in
  the newer code also building and copying its template), which may overlap the phases above (the
  record opens in a thread). Each run has a cache folder of its own (TUNE_RUN_CACHE): the first
  search on a machine is the one timed.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import REPO, Context, Report, Section, Table, Target

RESULTS = "RESULTS-startup.md"
BASE_COMMIT = "1e7d004"  # the code before round 3's start-up work (the issue's "today")
SPACE = "spaces/digits.py"
# digits.py --quick: 4 trials of one CPU each, as many at once as Ray has CPUs (all of them)
CONCURRENT_TRIALS = min(4, os.cpu_count() or 1)

_LAUNCHER = r"""
import json, os, sys, time
marks = {"launched": float(os.environ["STARTUP_T0"])}
stores = []
import search.cli
marks["imported"] = time.time()
import ray
from ray import tune
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

def timed(owner, name, before, after, spans=None):
    inner = getattr(owner, name)
    def wrapper(*args, **kwargs):
        start = time.time()
        marks.setdefault(before, start)
        try:
            return inner(*args, **kwargs)
        finally:
            marks[after] = time.time()
            if spans is not None:
                spans.append((start, marks[after]))
    setattr(owner, name, wrapper)

timed(ray, "init", "ray_start", "ray_ready")
timed(tune.Tuner, "fit", "fit_start", "fit_end")
timed(SqlAlchemyStore, "__init__", "store_start", "store_end", stores)
try:  # the code that copies a template store instead of letting MLflow create one
    from search.record import sqlite_store
    timed(sqlite_store, "make_whole", "copy_start", "copy_end", stores)
except ImportError:
    pass
try:
    code = search.cli.main(sys.argv[1:])
finally:
    marks["end"] = time.time()
    covered, reach = 0.0, 0.0  # the union of the spans: a template build nests MLflow's store
    for a, b in sorted(stores):
        covered += max(0.0, b - max(a, reach))
        reach = max(reach, b)
    marks["store_s"] = covered
    with open(os.environ["STARTUP_MARKS"], "w") as f:
        json.dump(marks, f)
sys.exit(code)
"""


def run_once(code_root: Path, workdir: Path, python: str = sys.executable) -> dict[str, float]:
    """One tiny search of the code at `code_root`, in `workdir`; its phases in seconds."""
    workdir.mkdir(parents=True, exist_ok=True)
    marks_file = workdir / "marks.json"
    # A cache of its own: the first search on a machine builds what later ones reuse (the
    # template store), and that first search is the one timed.
    env = os.environ | {"PYTHONPATH": str(code_root), "STARTUP_MARKS": str(marks_file),
                        "TUNE_RUN_CACHE": str(workdir / "cache"), "STARTUP_T0": repr(time.time())}
    env.pop("RAY_ADDRESS", None)
    command = [python, "-c", _LAUNCHER, str(code_root / SPACE), "--quick", "--name", "startup",
               "--storage", str(workdir / "results"),
               "--tracking-uri", f"sqlite:///{workdir / 'mlflow.db'}"]
    done = subprocess.run(command, cwd=code_root, env=env, capture_output=True, text=True,
                          timeout=600)
    (workdir / "output.txt").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"the tiny search of {code_root} failed ({done.returncode}): "
                           f"{done.stderr.strip()[-400:]}")
    marks = json.loads(marks_file.read_text())
    return phases(marks, _results(workdir / "results" / "startup"))


def _results(experiment: Path) -> list[dict]:
    rows = []
    for result_file in experiment.glob("*/result.json"):
        rows += [json.loads(line) for line in result_file.read_text().splitlines() if line.strip()]
    return rows


def phases(marks: dict[str, float], results: list[dict]) -> dict[str, float]:
    """The split of one search's wall time (seconds) from the launcher's marks and Ray's results."""
    epoch_starts = [r["timestamp"] - r["time_this_iter_s"] for r in results]
    first_epoch, last_result = min(epoch_starts), max(r["timestamp"] for r in results)
    training = sum(r["time_this_iter_s"] for r in results) / CONCURRENT_TRIALS
    trials_wall = last_result - first_epoch
    return {
        "wall": marks["end"] - marks["launched"],
        "imports": marks["imported"] - marks["launched"],
        "checks": marks["ray_start"] - marks["imported"],
        "ray": marks["ray_ready"] - marks["ray_start"],
        "to_fit": marks["fit_start"] - marks["ray_ready"],
        "actors": first_epoch - marks["fit_start"],
        "training": training,
        "between": max(trials_wall - training, 0.0),
        "fit_end": marks["fit_end"] - last_result,
        "record": marks["end"] - marks["fit_end"],
        "store": marks["store_s"],
        "epochs": float(len(results)),
    }


def compare(base_root: Path, repeats: int = 3) -> dict[str, list[dict[str, float]]]:
    """The tiny search on `base_root` (older code) and on this checkout, alternately."""
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(prefix="tune-run-startup-") as tmp:
        for i in range(repeats):
            for label, root in (("before", base_root), ("after", REPO)):
                runs[label].append(run_once(root, Path(tmp) / f"{label}{i}"))
    return runs


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def base_worktree(commit: str, where: Path) -> Path:
    """A detached worktree of `commit` (the code before the change) at `where`, kept for the next
    run; it runs on this checkout's virtual environment (PYTHONPATH puts its code first)."""
    if not (where / SPACE).exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(where),
                        commit], check=True, capture_output=True)
    return where


HALF = Target("the tiny search's wall time <= 0.5 x the same search on the code before", "<=", 0.5)
PHASES = (("imports", "imports (Python, torch, Ray, MLflow, tune-run)"),
          ("checks", "checks and data, up to ray.init"), ("ray", "ray.init"),
          ("to_fit", "Tuner built, up to fit()"),
          ("actors", "trial workers started, up to the first epoch"),
          ("training", "training (trials' own epochs / trials at once)"),
          ("between", "between epochs and trials (scheduling, checkpoints)"),
          ("fit_end", "last result to fit() returning"),
          ("record", "after fit(): MLflow record, best model, card, report, Ray's shutdown"),
          ("wall", "wall time"), ("store", "of which MLflow store construction (may overlap)"))


def run_startup(ctx: Context) -> dict:
    commit = ctx.options.get("base_commit") or BASE_COMMIT
    base = base_worktree(commit, Path(tempfile.gettempdir()) / f"tune-run-startup-{commit}")
    return {"base_commit": commit, "repeats": ctx.sizes, "runs": compare(base, ctx.sizes)}


def report_startup(raw: dict) -> Report:
    r = raw["startup"]
    before, after = medians(r["runs"]["before"]), medians(r["runs"]["after"])
    ratio = after["wall"] / before["wall"]
    rows = [[label, f"{before[key]:.2f}", f"{after[key]:.2f}", f"{after[key] - before[key]:+.2f}"]
            for key, label in PHASES]
    return Report("Start-up: a tiny search, before and after, split by phase", [
        f"`tune-run {SPACE} --quick` (4 trials, at most 3 epochs, ASHA; {after['epochs']:.0f} epochs "
        f"trained), each run in a fresh process with its own storage and SQLite store, the code of "
        f"commit {r['base_commit']} ('before') and of this checkout ('after') alternately, "
        f"{r['repeats']} times each; medians in seconds. The phases are timed from outside the code "
        "(benchmarks/sections/startup.py says how).",
        Table(["phase", "before s", "after s", "change s"], rows)],
        [HALF.check(ratio, f"{after['wall']:.1f} s against {before['wall']:.1f} s: {ratio:.2f}x")])


SECTIONS = (
    Section("startup", "a tiny search (digits --quick) on this code and on the code before, split "
            "into imports, Ray, store, actors, training and record", RESULTS, run_startup,
            report_startup, (HALF,), 3, 1, default=False),
)
