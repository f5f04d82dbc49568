"""Searches logging over HTTP to a real `mlflow server` on a free loopback port: the record, the
model, secrets kept out of it, and a server that goes away mid-search and comes back."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import mlflow.pytorch
import pytest
import requests
import torch
from mlflow.tracking import MlflowClient

from core.data import load_dataset
from tests.conftest import REPO, injected, search_runs, write_space

pytestmark = pytest.mark.slow

SECRET = "s3cr3t-pw"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TrackingServer:
    """An `mlflow server` this test starts, and stops by its process group."""

    def __init__(self, folder: Path, port: int):
        self.folder, self.port = folder, port
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port",
             str(self.port), "--backend-store-uri", f"sqlite:///{self.folder}/server.db",
             "--artifacts-destination", str(self.folder / "artifacts"), "--workers", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if requests.get(f"{self.uri}/health", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            assert self.proc.poll() is None, "mlflow server exited"
            time.sleep(0.3)
        pytest.fail("mlflow server did not answer /health within 90 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture
def server(tmp_path):
    srv = TrackingServer(tmp_path, free_port())
    srv.start()
    yield srv
    srv.stop()


def start_search(work: Path, image_folder: Path, uri: str, name: str, slow: float = 0.0,
                 num_samples: int = 4, flags: tuple[str, ...] = ()) -> subprocess.Popen:
    settings = {"dataset": "imagefolder", "data_dir": str(image_folder), "num_samples": num_samples,
                "max_epochs": 3, "grace_period": 1, "reduction_factor": 2, "max_concurrent": 2,
                "experiment": "over-http", "name": name, "storage": str(work / "results")}
    space = write_space(work / f"{name}.py", settings, f"""
        "lr": tune.loguniform(1e-2, 1e-1),
        "width": 0.0625,
        "batch_size": 16,
        "_fault": {{"kind": "slow", "seconds": {slow}}},
    """)
    env = {"PYTHONPATH": str(REPO), "PATH": os.environ["PATH"], "HOME": str(work),
           "TUNE_RUN_TEST_FAULTS": "1", "MLFLOW_TRACKING_PASSWORD": SECRET}
    return subprocess.Popen([sys.executable, "-m", "search.cli", str(space), "--tracking-uri", uri,
                             *flags],
                            cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=600)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # what is left of the Ray it started
        except ProcessLookupError:
            pass
    return proc.returncode, out, err


def runs_of(uri: str):
    return search_runs(uri, "over-http")


def test_search_logs_over_http_and_keeps_secrets_out(server, image_folder, tmp_path):
    # Credentials in the URI: the server has no auth and ignores them; they must not leak.
    uri_with_secret = f"http://tuner:{SECRET}@127.0.0.1:{server.port}"
    code, out, err = finish(start_search(tmp_path, image_folder, uri_with_secret, "secretive",
                                         flags=("--register", "tiny-resnet")))
    assert code == 0, err[-3000:]

    client, parents, children = runs_of(server.uri)
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED"
        epochs = int(child.data.tags["tune_run.epochs"])
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_acc")]
        assert steps == list(range(1, epochs + 1))
        assert child.data.tags["tune_run.status"] in ("completed", "stopped_early")
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/leaderboard.csv", "report/leaderboard.md"} <= artifacts
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "space")] == ["space/secretive.py"]
    # Artifacts went where the server says: its artifacts destination.
    assert list((tmp_path / "artifacts").rglob("leaderboard.csv"))

    mlflow.set_tracking_uri(server.uri)
    model = mlflow.pytorch.load_model(f"runs:/{parent.info.run_id}/best_model")
    data = load_dataset("imagefolder", str(image_folder), cache_dir=str(tmp_path / "cache"))
    pixels = torch.from_numpy(data.test_x).float() / 255  # the model normalises them itself
    with torch.no_grad():
        predicted = model(pixels).argmax(1).numpy()
    assert float((predicted == data.test_y).mean()) == pytest.approx(parent.data.metrics["test_acc"])

    # --register made the best model a version in the Model Registry, the alias champion points at
    # it, and it scores the same.
    (version,) = client.search_model_versions("name = 'tiny-resnet'")
    assert version.run_id == parent.info.run_id
    assert client.get_model_version_by_alias("tiny-resnet", "champion").version == version.version
    registered = mlflow.pytorch.load_model("models:/tiny-resnet@champion")
    with torch.no_grad():
        again = registered(pixels).argmax(1).numpy()
    assert (again == predicted).all()

    stored = [str(v) for r in parents + children
              for v in (*r.data.params.values(), *r.data.tags.values())]
    assert not any(SECRET in v for v in stored)
    assert SECRET not in out and SECRET not in err


def test_server_down_mid_search_then_back_loses_nothing(server, image_folder, tmp_path):
    proc = start_search(tmp_path, image_folder, server.uri, "flaky", slow=1.5, num_samples=4)
    client = MlflowClient(server.uri)
    deadline = time.time() + 180
    while time.time() < deadline:  # until some epoch has been logged
        experiment = client.get_experiment_by_name("over-http")
        runs = client.search_runs([experiment.experiment_id]) if experiment else []
        if any("val_acc" in r.data.metrics for r in runs):
            break
        time.sleep(0.5)
    server.stop()
    injected("tracking server down")
    time.sleep(4)  # trials go on training while the server is away
    server.start()
    code, out, err = finish(proc)
    assert code == 0, err[-3000:]
    assert "MLflow logging failed" in err  # it noticed, and went on

    client, parents, children = runs_of(server.uri)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED", err[-3000:]
    assert len(children) == 4
    results = {}
    import json

    for path in (tmp_path / "results" / "flaky").glob("*/result.json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        results[rows[0]["trial_id"]] = rows
    for child in children:
        rows = results[child.data.tags["tune_run.trial_id"]]
        assert child.info.status == "FINISHED"
        history = client.get_metric_history(child.info.run_id, "val_acc")
        assert [m.step for m in history] == [r["training_iteration"] for r in rows]
        assert [m.value for m in history] == pytest.approx([r["val_acc"] for r in rows])
