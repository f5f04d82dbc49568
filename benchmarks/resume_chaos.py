"""Kill a running search at random moments N times, resume it each time, and count what was lost.

    .venv/bin/python benchmarks/resume_chaos.py [--kills 6] [--seed 0] [--work DIR]

The search (scikit-learn's digits, so no data folder is needed) uses the FIFO scheduler, so the
uninterrupted amount of work is exact: num_samples x max_epochs epochs. Every kill is a SIGKILL of
the driver's whole process group (no chance to clean up) at a random moment; every resume is
`tune-run --resume NAME`. At the end it reports trials completed, epochs trained in total against
the uninterrupted count (the work lost), the MLflow runs, duplicate metric steps, and runs left
RUNNING, and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NUM_SAMPLES, MAX_EPOCHS = 6, 5

SPACE = f'''from ray import tune

settings = {{
    "dataset": "digits", "num_samples": {NUM_SAMPLES}, "max_epochs": {MAX_EPOCHS},
    "scheduler": "fifo", "max_concurrent": 2, "name": "chaos", "experiment": "chaos",
}}

space = {{
    "lr": tune.loguniform(1e-3, 1e-1),
    "optimizer": tune.choice(["sgd", "adamw"]),
    "width": 0.5,
    "batch_size": 32,
}}
'''


def start(work: Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), HOME=str(work))
    return subprocess.Popen([sys.executable, "-m", "search.cli", *args,
                             "--storage", str(work / "results"),
                             "--tracking-uri", f"sqlite:///{work}/mlflow.db"],
                            cwd=work, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def wait_for_progress(proc: subprocess.Popen, folder: Path, before: int) -> bool:
    """Waits until an epoch more than `before` is recorded; False if the search ends first."""
    while proc.poll() is None:
        if epochs_trained(folder)[0] > before:
            return True
        time.sleep(0.5)
    return False


def epochs_trained(folder: Path) -> tuple[int, int]:
    """(rows in every trial's result.json: epochs trained, redone ones included; trials that
    reached max_epochs)."""
    rows, complete = 0, 0
    for path in folder.glob("*/result.json"):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        rows += len(lines)
        complete += any(r["training_iteration"] == MAX_EPOCHS for r in lines)
    return rows, complete


def mlflow_counts(uri: str) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("chaos")
    runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    duplicates = 0
    for run in children:
        for key in run.data.metrics:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            duplicates += len(steps) - len(set(steps))
    return {"parent_runs": len(runs) - len(children), "child_runs": len(children),
            "duplicate_steps": duplicates,
            "running_runs": sum(r.info.status == "RUNNING" for r in runs)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default=None, help="working folder (default: a new temporary one)")
    p.add_argument("--baseline", action="store_true",
                   help="also run the same search uninterrupted, for its wall time")
    args = p.parse_args()
    rng = random.Random(args.seed)
    work = Path(args.work or tempfile.mkdtemp(prefix="tune-run-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "chaos.py").write_text(SPACE)

    started = time.time()
    kills = []
    proc = start(work, "chaos.py")
    for i in range(args.kills):
        # A random moment of training: once this run has trained an epoch, 0-12 s later.
        before, _ = epochs_trained(work / "results" / "chaos")
        if not wait_for_progress(proc, work / "results" / "chaos", before):
            break  # finished before this kill
        delay = rng.uniform(0, 12)
        try:
            proc.wait(timeout=delay)
            break
        except subprocess.TimeoutExpired:
            pass
        kill_group(proc)
        rows, complete = epochs_trained(work / "results" / "chaos")
        kills.append({"after_progress_s": round(delay, 1), "epochs_so_far": rows,
                      "complete": complete})
        print(f"kill {i + 1}: {delay:.1f} s into training; {rows} epochs, {complete} trials "
              "complete", flush=True)
        time.sleep(2)  # Ray's own processes exit once their driver is gone
        proc = start(work, "--resume", "chaos")
    code = proc.wait(timeout=1800)
    wall = time.time() - started

    rows, complete = epochs_trained(work / "results" / "chaos")
    counts = mlflow_counts(f"sqlite:///{work}/mlflow.db")
    ideal = NUM_SAMPLES * MAX_EPOCHS
    baseline_wall = None
    if args.baseline:
        clean = work / "uninterrupted"
        clean.mkdir(exist_ok=True)
        (clean / "chaos.py").write_text(SPACE)
        t0 = time.time()
        start(clean, "chaos.py").wait(timeout=1800)
        baseline_wall = round(time.time() - t0, 1)
    report = {"kills": len(kills), "final_exit_code": code, "trials_complete": complete,
              "num_samples": NUM_SAMPLES, "epochs_trained": rows, "epochs_uninterrupted": ideal,
              "epochs_redone": rows - ideal, "wall_s": round(wall, 1),
              "uninterrupted_wall_s": baseline_wall, **counts, "kill_log": kills}
    print(json.dumps(report, indent=2))
    print()
    print("| kills | trials complete | epochs trained / uninterrupted | epochs redone | parent runs "
          "| child runs | duplicate steps | RUNNING runs left | wall s (uninterrupted) |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {len(kills)} | {complete} of {NUM_SAMPLES} | {rows} / {ideal} | {rows - ideal} | "
          f"{counts['parent_runs']} | {counts['child_runs']} | {counts['duplicate_steps']} | "
          f"{counts['running_runs']} | {wall:.0f} ({baseline_wall}) |")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
