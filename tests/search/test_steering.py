"""Hands on a running search: `tune-run stop` ends it from another terminal, cleanly and resumably.

Real processes: the search runs in a subprocess of the CLI with a real local Ray and a real MLflow
SQLite store; `tune-run stop` runs as a second process, as a user in another terminal would run it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO
from tests.search.cli_search import (
    MAX_EPOCHS,
    Search,
    assert_one_clean_record,
    kill_group,
    wait_while_running,
)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "search.cli", *args], capture_output=True,
                          text=True, timeout=300,
                          env={"PYTHONPATH": str(REPO), "PATH": os.environ["PATH"], **(env or {})})


def _wait_for_one_trial_midway(search: Search, proc: subprocess.Popen) -> list[str]:
    return wait_while_running(proc, lambda: [t for t, (s, n) in search.trial_states().items()
                                             if s == "RUNNING" and 1 <= n < MAX_EPOCHS],
                              "had a trial mid-way")


@pytest.mark.slow
def test_stop_ends_a_running_search_cleanly_and_it_resumes(image_folder, tmp_path):
    search = Search(tmp_path, image_folder)
    storage = str(tmp_path / "results")
    assert _cli("stop", "nothing-here", "--storage", storage).returncode == 2

    proc = search.start()
    try:
        midway = _wait_for_one_trial_midway(search, proc)
        rows_before = search.result_rows()
        stopped = _cli("stop", "interrupted", "--storage", storage, "--wait", "120")
        out, err = proc.communicate(timeout=120)
    finally:
        kill_group(proc)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.splitlines()[-1] == (
        f"search 'interrupted' stopped; resume it with `tune-run --resume interrupted --storage "
        f"{storage}`")
    assert proc.returncode == 130, err[-3000:]
    assert "by `tune-run stop` from" in err
    states = search.trial_states()
    assert "RUNNING" not in {s for s, _ in states.values()}

    client = MlflowClient(search.uri)
    experiment = client.get_experiment_by_name("resume")
    parent, = [r for r in client.search_runs([experiment.experiment_id])
               if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "KILLED"
    assert "@" in parent.data.tags["tune_run.stopped_by"]
    assert "stopped by `tune-run stop`" in parent.data.tags["mlflow.note.content"]

    again = _cli("stop", "interrupted", "--storage", storage)  # nothing runs now
    assert again.returncode == 2
    assert again.stderr.strip() == (
        "tune-run: error: name: search 'interrupted' is not running (unfinished); nothing to "
        f"stop; resume it with `tune-run --resume interrupted --storage {storage}`")

    resumed = search.run("--resume")  # the old request does not stop it again
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_one_clean_record(search, rows_before, midway)


def test_stop_reaches_a_driver_through_s3_storage(s3_server, tmp_path, monkeypatch):
    # The driver's machine and the user's: two caches of one bucket. What the driver holds is set
    # up by hand (its settings and its mark, this process being the driver), the rest is real.
    import json

    from search import runner
    from search.place import experiment_folder as folder
    from search.place import storage as stores

    storage = f"s3://{s3_server.bucket('steer')}/team"
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("TUNE_RUN_CACHE", str(tmp_path / "driver-machine"))
    local = stores.local_root(storage) / "remote"
    local.mkdir(parents=True)
    (local / folder.SAVED_SETTINGS).write_text(json.dumps({"metric": "val_acc", "mode": "max"}))
    folder.mark_running(local)
    stores.push(storage, "remote", folder.SAVED_SETTINGS, folder.DRIVER)

    user = _cli("stop", "remote", "--storage", storage, "--wait", "0",
                env=s3_server.env | {"TUNE_RUN_CACHE": str(tmp_path / "user-machine")})
    assert user.returncode == 0, user.stderr
    assert user.stdout.strip() == "asked search 'remote' to stop"

    signals = []
    monkeypatch.setattr(runner, "STOP_POLL_REMOTE_S", 0.1)
    monkeypatch.setattr(runner.os, "kill", lambda pid, sig: signals.append((pid, sig)))
    watch, done = runner._StopWatch(_Spec(storage, "remote", local)), runner.threading.Event()
    watch.watch(done)  # returns once it has seen the request
    assert signals == [(os.getpid(), runner.signal.SIGINT)]
    assert "@" in watch.request["by"]


class _Spec:
    """What the stop watch reads of a search spec."""

    def __init__(self, storage, name, experiment_path):
        self.storage, self.name, self.experiment_path = storage, name, experiment_path

