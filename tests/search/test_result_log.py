"""The writer of each trial's result.json keeps every epoch when a trial restarts from its checkpoint
with the bucket's copy behind the driver's (what a lost node left in the cluster test), on a real
S3 server (moto on loopback), in a real Ray Tune run; and the merge of two copies of one file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from search.place.experiment_folder import merged_result_text

EPOCHS = 6
CRASH_AT = 4  # the first attempt dies before reporting this epoch


def _lines(*steps: int | tuple[int, str]) -> str:
    rows = [{"training_iteration": s, "v": ""} if isinstance(s, int)
            else {"training_iteration": s[0], "v": s[1]} for s in steps]
    return "".join(json.dumps(r) + "\n" for r in rows)


def test_two_copies_merge_into_every_line_once_in_epoch_order():
    driver = _lines(1, 2, 3, 4, 5)
    assert merged_result_text("", driver) == driver  # an empty copy loses nothing
    assert merged_result_text(_lines(1, 2), driver) == driver  # a copy behind
    assert merged_result_text(driver, _lines(1, 2)) == driver  # either way round
    # An epoch trained twice (the lost node's row, then the restored trial's) keeps both lines in
    # report order: result_rows keeps the first, as MLflow does.
    twice = _lines(1, 2, (3, "lost"))
    assert merged_result_text(twice, _lines(1, 2, (3, "lost"), (3, "again"), 4)) \
        == _lines(1, 2, (3, "lost"), (3, "again"), 4)


def test_a_line_cut_short_in_one_copy_comes_whole_from_the_other():
    whole = _lines(1, 2)
    assert merged_result_text(whole[:-9], whole) == whole


@pytest.mark.slow
def test_a_trial_restarted_with_the_bucket_behind_keeps_its_earlier_epochs(s3_server, tmp_path,
                                                                          monkeypatch):
    import ray
    from ray import tune

    from search.place.result_log import WholeResultLog

    bucket = s3_server.bucket("result-log")
    for key, value in s3_server.env.items():  # the driver and Ray's workers read these
        monkeypatch.setenv(key, value)
    crashed = tmp_path / "crashed"

    def trainable(config):
        import os
        import tempfile

        import boto3

        start = 0
        if tune.get_checkpoint():
            with tune.get_checkpoint().as_directory() as folder:
                start = json.loads(Path(folder, "epoch.json").read_text())
        for epoch in range(start + 1, EPOCHS + 1):
            if epoch == CRASH_AT and not crashed.exists():
                crashed.touch()
                # The bucket's result.json as Ray may leave it when its uploads lag behind
                # (uploaded while the trial had no epoch yet), then the trial's process dies.
                s3 = boto3.client("s3")
                trial = tune.get_context().get_trial_name()
                keys = [o["Key"] for o in s3.list_objects_v2(
                    Bucket=bucket, Prefix=f"searches/restarted/{trial}_")["Contents"]]
                folder = next(k for k in keys if "/checkpoint_" in k).split("/checkpoint_")[0]
                s3.put_object(Bucket=bucket, Key=f"{folder}/result.json", Body=b"")
                os._exit(1)
            with tempfile.TemporaryDirectory() as folder:
                Path(folder, "epoch.json").write_text(json.dumps(epoch))
                tune.report({"epoch": epoch}, checkpoint=tune.Checkpoint.from_directory(folder))

    ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="ERROR",
             log_to_driver=False)
    try:
        grid = tune.Tuner(trainable, run_config=tune.RunConfig(
            name="restarted", storage_path=f"s3://{bucket}/searches", callbacks=[WholeResultLog()],
            failure_config=tune.FailureConfig(max_failures=1), verbose=0)).fit()
    finally:
        ray.shutdown()
    assert crashed.exists() and not grid.errors

    key = next(k for k in s3_server.keys(bucket, "searches/restarted/")
               if k.endswith("/result.json"))
    body = s3_server.client().get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    rows = [json.loads(line) for line in body.splitlines() if line.strip()]
    # Every epoch once: those before the restart and those after (Ray's own writer left only
    # those after: the bucket's empty copy replaced the driver's).
    assert [r["training_iteration"] for r in rows] == list(range(1, EPOCHS + 1)), rows
    assert rows[-1]["iterations_since_restore"] == EPOCHS - CRASH_AT + 1  # it did restart
