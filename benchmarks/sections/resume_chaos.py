"""Section `resume-chaos`: kill a running search at random moments N times, resume it each time, and
count what was lost. Writes RESULTS-resume-chaos.md.

The search (scikit-learn's digits, so no data folder is needed) uses the FIFO scheduler, so the
uninterrupted amount of work is exact: num_samples x max_epochs epochs. Every kill is a SIGKILL of
the driver's whole process group (no chance to clean up) at a random moment; every resume is
`tune-run --resume NAME`. At the end it counts trials completed, epochs trained in total against
the uninterrupted count (the work lost), the MLflow runs, duplicate metric steps, and runs left
RUNNING; then the same search once more, uninterrupted, for its wall time.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.harness import Context, Report, Section, Table, Target, tune_run_command, write_space

RESULTS = "RESULTS-resume-chaos.md"
NAME = "chaos"

NOTHING_REDONE = Target("no reported epoch trained twice across the kills and resumes", "==", 0)
ALL_COMPLETE = Target("every trial completes after the last resume", "==", True)
NO_DUPLICATES = Target("no duplicate metric steps and no run left RUNNING in MLflow", "==", 0)


@dataclass(frozen=True)
class Sizes:
    kills: int
    num_samples: int
    max_epochs: int
    max_delay_s: float  # each kill comes 0 to this many seconds after an epoch was recorded
    seed: int = 0


FULL = Sizes(kills=6, num_samples=6, max_epochs=5, max_delay_s=12.0)
QUICK = Sizes(kills=1, num_samples=2, max_epochs=2, max_delay_s=2.0)

SPACE = """
    "lr": tune.loguniform(1e-3, 1e-1),
    "optimizer": tune.choice(["sgd", "adamw"]),
    "width": 0.5,
    "batch_size": 32,
"""


def start(work: Path, *args: str) -> subprocess.Popen:
    """`tune-run ARGS` in a process group of its own (so a kill takes its local Ray too)."""
    argv, env = tune_run_command(work, *args)
    return subprocess.Popen(argv, cwd=work, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def epochs_trained(folder: Path, max_epochs: int) -> tuple[int, int]:
    """(rows in every trial's result.json: epochs trained, redone ones included; trials that
    reached max_epochs)."""
    from trainables.metrics import EPOCH  # not at the top: the registry imports without tune-run

    rows, complete = 0, 0
    for path in folder.glob("*/result.json"):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        rows += len(lines)
        complete += any(r[EPOCH] == max_epochs for r in lines)
    return rows, complete


def wait_for_progress(proc: subprocess.Popen, folder: Path, before: int, max_epochs: int) -> bool:
    """Waits until an epoch more than `before` is recorded; False if the search ends first."""
    while proc.poll() is None:
        if epochs_trained(folder, max_epochs)[0] > before:
            return True
        time.sleep(0.5)
    return False


def mlflow_counts(uri: str) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(NAME)
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


def write_search(folder: Path, sizes: Sizes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_space(folder / f"{NAME}.py", {
        "dataset": "digits", "num_samples": sizes.num_samples, "max_epochs": sizes.max_epochs,
        "scheduler": "fifo", "max_concurrent": 2, "name": NAME, "experiment": NAME}, SPACE)


def run_chaos(ctx: Context) -> dict:
    sizes: Sizes = ctx.sizes
    rng = random.Random(sizes.seed)
    work = ctx.work / "killed"
    write_search(work, sizes)
    results = work / "results" / NAME
    started = time.time()
    kills = []
    proc = start(work, f"{NAME}.py")
    for i in range(sizes.kills):
        # A random moment of training: once this run has trained an epoch, 0-max_delay_s later.
        before, _ = epochs_trained(results, sizes.max_epochs)
        if not wait_for_progress(proc, results, before, sizes.max_epochs):
            break  # finished before this kill
        delay = rng.uniform(0, sizes.max_delay_s)
        try:
            proc.wait(timeout=delay)
            break
        except subprocess.TimeoutExpired:
            pass
        kill_group(proc)
        rows, complete = epochs_trained(results, sizes.max_epochs)
        kills.append({"after_progress_s": round(delay, 1), "epochs_so_far": rows,
                      "complete": complete})
        print(f"resume-chaos: kill {i + 1}: {delay:.1f} s into training; {rows} epochs, {complete} "
              "trials complete", flush=True)
        time.sleep(2)  # Ray's own processes exit once their driver is gone
        proc = start(work, "--resume", NAME)
    code = proc.wait(timeout=1800)
    wall = time.time() - started
    rows, complete = epochs_trained(results, sizes.max_epochs)
    counts = mlflow_counts(f"sqlite:///{work}/mlflow.db")

    clean = ctx.work / "uninterrupted"
    write_search(clean, sizes)
    t0 = time.time()
    start(clean, f"{NAME}.py").wait(timeout=1800)
    return {"kills": len(kills), "final_exit_code": code, "trials_complete": complete,
            "num_samples": sizes.num_samples, "epochs_trained": rows,
            "epochs_uninterrupted": sizes.num_samples * sizes.max_epochs,
            "epochs_redone": rows - sizes.num_samples * sizes.max_epochs, "wall_s": wall,
            "uninterrupted_wall_s": time.time() - t0, **counts, "kill_log": kills}


def report_chaos(r: dict) -> Report:
    c = r["resume-chaos"]
    lost = c["duplicate_steps"] + c["running_runs"]
    return Report("A search killed and resumed at random moments", [
        f"A digits search of {c['num_samples']} trials x "
        f"{c['epochs_uninterrupted'] // c['num_samples']} epochs (FIFO, so the uninterrupted work is "
        f"exactly {c['epochs_uninterrupted']} epochs), SIGKILLed {c['kills']} times at random moments "
        "of training (its whole process group, no chance to clean up) and resumed each time with "
        f"`tune-run --resume {NAME}`; the last run exited {c['final_exit_code']}.",
        Table(["kills", "trials complete", "epochs trained / uninterrupted", "epochs redone",
               "parent runs", "child runs", "duplicate metric steps", "runs left RUNNING",
               "wall s (uninterrupted)"],
              [[c["kills"], f"{c['trials_complete']} of {c['num_samples']}",
                f"{c['epochs_trained']} / {c['epochs_uninterrupted']}", c["epochs_redone"],
                c["parent_runs"], c["child_runs"], c["duplicate_steps"], c["running_runs"],
                f"{c['wall_s']:.0f} ({c['uninterrupted_wall_s']:.0f})"]]),
        "Kills: " + "; ".join(f"{k['after_progress_s']} s after an epoch ({k['epochs_so_far']} "
                              f"epochs, {k['complete']} trials complete)" for k in c["kill_log"])],
        [NOTHING_REDONE.check(c["epochs_redone"], str(c["epochs_redone"])),
         ALL_COMPLETE.check(c["trials_complete"] == c["num_samples"],
                            f"{c['trials_complete']} of {c['num_samples']}"),
         NO_DUPLICATES.check(lost, f"{c['duplicate_steps']} duplicate steps, {c['running_runs']} "
                                   "RUNNING")])


SECTIONS = (
    Section("resume-chaos", "a digits search SIGKILLed at random moments and resumed each time: "
            "epochs redone, MLflow runs", RESULTS, run_chaos, report_chaos,
            (NOTHING_REDONE, ALL_COMPLETE, NO_DUPLICATES), FULL, QUICK, default=False),
)
