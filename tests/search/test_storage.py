"""`--storage s3://bucket/prefix` for the whole life of a search, against a real S3 server (moto's
server mode on loopback): checkpoints and results in the bucket, nothing local but a cache, a kill
and a resume from another working folder (another machine: its own cache), `ls`, `sync`,
`report`, the best model. And what cannot work is refused at the door, in one line.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import injected, search_runs, write_space
from tests.outside import free_port, kill_group, tune_run

MAX_EPOCHS = 3
NUM_SAMPLES = 3


def _space(folder: Path, name: str, **settings) -> Path:
    # Each epoch takes at least 0.6 s, so the test can kill the driver mid-way.
    base = {"dataset": "digits", "num_samples": NUM_SAMPLES, "max_epochs": MAX_EPOCHS,
            # Promotion ASHA (the default): on resume its rungs come back from the bucket.
            "scheduler": "asha", "grace_period": 1, "reduction_factor": 2,
            "search": "random", "seed": 3, "name": name,
            "experiment": name, "cpus_per_trial": 1, "max_concurrent": 2}
    return write_space(folder / "space.py", base | settings, """
        "lr": tune.loguniform(1e-2, 1e-1),
        "width": 0.0625,
        "batch_size": 64,
        "_fault": {"kind": "slow", "seconds": 0.6},
    """)


def _stale_ray_address(temp: Path) -> dict[str, str]:
    """A Ray temp folder whose address file names a cluster that died (nothing listens there):
    what `ray start` leaves behind. ray.init() would try to join it."""
    (temp / "ray").mkdir(parents=True)
    (temp / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}")
    return {"TMPDIR": str(temp), "RAY_TMPDIR": str(temp)}


def _state_knows(s3_server, bucket: str, keys: list[str], trial_folders: set[str]) -> bool:
    """Whether the newest experiment state in the bucket names every one of `trial_folders`."""
    states = sorted(k for k in keys if k.rsplit("/", 1)[-1].startswith("experiment_state-"))
    if not states:
        return False
    text = s3_server.client().get_object(Bucket=bucket, Key=states[-1])["Body"].read().decode()
    return all(folder.rsplit("/", 1)[-1] in text for folder in trial_folders)


@pytest.mark.slow
def test_a_search_lives_on_s3_through_a_kill_and_a_resume_elsewhere(s3_server, tmp_path, request):
    bucket = s3_server.bucket("searches")
    storage = f"s3://{bucket}/team"
    first, second = tmp_path / "machine-a", tmp_path / "machine-b"
    first.mkdir(), second.mkdir()
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    # A short path: Ray's sockets live under its temp folder (at most 107 characters).
    temp = Path(tempfile.mkdtemp(prefix="tr-stale-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(temp, ignore_errors=True))
    stale = _stale_ray_address(temp)
    env = s3_server.env | stale
    # data_share 1e-9: the trials read the data set themselves rather than get it from the driver.
    space = _space(first, "s3-life", data_share=1e-9)

    # Without --address, and with a dead cluster's address file in Ray's temp folder: tune-run
    # starts its own Ray (never joins, never hangs on the old address).
    proc = tune_run(str(space), "--storage", storage, "--tracking-uri", uri, cwd=first, env=env,
                    wait=False)
    deadline = time.time() + 240
    while time.time() < deadline:  # kill the driver once a trial passed a rung and two started
        keys = s3_server.keys(bucket, "team/s3-life/")
        promoted = [k for k in keys if k.endswith("checkpoint_000001/trial.pt")]
        started = {k.split("/checkpoint_")[0] for k in keys if "/checkpoint_" in k}
        # ...and once the bucket's experiment state knows them: Ray uploads it behind the trials,
        # and a trial it never saw started is (rightly) started again, in a folder of its own.
        if promoted and len(started) >= 2 and _state_knows(s3_server, bucket, keys, started):
            break
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.3)
    else:
        pytest.fail("the search never had a trial past its first rung and a second one")
    os.killpg(proc.pid, signal.SIGKILL)
    injected("driver SIGKILL")
    proc.communicate(timeout=60)
    kill_group(proc)
    stale_file = Path(stale["TMPDIR"], "ray", "ray_current_cluster")
    assert stale_file.read_text().startswith("127.0.0.1:")  # left as it was: no Ray joined it
    assert not (first / "s3:").exists()  # round 1 wrote a local folder named 's3:'

    # Another machine: another working folder, another cache, the same bucket and tracking store.
    listed = tune_run("ls", "--storage", storage, cwd=second, env=s3_server.env)
    assert listed.returncode == 0, listed.stderr
    assert "unfinished" in listed.stdout, listed.stdout
    assert f"tune-run --resume s3-life --storage {storage}" in listed.stdout
    resumed = tune_run("--resume", "s3-life", "--storage", storage, "--tracking-uri", uri,
                       cwd=second, env=s3_server.env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "on the test split" in resumed.stdout

    keys = s3_server.keys(bucket, "team/s3-life/")
    assert "team/s3-life/tune_run_done.json" in keys and "team/s3-life/tune_run.json" in keys
    assert "team/s3-life/tune_run_driver.json" not in keys  # the driver removed its mark
    assert sum(k.endswith("/result.json") for k in keys) == NUM_SAMPLES
    assert not list(second.glob("s3*")) and not list(second.glob("tune-results"))
    summary = json.loads(s3_server.client().get_object(
        Bucket=bucket, Key="team/s3-life/tune_run_done.json")["Body"].read())
    assert summary["checkpoint"].startswith(f"{storage}/s3-life/")  # valid from any machine

    # Exactly once in MLflow: one child per trial, each epoch once, none left RUNNING.
    client, parents, children = search_runs(uri, "s3-life")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.params["storage"] == storage
    assert len(children) == NUM_SAMPLES
    for run in children:
        assert run.info.status == "FINISHED", run.data.tags
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
        # each epoch once, ending at a rung (1, 2) or the end
        assert sorted(steps) == list(range(1, len(steps) + 1)) and steps, steps

    # The rest of its life, from the second machine: sync (changes nothing), report, the model.
    synced = tune_run("sync", "s3-life", "--storage", storage, "--tracking-uri", uri, cwd=second,
                      env=s3_server.env)
    assert synced.returncode == 0 and f"synced {NUM_SAMPLES} trials" in synced.stdout, synced.stderr
    assert len(search_runs(uri, "s3-life")[2]) == NUM_SAMPLES
    report = tune_run("report", "s3-life", "--storage", storage, "--tracking-uri", uri,
                      cwd=second, env=s3_server.env)
    assert report.returncode == 0, report.stderr[-2000:]
    assert summary["best_trial_id"] in report.stdout
    from PIL import Image
    from sklearn.datasets import load_digits

    Image.fromarray((load_digits().images[0] * 15.9).astype("uint8")).save(second / "zero.png")
    predicted = tune_run("predict", "s3-life", str(second / "zero.png"), "--storage", storage,
                         "--tracking-uri", uri, cwd=second, env=s3_server.env)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert predicted.stdout.startswith(f"{second / 'zero.png'}: "), predicted.stdout


@pytest.mark.bad_input
def test_an_s3_endpoint_that_does_not_answer_is_one_line(tmp_path):
    space = _space(tmp_path, "nowhere")
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "AWS_ACCESS_KEY_ID": "k",
           "AWS_SECRET_ACCESS_KEY": "a-secret-value", "AWS_DEFAULT_REGION": "us-east-1",
           "HOME": str(tmp_path.parent / f"{tmp_path.name}-home")}  # caches of imported libraries
    started = time.time()
    done = tune_run(str(space), "--storage", "s3://bucket/x", cwd=tmp_path, env=env)
    assert done.returncode == 2, done.stderr
    assert time.time() - started < 30
    line = done.stderr.strip()
    assert "\n" not in line and line.startswith("tune-run: error: --storage: s3://bucket/x")
    assert "does not answer" in line and "AWS_ENDPOINT_URL" in line
    assert "a-secret-value" not in done.stderr + done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.py"]  # nothing created


@pytest.mark.bad_input
def test_a_missing_bucket_is_one_line(s3_server, tmp_path):
    space = _space(tmp_path, "nobucket")
    done = tune_run(str(space), "--storage", "s3://no-such-bucket/x", cwd=tmp_path,
                    env=s3_server.env | {"HOME": str(tmp_path.parent / f"{tmp_path.name}-home")})
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        f"tune-run: error: --storage: s3://no-such-bucket/x: no bucket 'no-such-bucket' at "
        f"{s3_server.endpoint}; create it, or name one that exists")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.py"]


def test_tune_run_cache_moves_the_local_copy_of_s3_storage(tmp_path, monkeypatch):
    # The same cache folder as the decoded images (core/cache.py; tests/core/test_data.py).
    from search.place.storage import local_root

    monkeypatch.setenv("TUNE_RUN_CACHE", str(tmp_path / "moved"))
    assert local_root("s3://bucket/team") == tmp_path / "moved" / "s3" / "bucket" / "team"
