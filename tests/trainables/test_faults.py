"""Faulty trials in real searches: a crash is retried from the last checkpoint, a divergence stops
the trial at once without retries, a dead process and an out-of-memory error are reported; the
search finishes the other trials and MLflow says what happened to each."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, injected, write_space

pytestmark = pytest.mark.slow

MAX_EPOCHS = 3


@pytest.fixture(scope="module")
def faulty_search(image_folder, tmp_path_factory):
    work = tmp_path_factory.mktemp("faults")
    once = work / "crashed-once"
    faults = [
        None,
        {"kind": "raise", "epoch": 2, "once_file": str(once)},  # crashes once, then recovers
        {"kind": "raise", "epoch": 2},  # crashes every time
        {"kind": "exit", "epoch": 2},  # the process dies outright, every time
        {"kind": "nan", "epoch": 2},  # the loss diverges
        {"kind": "oom", "epoch": 1},
    ]
    settings = {"dataset": "imagefolder", "data_dir": str(image_folder), "num_samples": 1,
                "max_epochs": MAX_EPOCHS, "scheduler": "fifo", "max_failures": 1,
                "max_concurrent": 2, "experiment": "faults", "name": "faults",
                "storage": str(work / "results")}
    space = write_space(work / "faults.py", settings, f"""
        "_fault": tune.grid_search({faults!r}),
        "lr": tune.choice([0.05]),
        "width": 0.0625,
        "batch_size": 16,
    """)
    uri = f"sqlite:///{work}/mlflow.db"
    proc = subprocess.run(
        [sys.executable, "-m", "search.cli", str(space), "--tracking-uri", uri],
        cwd=work, capture_output=True, text=True, timeout=600,
        env={"PYTHONPATH": str(REPO), "PATH": os.environ["PATH"], "HOME": str(work),
             "TUNE_RUN_TEST_FAULTS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for fault in faults[1:]:
        injected(f"trial {fault['kind']}")
    results, fault_of_trial = {}, {}
    for path in (work / "results" / "faults").glob("*/result.json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if rows:
            name = _fault_name(rows[0]["config"].get("_fault"))
            results[name] = rows
            fault_of_trial[rows[0]["trial_id"]] = name
    from ray.tune import ExperimentAnalysis

    for trial in ExperimentAnalysis(str(work / "results" / "faults")).trials:
        fault_of_trial[trial.trial_id] = _fault_name(trial.config.get("_fault"))
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("faults")
    runs = {fault_of_trial[run.data.tags["tune_run.trial_id"]]: run
            for run in client.search_runs([experiment.experiment_id])
            if "mlflow.parentRunId" in run.data.tags}
    assert len(runs) == 6
    return client, runs, results, proc


def _fault_name(fault) -> str:
    if not fault:
        return "none"
    return fault["kind"] + ("-once" if "once_file" in fault else "")


def test_the_healthy_trial_finishes(faulty_search):
    _, runs, results, _ = faulty_search
    assert [r["training_iteration"] for r in results["none"]] == [1, 2, 3]
    assert runs["none"].info.status == "FINISHED"


def test_a_crash_is_retried_from_the_last_checkpoint(faulty_search):
    _, runs, results, _ = faulty_search
    # Epoch 2 crashed once; the retry continued at epoch 2 from epoch 1's checkpoint.
    assert [r["training_iteration"] for r in results["raise-once"]] == [1, 2, 3]
    assert runs["raise-once"].info.status == "FINISHED"


@pytest.mark.parametrize("fault", ["raise", "exit"])
def test_a_persistent_crash_fails_the_trial_after_its_retries(faulty_search, fault):
    client, runs, results, _ = faulty_search
    run = runs[fault]
    assert run.info.status == "FAILED"
    assert run.data.tags["tune_run.status"] == "error"
    if fault == "raise":
        assert "injected fault at epoch 2" in run.data.tags["tune_run.failure"]
    # Each retry started from the epoch-1 checkpoint, never from scratch.
    assert {r["training_iteration"] for r in results[fault]} == {1}
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
    assert steps == [1]


def test_divergence_stops_the_trial_at_once_and_is_not_retried(faulty_search):
    _, runs, results, _ = faulty_search
    rows = results["nan"]
    assert [r["training_iteration"] for r in rows] == [1, 2]
    assert rows[-1]["diverged"] == 1
    run = runs["nan"]
    assert run.info.status == "FAILED"
    assert run.data.tags["tune_run.status"] == "diverged"
    assert "nan" in run.data.tags["tune_run.failure"]


def test_out_of_memory_names_the_batch_size_and_model(faulty_search):
    _, runs, _, _ = faulty_search
    run = runs["oom"]
    assert run.info.status == "FAILED"
    failure = run.data.tags["tune_run.failure"]
    assert "out of memory" in failure and "batch_size=16" in failure and "resnet18" in failure


def test_the_search_still_reports_a_best_model(faulty_search):
    _, _, _, proc = faulty_search
    assert "on the test split: accuracy" in proc.stdout
