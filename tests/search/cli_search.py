"""A search run as users run it: the CLI in a subprocess with a real local Ray and a real MLflow
SQLite store, slow enough per epoch to be caught mid-way (tests of resume and sync)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, injected, write_space

NUM_SAMPLES = 5
MAX_EPOCHS = 4


def assert_one_clean_record(search: Search, rows_before: dict, midway: list[str],
                            output: str = "") -> None:
    rows_after = search.result_rows()
    assert len(rows_after) == NUM_SAMPLES, (rows_before, rows_after, output[-4000:],
                                            sorted(p.name for p in search.folder.iterdir()))
    finished_before = [t for t, (s, _) in search.trial_states().items() if t in rows_before]
    for trial, iterations in rows_before.items():
        after = rows_after[trial]
        # Finished trials did not train again; interrupted ones did not start over.
        assert after.count(1) == 1, (trial, after)
        if trial not in midway and iterations and iterations[-1] in (MAX_EPOCHS,):
            assert after == iterations, (trial, iterations, after)
        assert len(after) - len(set(after)) <= 1, (trial, after)  # at most one epoch redone
    assert finished_before

    client = MlflowClient(search.uri)
    experiment = client.get_experiment_by_name("resume")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(c.data.tags["tune_run.trial_id"] for c in children) == sorted(rows_after)
    for child in children:
        assert child.info.status in ("FINISHED", "FAILED"), child.info.status
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_acc")]
        assert steps == list(range(1, max(rows_after[child.data.tags["tune_run.trial_id"]]) + 1))


class Search:
    """One search's files and the commands that start and resume it."""

    def __init__(self, work: Path, image_folder: Path, search: str = "random",
                 scheduler: str = "asha_stopping", model: str = "resnet18",
                 model_space: str = '"width": 0.0625,'):
        """`model` and `model_space` (the space's lines for the model's own options): what is
        trained; a ResNet-18 of 4 first-stage channels by default."""
        self.work = work
        self.uri = f"sqlite:///{work}/mlflow.db"
        settings = {
            "dataset": "imagefolder", "data_dir": str(image_folder), "num_samples": NUM_SAMPLES,
            "max_epochs": MAX_EPOCHS, "grace_period": 1, "reduction_factor": 2,
            "max_concurrent": 2, "search": search, "seed": 1, "name": "interrupted",
            # Ray's stopping ASHA ends trials as it goes, so "two finished, one mid-way" comes
            # early; promotion ASHA's own resume is tested below.
            "scheduler": scheduler,
            "storage": str(work / "results"), "tracking_uri": self.uri, "experiment": "resume",
            "model": model,
        }
        # Each epoch takes at least 0.7 s, so the test can catch a trial mid-way.
        self.space = write_space(work / "space.py", settings, f"""
            "lr": tune.loguniform(1e-3, 1e-1),
            {model_space}
            "batch_size": 16,
            "_fault": {{"kind": "slow", "seconds": 0.7}},
        """)
        self.folder = work / "results" / "interrupted"

    def start(self, *flags: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """`env`: more environment variables (test hooks) for this run."""
        env = {"PYTHONPATH": str(REPO), "PATH": os.environ["PATH"], "HOME": str(self.work),
               "TUNE_RUN_TEST_FAULTS": "1", **(env or {})}
        return subprocess.Popen(
            [sys.executable, "-m", "search.cli", str(self.space), *flags], cwd=self.work,
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,  # its own process group: the Ray processes it starts
        )

    def run(self, *flags: str) -> subprocess.CompletedProcess:
        proc = self.start(*flags)
        out, err = proc.communicate(timeout=600)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def trial_states(self) -> dict[str, tuple[str, int]]:
        """trial id -> (MLflow status, epochs logged), read straight from the SQLite store."""
        db = self.work / "mlflow.db"
        if not db.exists():
            return {}
        try:
            with sqlite3.connect(db, timeout=1) as con:
                rows = con.execute(
                    "SELECT t.value, r.status, (SELECT count(*) FROM metrics m WHERE "
                    "m.run_uuid = r.run_uuid AND m.key = 'val_acc') FROM runs r JOIN tags t "
                    "ON t.run_uuid = r.run_uuid AND t.key = 'tune_run.trial_id'").fetchall()
        except sqlite3.OperationalError:  # tables not created yet, or busy
            return {}
        return {trial: (status, epochs) for trial, status, epochs in rows}

    def interrupt_when_two_finished_and_one_midway(self, proc: subprocess.Popen, sig: int,
                                                   finished_at_least: int = 2):
        def finished_and_midway() -> list[str]:
            states = self.trial_states()
            finished = [t for t, (s, _) in states.items() if s == "FINISHED"]
            midway = [t for t, (s, n) in states.items() if s == "RUNNING" and 1 <= n < MAX_EPOCHS]
            return midway if len(finished) >= finished_at_least else []

        midway = wait_while_running(proc, finished_and_midway,
                                    f"had {finished_at_least} finished trial(s) and one mid-way")
        rows_before = self.result_rows()
        proc.send_signal(sig)
        injected(f"driver {signal.Signals(sig).name}")
        try:
            out, err = proc.communicate(timeout=120)
        finally:
            kill_group(proc)
        return rows_before, midway, proc.returncode, out, err

    def result_rows(self) -> dict[str, list[int]]:
        """trial id -> the training_iteration of each row of Ray's result.json."""
        rows = {}
        for path in self.folder.glob("train_classifier_*/result.json"):
            lines = _whole_lines(path.read_text())
            if lines:  # a trial folder Ray made but never reported to has none
                rows[lines[0]["trial_id"]] = [r["training_iteration"] for r in lines]
        return rows


def wait_while_running(proc: subprocess.Popen, ready, never: str, timeout_s: float = 300):
    """Polls `ready()` until it returns something true, which is returned; fails the test if the
    search ends first (with its stderr) or `timeout_s` passes (saying the search `never` ...)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        found = ready()
        if found:
            return found
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    pytest.fail(f"the search never {never}")


def sigkill_driver(proc: subprocess.Popen) -> None:
    """SIGKILLs the search's whole process group (its driver and the Ray it started)."""
    os.killpg(proc.pid, signal.SIGKILL)
    injected("driver SIGKILL")
    proc.communicate(timeout=60)
    kill_group(proc)


def _whole_lines(text: str) -> list[dict]:
    """Every row of a result.json, duplicates kept; a last line still being written is left out."""
    rows = []
    for i, line in enumerate(lines := [ln for ln in text.splitlines() if ln.strip()]):
        try:
            rows.append(json.loads(line))
        except ValueError:
            if i < len(lines) - 1:
                raise
    return rows


def kill_group(proc: subprocess.Popen) -> None:
    """Stops what is left of the processes this test started (Ray's, in the search's group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
