"""Whole searches through tune-run's command line, as a user runs them, timed from the outside.

Each search is a space file written here and run with `tune-run SPACE` in a subprocess: Ray's
start, decoding the images (a fresh image cache: cold), training, MLflow logging into a SQLite store
and the end-of-search summary are all in its wall time. What it trained is read back from Ray's
experiment folder afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from ray.tune import ExperimentAnalysis

from search.place.experiment_folder import result_rows

REPO = Path(__file__).resolve().parents[1]

# The benchmark search's space (the same as benchmarks/usual_pipeline.py's search_space()).
SPACE = """
    "lr": tune.loguniform(0.01, 0.4),
    "weight_decay": tune.loguniform(1e-5, 1e-2),
    "width": 0.25,
    "batch_size": 128,
"""


def write_space(path: Path, settings: dict, space: str = SPACE) -> Path:
    body = textwrap.indent(textwrap.dedent(space).strip(), "    ")
    path.write_text(f"from ray import tune\n\nsettings = {settings!r}\n\nspace = {{\n{body}\n}}\n")
    return path


def run_cli_search(workdir: Path, name: str, settings: dict) -> dict:
    """Runs one search with `tune-run`; returns its wall time and what each trial trained."""
    folder = workdir / name
    folder.mkdir(parents=True)
    space = write_space(folder / f"{name}.py", settings | {"name": name,
                                                          "storage": str(folder / "results")})
    env = dict(os.environ, HOME=str(folder))  # a cold image cache under this HOME
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "search.cli", str(space),
                           "--tracking-uri", f"sqlite:///{folder}/mlflow.db"],
                          cwd=folder, env=env | {"PYTHONPATH": str(REPO)},
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{name}: tune-run exited {proc.returncode}: {proc.stderr[-2000:]}")
    return {"wall_seconds": wall, **experiment_summary(folder / "results" / name)}


def experiment_summary(path: Path) -> dict:
    """Each trial's configuration, epochs, best val_acc and per-epoch timings, from Ray's files."""
    trials = []
    for trial in ExperimentAnalysis(str(path)).trials:
        rows = result_rows(trial.path)
        # time_this_iter_s runs from one report to the next: training, evaluation, checkpoint and
        # report; epoch_seconds is the training alone. The first epoch also holds the set-up.
        later = rows[1:]
        trials.append({
            "config": {k: trial.config[k] for k in ("lr", "weight_decay") if k in trial.config},
            "epochs": len(rows), "best_val_acc": max(r["val_acc"] for r in rows),
            "val_acc_by_epoch": [r["val_acc"] for r in rows],
            "epoch_seconds_by_epoch": [r["time_this_iter_s"] for r in rows],
            "images_per_s": [r["images_per_s"] for r in rows],
            "precision": rows[0].get("precision"), "layout": rows[0].get("layout"),
            "iteration_seconds": sum(r["time_this_iter_s"] for r in later),
            "training_seconds": sum(r["epoch_seconds"] for r in later),
            "status": trial.status,
        })
    iteration = sum(t["iteration_seconds"] for t in trials)
    training = sum(t["training_seconds"] for t in trials)
    return {
        "trials": trials, "epochs": sum(t["epochs"] for t in trials),
        "best_val_acc": max(t["best_val_acc"] for t in trials),
        # Evaluation, checkpoint and report, as a share of an epoch (epochs after the first).
        "epoch_overhead": 1 - training / iteration if iteration else None,
    }


def same_configs(*runs: dict) -> bool:
    """Whether the runs trained the same set of sampled configurations."""
    def key(run):
        return sorted(tuple(round(v, 12) for v in t["config"].values()) for t in run["trials"])
    return all(key(r) == key(runs[0]) for r in runs[1:])


def usual_pipeline_search(workdir: Path, data_dir: str, settings: dict) -> dict:
    """The usual Ray Tune pipeline's search (benchmarks/usual_pipeline.py) on the same files."""
    out = workdir / "usual.json"
    args = [sys.executable, str(REPO / "benchmarks" / "usual_pipeline.py"), "--data-dir", data_dir,
            "--subset", str(settings["subset"]), "--val-fraction", str(settings["val_fraction"]),
            "--num-samples", str(settings["num_samples"]),
            "--max-epochs", str(settings["max_epochs"]),
            "--grace-period", str(settings["grace_period"]),
            "--reduction-factor", str(settings["reduction_factor"]),
            "--concurrency", str(settings["max_concurrent"]), "--seed", str(settings["seed"]),
            "--storage", str(workdir / "usual-results"), "--out", str(out)]
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=workdir, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"usual pipeline exited {proc.returncode}: {proc.stderr[-2000:]}")
    import json

    return json.loads(out.read_text()) | {"process_wall_seconds": wall}
