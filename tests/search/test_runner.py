"""One search from start or resume: what the runner finds in a storage folder and brings back."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
from ray import tune

from search.door.spec import build_spec
from search.runner import experiment_state, load_saved_spec, resume_command, total_trials
from tests.search.conftest import MAX_EPOCHS, refuse_space_file


@pytest.mark.bad_input
def test_resume_of_a_search_that_is_not_there_is_refused(workdir, capsys):
    refuse_space_file(None, ["--resume", "nothing-here"], ["--resume", "nothing-here"], workdir,
                      capsys)


def test_each_grid_point_is_tried_num_samples_times():
    space = {"lr": tune.grid_search([0.01, 0.1, 0.2]), "optimizer": tune.grid_search(["sgd", "adamw"]),
             "dropout": tune.uniform(0.0, 0.5)}
    spec = build_spec(Path("grid.py"), {"dataset": "digits", "num_samples": 2}, space)
    assert total_trials(spec) == 2 * 3 * 2
    spec = build_spec(Path("random.py"), {"dataset": "digits", "num_samples": 5},
                      {"lr": tune.uniform(0.01, 0.1)})
    assert total_trials(spec) == 5


@pytest.mark.slow
def test_a_finished_search_comes_back_with_its_saved_settings(finished_search, tmp_path):
    work, uri, _ = finished_search
    storage = str(work / "results")
    spec = load_saved_spec("tiny", storage, {"tracking_uri": uri})
    # What the search was started with, from its folder, not from the space file's location now.
    assert (spec.num_samples, spec.max_epochs, spec.seed, spec.experiment) == (8, MAX_EPOCHS, 3, "e2e")
    assert spec.tracking_uri == uri and spec.origin.endswith("tiny.py")
    assert experiment_state(spec) == "finished"
    assert resume_command(spec) == f"tune-run --resume tiny --storage {Path(storage).resolve()}"
    other = build_spec(Path("tiny.py"), {"dataset": "digits", "storage": str(tmp_path)},
                       {"lr": tune.uniform(0.01, 0.1)})
    assert experiment_state(other) == "new"


def test_the_driver_renews_its_mark_while_the_search_runs_and_removes_it_after(tmp_path,
                                                                               monkeypatch):
    from search.place import experiment_folder as folder
    from search.runner import _driving

    monkeypatch.setattr(folder, "HEARTBEAT_S", 0.05)
    spec = build_spec(tmp_path / "space.py", {"dataset": "digits", "storage": str(tmp_path)},
                      {"lr": tune.uniform(0.01, 0.1)})
    mark = spec.experiment_path / folder.DRIVER
    with _driving(spec):
        first = json.loads(mark.read_text())["beat"]
        deadline = time.time() + 10
        while json.loads(mark.read_text())["beat"] == first and time.time() < deadline:
            time.sleep(0.02)
        assert json.loads(mark.read_text())["beat"] > first  # renewed
        assert json.loads(mark.read_text())["pid"] == os.getpid()
    assert not mark.exists()


class _Bucket:
    """The bucket's copy of the driver's mark, as push and remove leave it, in order."""

    def __init__(self, monkeypatch, slow_beat_s: float = 0.0):
        from search.place import storage

        self.mark: str | None = None
        self.landings: list[str] = []  # "beat" or "removed", in the order they reached it
        self.beat_under_way = threading.Event()
        self.slow_beat_s = slow_beat_s
        monkeypatch.setattr(storage, "push", self.push)
        monkeypatch.setattr(storage, "remove", self.remove)

    def push(self, storage, name, relative):
        from search.place.experiment_folder import DRIVER

        assert relative == DRIVER
        text = (Path(storage) / name / relative).read_text()  # read when the upload starts
        if threading.current_thread().name == "tune-run driver mark":
            self.beat_under_way.set()
            time.sleep(self.slow_beat_s)  # a slow bucket: the upload lands this much later
        self.mark = text
        self.landings.append("beat")

    def remove(self, storage, name, relative):
        self.mark = None
        self.landings.append("removed")


def test_a_beat_under_way_when_the_search_ends_lands_before_the_mark_is_removed(tmp_path,
                                                                              monkeypatch):
    # The heartbeat's last upload used to land after the removal when it outlasted the driver's
    # wait for it (a slow bucket), leaving the search shown as running: the removal now waits for
    # it, whatever it takes.
    from search.place import experiment_folder as folder
    from search.runner import _driving

    monkeypatch.setattr(folder, "HEARTBEAT_S", 0.05)
    bucket = _Bucket(monkeypatch, slow_beat_s=0.5)
    spec = build_spec(tmp_path / "space.py", {"dataset": "digits", "storage": str(tmp_path)},
                      {"lr": tune.uniform(0.01, 0.1)})
    with _driving(spec):
        assert bucket.beat_under_way.wait(10)  # the search ends while a beat uploads
    time.sleep(3 * folder.HEARTBEAT_S + bucket.slow_beat_s)  # any beat still to come has come
    assert bucket.mark is None and bucket.landings[-1] == "removed", bucket.landings
    assert bucket.landings.count("removed") == 1
    assert not (spec.experiment_path / folder.DRIVER).exists()


def test_a_beat_after_the_mark_was_removed_writes_nothing(tmp_path, monkeypatch):
    from search.place import experiment_folder as folder
    from search.runner import _DriverMark

    bucket = _Bucket(monkeypatch)
    spec = build_spec(tmp_path / "space.py", {"dataset": "digits", "storage": str(tmp_path)},
                      {"lr": tune.uniform(0.01, 0.1)})
    mark = _DriverMark(spec)
    mark.write()
    mark.remove()
    mark.write()  # the heartbeat's late beat
    assert bucket.landings == ["beat", "removed"]
    assert not (spec.experiment_path / folder.DRIVER).exists()


def test_a_record_that_cannot_be_written_at_the_end_says_how_to_rebuild_it(tmp_path, monkeypatch,
                                                                           capsys):
    # The store failed while the search ran and fails again at the end: Ray's results keep the
    # search, and the one line names the command that rebuilds the record from them.
    from concurrent.futures import Future

    import search.runner as runner

    def refused(spec):
        raise RuntimeError("Detected out-of-date database schema")

    monkeypatch.setattr(runner, "_new_record", refused)
    spec = build_spec(tmp_path / "space.py", {"dataset": "digits", "storage": str(tmp_path),
                                              "name": "lost"}, {"lr": tune.uniform(0.01, 0.1)})
    opening = Future()
    opening.set_exception(RuntimeError("Detected out-of-date database schema"))
    runner._record_with_retries(spec, opening, None, None, waits_s=())
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "out-of-date database schema" in line
    assert f"`tune-run sync lost --storage {tmp_path}`" in line
