"""tune-run on a real multi-node Ray cluster (a head and workers started with `ray start` on this
machine, one CPU each, token authentication on), joined with `--address`, storage on S3 (moto on
loopback), tracked in the MLflow that teams run (`mlflow server` on PostgreSQL, artifacts proxied to
S3). A local folder that a node cannot see is refused before the search starts. In one search
(one, for the suite's time budget): trials spread over the nodes and each child run records its
node; a worker node killed mid-search (its raylet, SIGKILL) costs nothing: its trials continue from
their last checkpoint on another node and the record stays exactly-once; the best model loads back
through the server. Only the driver talks to MLflow; the nodes write to the bucket.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import injected, make_image_folder, search_runs, write_space
from tests.outside import free_port, stop, tune_run, wait_for_port

pytestmark = pytest.mark.slow

ADDRESS_FILE = Path("/tmp/ray/ray_current_cluster")  # where `ray start` would leave its address
NUM_SAMPLES = 4
MAX_EPOCHS = 4


def _space(folder: Path, name: str, **settings) -> Path:
    base = {"dataset": "digits", "num_samples": NUM_SAMPLES, "max_epochs": MAX_EPOCHS,
            "scheduler": "fifo", "search": "random", "seed": 5, "name": name, "experiment": name,
            "cpus_per_trial": 1, "max_failures": 3}
    return write_space(folder / "space.py", base | settings, """
        "lr": tune.loguniform(1e-2, 1e-1),
        "width": 0.0625,
        "batch_size": 64,
        "_fault": {"kind": "slow", "seconds": 1.0},
    """)


@pytest.fixture(scope="module")
def mlflow_server(postgres, s3_server, tmp_path_factory):
    """`mlflow server` as a team runs it: PostgreSQL behind, artifacts proxied to S3."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    database = postgres.database("mlflow")
    bucket = s3_server.bucket("mlflow-artifacts")
    port = free_port()
    env = os.environ | s3_server.env | {"MLFLOW_S3_ENDPOINT_URL": s3_server.endpoint}
    log = open(folder / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", database,
         "--artifacts-destination", f"s3://{bucket}/", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(port, timeout_s=180, proc=proc)
        yield f"http://127.0.0.1:{port}", bucket
    finally:
        stop(proc)
        log.close()


def _trial_nodes(uri: str, experiment: str) -> dict[str, tuple[str, int]]:
    """trial id -> (its node as the child run last recorded it, epochs logged), from the server."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return {}
    runs = client.search_runs([found.experiment_id], "tags.`tune_run.trial_id` != ''")
    return {r.data.tags["tune_run.trial_id"]: (r.data.tags.get("tune_run.node", ""),
                                                 len(client.get_metric_history(r.info.run_id,
                                                                               "val_acc")))
            for r in runs}


@pytest.mark.bad_input
def test_a_local_folder_that_a_node_cannot_see_is_refused(ray_cluster, tmp_path):
    had_address_file = ADDRESS_FILE.exists()
    storage = ray_cluster.hidden / "results"  # one worker node has an empty tmpfs there
    started = time.time()
    done = tune_run(str(_space(tmp_path, "unshared")), "--address", ray_cluster.address,
                    "--storage", str(storage), "--tracking-uri", f"sqlite:///{tmp_path}/m.db",
                    cwd=tmp_path, env=ray_cluster.env_for_drivers)
    assert done.returncode == 2, done.stderr[-2000:]
    line = done.stderr.strip()
    assert "\n" not in line, line
    assert line.startswith(f"tune-run: error: --storage: {storage} is not shared: 1 of the "
                           f"cluster's 3 nodes cannot see it"), line
    assert "use s3://bucket/prefix" in line and "NFS" in line
    assert time.time() - started < 60
    assert not storage.exists() and not (tmp_path / "m.db").exists()  # nothing created
    assert not list(ray_cluster.hidden.iterdir())  # the probe was removed
    assert ADDRESS_FILE.exists() == had_address_file


@pytest.mark.bad_input
def test_a_data_set_too_big_to_ship_that_a_node_cannot_read_is_refused(ray_cluster, s3_server,
                                                                        tmp_path):
    # data_share 1e-9: any data set is "too big", so each node must read data_dir itself.
    images = make_image_folder(ray_cluster.hidden / "images", train_per_class=4, test_per_class=2)
    space = _space(tmp_path, "unreadable", dataset="imagefolder", data_dir=str(images),
                   data_share=1e-9)
    done = tune_run(str(space), "--address", ray_cluster.address, "--storage",
                    f"s3://{s3_server.bucket('data-refused')}/x", "--tracking-uri",
                    f"sqlite:///{tmp_path}/m.db", cwd=tmp_path, env=ray_cluster.env_for_drivers)
    assert done.returncode == 2, done.stderr[-2000:]
    line = done.stderr.strip()
    assert "\n" not in line and line.startswith("tune-run: error: data_dir: the data set"), line
    assert "each node reads it itself" in line and str(images) in line, line
    assert not (tmp_path / "m.db").exists()
    assert not s3_server.keys("data-refused")
    shutil.rmtree(images)


def test_a_search_spreads_over_nodes_survives_losing_one_and_records_to_a_team_mlflow(
        ray_cluster, s3_server, mlflow_server, tmp_path):
    had_address_file = ADDRESS_FILE.exists()
    bucket = s3_server.bucket("cluster-searches")
    storage = f"s3://{bucket}/searches"
    uri, artifacts = mlflow_server
    doomed = ray_cluster.add_worker()  # a fourth node, to lose: the other tests keep theirs
    nodes = ray_cluster.wait_for_nodes(4)
    doomed_id = ray_cluster.node_id(doomed)
    assert doomed_id in {n["NodeID"] for n in nodes}

    proc = tune_run(str(_space(tmp_path, "on-cluster")), "--address", ray_cluster.address,
                    "--storage", storage, "--tracking-uri", uri, cwd=tmp_path,
                    env=ray_cluster.env_for_drivers, wait=False)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:  # a trial has saved an epoch on the doomed node
            on_doomed = [t for t, (node, epochs) in _trial_nodes(uri, "on-cluster").items()
                         if node == doomed_id and 1 <= epochs < MAX_EPOCHS]
            if on_doomed:
                break
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            time.sleep(0.5)
        else:
            pytest.fail(f"no trial trained on the doomed node: {_trial_nodes(uri, 'on-cluster')}")
        os.kill(ray_cluster.raylet_pid(doomed), signal.SIGKILL)
        injected("Ray worker node lost (raylet SIGKILL)")
        out, err = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        ray_cluster.stop_node(doomed)
    assert proc.returncode == 0, err[-3000:]

    # Exactly once: one child per trial, each epoch once, every one FINISHED (none RUNNING).
    client, parents, children = search_runs(uri, "on-cluster")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert "test_acc" in parents[0].data.metrics
    assert len(children) == NUM_SAMPLES
    for run in children:
        assert run.info.status == "FINISHED", run.data.tags
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
        assert sorted(steps) == list(range(1, MAX_EPOCHS + 1)), steps
    final_nodes = {r.data.tags["tune_run.trial_id"]: r.data.tags["tune_run.node"] for r in children}
    assert len(set(final_nodes.values())) >= 2, final_nodes  # more than one node trained
    for trial in on_doomed:
        assert final_nodes[trial] != doomed_id  # it ended on another node
        rows = _result_rows(s3_server, bucket, "searches/on-cluster/", trial)
        iterations = [r["training_iteration"] for r in rows]
        # Continued from its last checkpoint, never started over: Ray's iterations_since_restore
        # counts from the restore, so the node that took the trial over started after epoch 1 and
        # trained every epoch from there to the end. The lost node's epochs are there too (at the
        # restart Ray's own writer replaced them with the bucket's lagging copy; tune-run's puts
        # them back: search/place/result_log.py), one twice if the lost node never saved its
        # checkpoint; report and sync keep its first, as the MLflow record above does.
        assert sorted(set(iterations)) == list(range(1, MAX_EPOCHS + 1)), iterations
        last = rows[-1]
        restored_at = last["training_iteration"] - last["iterations_since_restore"]
        assert restored_at >= 1, rows
        resumed = list(range(restored_at + 1, MAX_EPOCHS + 1))
        assert iterations[-len(resumed):] == resumed, iterations
    assert ADDRESS_FILE.exists() == had_address_file

    # The artifacts went through the server into its bucket, none to a local mlruns folder.
    keys = s3_server.keys(artifacts)
    assert any(k.endswith("/MLmodel") for k in keys), keys[:20]  # the best model's files
    assert any(k.endswith("/report/leaderboard.csv") for k in keys), keys[:20]
    assert not (tmp_path / "mlruns").exists()
    # The best model loads back through the server (mlflow-artifacts:/ is proxied by it).
    import mlflow
    from sklearn.datasets import load_digits

    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(f"runs:/{parents[0].info.run_id}/best_model")
    channels = model.metadata.get_input_schema().inputs[0].shape[-1]
    images = (load_digits().images[:2] * 15.9).astype(np.uint8)  # (2, 8, 8), 0..255
    answer = model.predict(np.repeat(images[..., None], channels, axis=-1))
    assert len(answer) == 2 and any(c.startswith("p_") for c in answer.columns)


def _result_rows(s3_server, bucket: str, prefix: str, trial_id: str) -> list[dict]:
    key = next(k for k in s3_server.keys(bucket, prefix)
               if f"_{trial_id}_" in k and k.endswith("/result.json"))
    body = s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    return [json.loads(line) for line in body.splitlines() if line.strip()]
