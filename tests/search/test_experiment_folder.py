"""The one reader of Ray's experiment folder: result rows, progress, and the state `tune-run ls` shows.

Folders are written here the way Ray and tune-run write them; the real searches of
test_search_end_to_end.py and test_resume.py check `tune-run ls` on finished and unfinished ones.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from search.place import experiment_folder as folder
from tests.conftest import REPO


def _search(root: Path, name: str = "s", accs=((0.2, 0.4), (0.5,))) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / folder.SAVED_SETTINGS).write_text(json.dumps(
        {"metric": "val_acc", "mode": "max", "num_samples": 4, folder.TOTAL_TRIALS: 8}))
    for i, trial in enumerate(accs):
        (path / f"train_{i}").mkdir()
        rows = [{"training_iteration": e, "val_acc": a} for e, a in enumerate(trial, 1)]
        (path / f"train_{i}" / folder.RESULT_FILE).write_text(
            "".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_step_reported_twice_keeps_its_first_value(tmp_path):
    (tmp_path / folder.RESULT_FILE).write_text(
        "".join(json.dumps({"training_iteration": e, "v": v}) + "\n"
                for e, v in ((1, "a"), (2, "b"), (2, "again"), (3, "c"))))
    assert [r["v"] for r in folder.result_rows(tmp_path)] == ["a", "b", "c"]


def test_a_line_cut_short_by_a_kill_is_left_out_and_ls_still_reads_the_search(tmp_path):
    # CI saw `tune-run ls` fail on a search whose driver was SIGKILLed while it wrote a line.
    path = _search(tmp_path)
    with open(path / "train_1" / folder.RESULT_FILE, "a") as f:
        f.write('{"training_iteration": 2, "val_a')
    assert [r["val_acc"] for r in folder.result_rows(path / "train_1")] == [0.5]
    state = folder.search_state(path)
    assert (state.epochs, state.best) == (3, 0.5)


def test_progress_counts_trials_started_and_epochs_trained(tmp_path):
    path = _search(tmp_path)
    assert folder.progress_text(path, 8) == "2 of 8 trials started, 3 epochs trained"


def test_state_of_a_search_ray_never_saved(tmp_path):
    state = folder.search_state(_search(tmp_path))
    assert (state.state, state.trials_done, state.trials_total) == ("not started", 0, 8)
    assert state.epochs == 3 and state.best == 0.5


def test_a_search_is_running_while_a_live_process_holds_it(tmp_path):
    path = _search(tmp_path)
    folder.mark_running(path)
    assert folder.search_state(path).state == "running"
    (path / folder.DRIVER).write_text(json.dumps({"host": json.loads(
        (path / folder.DRIVER).read_text())["host"], "pid": 2 ** 22 + 1}))  # no such process
    assert folder.search_state(path).state == "not started"
    folder.mark_stopped(path)
    (path / folder.DONE).write_text("{}")
    assert folder.search_state(path).state == "finished"


def test_a_driver_on_another_machine_runs_while_it_renews_its_mark(tmp_path):
    # What `tune-run ls` sees of a search whose driver runs elsewhere (a bucket's copy): running
    # while the mark is fresh; not running once the driver has been silent (this folder has no
    # state Ray saved, so "not started"; with one, "unfinished" and resumable from here).
    path = _search(tmp_path)
    now = time.time()
    for age, state in ((5, "running"), (folder.SILENT_S + 5, "not started")):
        (path / folder.DRIVER).write_text(json.dumps(
            {"host": "another-machine", "pid": 1, "beat": now - age}))
        assert folder.search_state(path).state == state, age


def test_folders_that_are_not_searches_are_left_out(tmp_path):
    _search(tmp_path, "a")
    (tmp_path / "not-a-search").mkdir()
    assert [s.name for s in folder.search_states(tmp_path)] == ["a"]


def test_ls_lists_each_search_in_one_table_row(tmp_path):
    _search(tmp_path, "first")
    _search(tmp_path, "second", accs=((0.7,),))
    proc = subprocess.run([sys.executable, "-m", "search.cli", "ls", "--storage", str(tmp_path)],
                          capture_output=True, text=True, env={"PYTHONPATH": str(REPO)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"Searches in {tmp_path}, the most recently active first:"
    assert lines[1].split("|")[1:-1] == [" search ", " state       ", " trials done ", " epochs ",
                                         " best        ", " last activity "]
    assert "| second | not started | 0/8" in lines[3] and "val_acc 0.7" in lines[3]
    assert "| first  | not started | 0/8" in lines[4] and "val_acc 0.5" in lines[4]


def test_ago_says_how_long_ago_in_one_unit():
    assert folder.ago(100.0, now=130.0) == "30 s ago"
    assert folder.ago(0.0, now=5 * 60) == "5 min ago"
    assert folder.ago(0.0, now=3 * 86400) == "3 days ago"
