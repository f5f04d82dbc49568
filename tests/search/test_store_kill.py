"""A real `tune-run` killed (its whole process group, SIGKILL) while its MLflow SQLite store is
being made leaves no store or a whole one, and the next run records every trial.

The kill lands where the chaos run's did: MLflow's tables made, its migrations not run yet (the
store's test hook pauses there; search/record/sqlite_store.py).
"""

from __future__ import annotations

import time

import pytest

from search.place.experiment_folder import can_resume
from search.record.sqlite_store import PAUSE_ENV, TEMPLATES
from tests.conftest import injected, search_runs
from tests.search.cli_search import NUM_SAMPLES, Search, kill_group

pytestmark = pytest.mark.slow


def _wait_for(marker, proc, timeout_s: float = 300) -> None:
    deadline = time.time() + timeout_s
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "the search never reached the store's creation"
        time.sleep(0.1)


def test_a_kill_while_the_store_is_made_leaves_none_and_the_next_run_records_all(image_folder,
                                                                                  tmp_path):
    search = Search(tmp_path, image_folder)
    marker = tmp_path / "paused-in-store"
    proc = search.start(env={PAUSE_ENV: f"template:{marker}"})
    _wait_for(marker, proc)
    kill_group(proc)
    proc.communicate(timeout=60)
    injected("driver SIGKILL inside the store's creation")

    templates = tmp_path / ".cache" / "tune-run" / TEMPLATES  # HOME is the work folder
    assert not (tmp_path / "mlflow.db").exists()  # none rather than a half-made one
    assert [p.suffix for p in templates.iterdir()] == [".tmp"]  # the half-made one, aside

    # The kill came while Ray started: the search is resumable if Ray had saved it, else new.
    flags = ("--resume",) if can_resume(search.folder) else ()
    done = search.run(*flags)
    assert done.returncode == 0, (flags, done.stderr[-3000:])
    _, parents, children = search_runs(search.uri, "resume")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == NUM_SAMPLES
    assert {c.info.status for c in children} <= {"FINISHED", "FAILED"}
    assert [p.suffix for p in templates.iterdir()] == [".db"]  # built whole, the leftover gone
