"""Interrupted searches (SIGKILL, SIGINT, twice in a row) resume with nothing lost or duplicated.

Real processes: the search runs in a subprocess of the CLI with a real local Ray and a real MLflow
SQLite store; the test kills it when two trials have finished and one is mid-way, then resumes.
"""

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

pytestmark = pytest.mark.slow

NUM_SAMPLES = 5
MAX_EPOCHS = 4


class Search:
    """One search's files and the commands that start and resume it."""

    def __init__(self, work: Path, image_folder: Path, search: str = "random",
                 scheduler: str = "asha_stopping"):
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
        }
        # Each epoch takes at least 0.7 s, so the test can catch a trial mid-way.
        self.space = write_space(work / "space.py", settings, """
            "lr": tune.loguniform(1e-3, 1e-1),
            "width": 0.0625,
            "batch_size": 16,
            "_fault": {"kind": "slow", "seconds": 0.7},
        """)
        self.folder = work / "results" / "interrupted"

    def start(self, *flags: str) -> subprocess.Popen:
        env = {"PYTHONPATH": str(REPO), "PATH": os.environ["PATH"], "HOME": str(self.work),
               "TUNE_RUN_TEST_FAULTS": "1"}
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

    def interrupt_when_two_finished_and_one_midway(self, proc: subprocess.Popen, sig: int):
        deadline = time.time() + 300
        while time.time() < deadline:
            states = self.trial_states()
            finished = [t for t, (s, _) in states.items() if s == "FINISHED"]
            midway = [t for t, (s, n) in states.items() if s == "RUNNING" and 1 <= n < MAX_EPOCHS]
            if len(finished) >= 2 and midway:
                break
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            time.sleep(0.2)
        else:
            pytest.fail("the search never had two finished trials and one mid-way")
        rows_before = self.result_rows()
        proc.send_signal(sig)
        injected(f"driver {signal.Signals(sig).name}")
        try:
            out, err = proc.communicate(timeout=120)
        finally:
            _kill_group(proc)
        return rows_before, midway, proc.returncode, out, err

    def result_rows(self) -> dict[str, list[int]]:
        """trial id -> the training_iteration of each row of Ray's result.json."""
        rows = {}
        for path in self.folder.glob("train_classifier_*/result.json"):
            lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            if lines:  # a trial folder Ray made but never reported to has none
                rows[lines[0]["trial_id"]] = [r["training_iteration"] for r in lines]
        return rows


def _kill_group(proc: subprocess.Popen) -> None:
    """Stops what is left of the processes this test started (Ray's, in the search's group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


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


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["sigkill", "sigint"])
def test_interrupted_search_resumes_without_loss_or_duplicates(sig, image_folder, tmp_path):
    search = Search(tmp_path, image_folder)
    rows_before, midway, code, out, err = search.interrupt_when_two_finished_and_one_midway(
        search.start(), sig)
    if sig == signal.SIGINT:
        assert code == 130, err[-2000:]
        assert out.strip().splitlines()[-1] == (
            f"tune-run --resume interrupted --storage {tmp_path / 'results'}")
        states = search.trial_states()
        assert "RUNNING" not in {s for s, _ in states.values()}
        assert any(s == "KILLED" for s, _ in states.values())

    if sig == signal.SIGKILL:
        # The same command again does not overwrite the unfinished search.
        refused = search.run()
        assert refused.returncode == 2
        message = refused.stderr.strip()
        assert len(message.splitlines()) == 1
        assert "already exists" in message and "unfinished" in message
        assert "--resume" in message and "--name interrupted-2" in message
        listed = subprocess.run([sys.executable, "-m", "search.cli", "ls", "--storage",
                                 str(tmp_path / "results")], capture_output=True, text=True,
                                env={"PYTHONPATH": str(REPO), "PATH": os.environ["PATH"]})
        row = next(line for line in listed.stdout.splitlines() if line.startswith("| interrupted "))
        assert row.split("|")[2].strip() == "unfinished", listed.stdout
        assert listed.stdout.splitlines()[-1].strip() == (
            f"tune-run --resume interrupted --storage {tmp_path / 'results'}")

    resumed = search.run("--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_one_clean_record(search, rows_before, midway)
    if sig == signal.SIGKILL:
        rows_done = search.result_rows()
        again = search.run("--resume")  # a finished search is not run again
        assert again.returncode == 0 and "already finished" in again.stdout
        assert search.result_rows() == rows_done


def test_two_interruptions_in_a_row_then_resume_with_optuna(image_folder, tmp_path):
    search = Search(tmp_path, image_folder, search="optuna")
    rows_before, midway, *_ = search.interrupt_when_two_finished_and_one_midway(
        search.start(), signal.SIGKILL)
    proc = search.start("--resume")
    time.sleep(12)  # Ray starts and the resumed trials train a little
    proc.send_signal(signal.SIGINT)
    injected("driver SIGINT")
    proc.communicate(timeout=120)
    _kill_group(proc)
    resumed = search.run("--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_one_clean_record(search, rows_before, midway, resumed.stdout + resumed.stderr)


def test_sync_rebuilds_a_deleted_store_and_is_idempotent(image_folder, tmp_path):
    search = Search(tmp_path, image_folder)
    search.space.write_text(search.space.read_text().replace('"seconds": 0.7', '"seconds": 0.0'))
    assert search.run().returncode == 0
    original = _record(search)
    (tmp_path / "mlflow.db").unlink()

    sync = [sys.executable, "-m", "search.cli", "sync", "interrupted", "--storage",
            str(tmp_path / "results"), "--tracking-uri", search.uri]
    env = {"PYTHONPATH": str(REPO), "PATH": os.environ["PATH"], "HOME": str(tmp_path),
           "TUNE_RUN_TEST_FAULTS": "1"}
    first = subprocess.run(sync, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-3000:]
    assert _record(search) == original
    rebuilt = _record(search, with_times=True)
    second = subprocess.run(sync, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-3000:]
    assert _record(search, with_times=True) == rebuilt


def _record(search: Search, with_times: bool = False) -> dict:
    """The store's content that a reviewer sees, keyed by trial id."""
    client = MlflowClient(search.uri)
    experiment = client.get_experiment_by_name("resume")
    out = {}
    for run in client.search_runs([experiment.experiment_id]):
        key = run.data.tags.get("tune_run.trial_id", "parent")
        # The model card's latencies are measured again when a deleted store is rebuilt.
        history = {k: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, k)]
                   for k in run.data.metrics if not k.startswith("model_latency_ms")}
        tags = {k: v for k, v in run.data.tags.items() if k.startswith("tune_run.")}
        out[key] = (run.info.status, run.data.params, tags, history)
        if with_times:
            out[key] += (run.info.end_time,)
    return out


def _saved_statuses(folder: Path) -> dict[str, str]:
    """trial id -> status in Ray's latest saved experiment state."""
    states = sorted(folder.glob("experiment_state-*.json"))
    if not states:
        return {}
    try:
        saved = json.loads(states[-1].read_text())
    except (json.JSONDecodeError, OSError):  # being written
        return {}
    trials = [json.loads(state) if isinstance(state, str) else state
              for state, _ in saved["trial_data"]]
    return {t["trial_id"]: t["status"] for t in trials}


def test_promotion_asha_resumes_with_trials_paused_at_rungs(image_folder, tmp_path):
    search = Search(tmp_path, image_folder, scheduler="asha")
    proc = search.start()
    deadline = time.time() + 300
    while time.time() < deadline:
        rows = search.result_rows()
        statuses = _saved_statuses(search.folder)
        paused = [t for t, s in statuses.items() if s == "PAUSED" and rows.get(t)]
        if paused and any(len(r) >= 2 for r in rows.values()):
            break
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    else:
        pytest.fail("no trial was ever saved paused at a rung")
    os.killpg(proc.pid, signal.SIGKILL)
    injected("driver SIGKILL")
    proc.communicate(timeout=60)
    _kill_group(proc)

    resumed = search.run("--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = search.result_rows()
    assert len(after) == NUM_SAMPLES
    assert set(_saved_statuses(search.folder).values()) == {"TERMINATED"}  # none left paused
    for trial, iterations in after.items():
        assert sorted(set(iterations)) == list(range(1, max(iterations) + 1)), (trial, iterations)
        assert len(iterations) - len(set(iterations)) <= 1, (trial, iterations)
        assert max(iterations) in (1, 2, MAX_EPOCHS), (trial, iterations)  # a rung or the end
    for trial in paused:  # continued from its rung (or ended there), never started over
        assert after[trial][:len(rows[trial])] == rows[trial], (trial, rows[trial], after[trial])
