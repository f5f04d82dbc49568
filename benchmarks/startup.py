"""Start-up: where the wall time of a tiny search goes, on this code and on an older commit.

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
- store: the time spent constructing MLflow's SQLite store (creating and migrating a new one),
  which may overlap the phases above (the record opens in a thread).
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

REPO = Path(__file__).resolve().parents[1]
SPACE = "spaces/digits.py"
CONCURRENT_TRIALS = 2  # digits.py: one CPU per trial on this 2-core machine

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
try:
    code = search.cli.main(sys.argv[1:])
finally:
    marks["end"] = time.time()
    marks["store_s"] = sum(b - a for a, b in stores)
    with open(os.environ["STARTUP_MARKS"], "w") as f:
        json.dump(marks, f)
sys.exit(code)
"""


def run_once(code_root: Path, workdir: Path, python: str = sys.executable) -> dict[str, float]:
    """One tiny search of the code at `code_root`, in `workdir`; its phases in seconds."""
    workdir.mkdir(parents=True, exist_ok=True)
    marks_file = workdir / "marks.json"
    env = os.environ | {"PYTHONPATH": str(code_root), "STARTUP_MARKS": str(marks_file),
                        "STARTUP_T0": repr(time.time())}
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
    """A detached worktree of `commit` (the code before the change) at `where`."""
    if not (where / SPACE).exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(where),
                        commit], check=True, capture_output=True)
    return where


if __name__ == "__main__":
    base = base_worktree(sys.argv[1] if len(sys.argv) > 1 else "1e7d004",
                         Path(tempfile.gettempdir()) / "tune-run-startup-base")
    result = compare(base, repeats=int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    for label, runs in result.items():
        print(label, {k: round(v, 2) for k, v in medians(runs).items()})
