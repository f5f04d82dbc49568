"""SearchRecord, the one owner of MLflow calls, on a real SQLite store."""

from __future__ import annotations

import pytest

from search.record.tracking import NOTE, SearchRecord


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


def _trial(trial_id: str):
    from types import SimpleNamespace

    return SimpleNamespace(trial_id=trial_id, config={"lr": 0.1})


def test_the_callback_logs_into_the_record_opened_while_workers_start(record):
    # The runner opens the record in a thread while Ray starts the workers; the callback takes
    # that one (one parent run), and Ray's pickled experiment state never holds it.
    import pickle
    from concurrent.futures import Future

    from search.record.tracking import TRIAL_ID, MlflowTracking

    opening = Future()
    opening.set_result(record)
    callback = MlflowTracking(record.tracking_uri, "records", record.search_key, "s", 3, ["lr"],
                              opening=opening)
    assert pickle.loads(pickle.dumps(callback)).opening is None
    callback.on_trial_start(0, [], _trial("t_00007"))
    assert callback.record is record and callback.lost == 0
    run = record.client.get_run(record.opened("t_00007"))
    assert run.data.tags[TRIAL_ID] == "t_00007" and run.info.status == "RUNNING"


def test_a_record_that_failed_to_open_is_opened_again_by_the_callback(record):
    from concurrent.futures import Future

    from search.record.tracking import MlflowTracking

    opening = Future()
    opening.set_exception(OSError("database is locked"))
    callback = MlflowTracking(record.tracking_uri, "records", record.search_key, "s", 3, ["lr"],
                              opening=opening)
    callback.on_trial_start(0, [], _trial("t_00008"))
    assert callback.lost == 0 and callback.record is not record
    assert callback.record.parent_id == record.parent_id  # the same search's parent run
    assert callback.record.opened("t_00008")


def test_the_default_store_is_the_one_that_ui_and_the_messages_name(tmp_path, monkeypatch):
    # One default (search/record/__init__.py): MLflow's own, and kept even where ./mlruns exists
    # (where MLflow itself would fall back to that folder, which no message of tune-run names).
    from mlflow.store.tracking import DEFAULT_TRACKING_URI as MLFLOWS

    from search.record import DEFAULT_TRACKING_URI

    assert DEFAULT_TRACKING_URI == MLFLOWS
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "mlruns" / "0").mkdir(parents=True)
    (tmp_path / "mlruns" / "0" / "meta.yaml").write_text("name: Default\n")
    record = SearchRecord(None, "records", str(tmp_path / "results" / "s"), "s")
    assert record.tracking_uri == DEFAULT_TRACKING_URI and (tmp_path / "mlflow.db").is_file()
