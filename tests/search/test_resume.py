"""Interrupted searches (SIGKILL, SIGINT, twice in a row) resume with nothing lost or duplicated.

Real processes: the search runs in a subprocess of the CLI with a real local Ray and a real MLflow
SQLite store; the test kills it when two trials have finished and one is mid-way, then resumes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, injected
from tests.search.cli_search import (
    MAX_EPOCHS,
    NUM_SAMPLES,
    Search,
    assert_one_clean_record,
    kill_group,
    sigkill_driver,
    wait_while_running,
)

pytestmark = pytest.mark.slow


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
        rows = [line for line in listed.stdout.splitlines() if line.startswith("| interrupted ")]
        assert len(rows) == 1, listed.stdout + listed.stderr
        row = rows[0]
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
    # FIFO: under ASHA, Optuna's later trials may all be stopped at their first rung, and the
    # search then ended before any moment with a finished trial and one mid-way (seen in about 1
    # of 10 runs). One finished trial is enough here.
    search = Search(tmp_path, image_folder, search="optuna", scheduler="fifo")
    rows_before, midway, *_ = search.interrupt_when_two_finished_and_one_midway(
        search.start(), signal.SIGKILL, finished_at_least=1)
    proc = search.start("--resume")
    _wait_for_a_new_epoch(search, proc, search.result_rows())  # the resumed trials train a little
    proc.send_signal(signal.SIGINT)
    injected("driver SIGINT")
    proc.communicate(timeout=120)
    kill_group(proc)
    resumed = search.run("--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_one_clean_record(search, rows_before, midway, resumed.stdout + resumed.stderr)


def _wait_for_a_new_epoch(search: Search, proc: subprocess.Popen, rows: dict[str, list[int]]) -> None:
    deadline = time.time() + 120
    while sum(map(len, search.result_rows().values())) <= sum(map(len, rows.values())):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "the resumed search trained no epoch in 2 minutes"
        time.sleep(0.2)


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

    def paused_at_a_rung() -> tuple[list[str], dict] | None:
        rows = search.result_rows()
        statuses = _saved_statuses(search.folder)
        paused = [t for t, s in statuses.items() if s == "PAUSED" and rows.get(t)]
        return (paused, rows) if paused and any(len(r) >= 2 for r in rows.values()) else None

    paused, rows = wait_while_running(proc, paused_at_a_rung, "saved a trial paused at a rung")
    sigkill_driver(proc)

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
