"""One search from start or resume: what the runner finds in a storage folder and brings back."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from ray import tune

from search.runner import experiment_state, load_saved_spec, resume_command, total_trials
from search.door.spec import build_spec
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
