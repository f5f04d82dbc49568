"""SearchRecord, the one owner of MLflow calls, on a real SQLite store."""

from __future__ import annotations

import pytest

from search.tracking import NOTE, SearchRecord


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    work = tmp_path_factory.mktemp("store")
    return SearchRecord(f"sqlite:///{work}/mlflow.db", "records", str(work / "results" / "s"), "s")


def _parent(record):
    return record.client.get_run(record.parent_id)


def test_settings_are_logged_once_and_kept(record, tmp_path):
    space_file = tmp_path / "space.py"
    space_file.write_text("space = {}\n")
    record.log_settings({"num_samples": 8}, {"lr": 0.1}, str(space_file), "spaces/space.py")
    # A resume with other values changes nothing: params cannot change in MLflow.
    record.log_settings({"num_samples": 9}, {"lr": 0.2}, str(space_file), "elsewhere.py")
    params = _parent(record).data.params
    assert params == {"num_samples": "8", "space.lr": "0.1", "space_file": "spaces/space.py"}
    assert [a.path for a in record.client.list_artifacts(record.parent_id, "space")] == [
        "space/space.py"]


def test_the_outcome_is_logged_once(record):
    record.log_outcome({"test_acc": 0.5}, "t_00001", {"lr": 0.1})
    record.log_outcome({"test_acc": 0.5}, "t_00001", {"lr": 0.1})
    run = _parent(record)
    assert len(record.client.get_metric_history(record.parent_id, "test_acc")) == 1
    assert run.data.tags["tune_run.best_trial_id"] == "t_00001"


def test_a_description_is_what_the_ui_shows_first(record):
    record.describe(record.parent_id, "**8 trials**")
    assert _parent(record).data.tags[NOTE] == "**8 trials**"
