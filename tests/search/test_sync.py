"""`tune-run sync`: Ray's files rebuild or complete a search's MLflow record, and a second sync
changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO
from tests.search.cli_search import Search

pytestmark = pytest.mark.slow


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
