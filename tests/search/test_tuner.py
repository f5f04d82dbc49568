"""The local Ray that tune-run starts (no dashboard beyond this machine), and GPU scheduling without
GPUs: Ray started with 2 logical GPUs packs trials of 0.5 GPU each."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import ray
from ray import tune

from core.data import load_dataset
from search.door.spec import build_spec
from search.errors import SpecError
from search.runner import run_search
from search.scheduling.tuner import new_tuner, start_ray

pytestmark = pytest.mark.slow


def test_local_ray_has_no_dashboard_beyond_loopback():
    assert not ray.is_initialized()
    context = start_ray(None)
    try:
        url = context.dashboard_url or ""
        assert url == "" or url.startswith(("127.0.0.1:", "localhost:")), url
        assert os.environ.get("RAY_AUTH_MODE", "token") != "disabled"  # Ray's token auth left on
    finally:
        ray.shutdown()


class ConcurrencyProbe(tune.Callback):
    """Records how many trials ran at once, and which GPU ids each trial saw."""

    def __init__(self):
        self.most_running = 0
        self.gpu_ids: dict[str, set[str]] = {}
        self.sharing: list[dict[str, int]] = []  # trials per GPU id, at each result

    def on_trial_result(self, iteration, trials, trial, result, **info):
        running = [t for t in trials if t.status == "RUNNING"]
        self.most_running = max(self.most_running, len(running))
        self.gpu_ids.setdefault(trial.trial_id, set()).add(result["gpu_ids"])
        per_gpu: dict[str, int] = {}
        for t in running:
            for gpu in (t.last_result or {}).get("gpu_ids", "").split(","):
                if gpu:
                    per_gpu[gpu] = per_gpu.get(gpu, 0) + 1
        self.sharing.append(per_gpu)


@pytest.fixture
def ray_with_two_logical_gpus():
    ray.init(num_cpus=4, num_gpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def test_half_gpu_trials_run_four_at_once_on_the_gpus_ray_assigned(
        ray_with_two_logical_gpus, image_folder, tmp_path):
    settings = {"dataset": "imagefolder", "data_dir": str(image_folder), "num_samples": 8,
                "max_epochs": 3, "scheduler": "fifo", "gpus_per_trial": 0.5, "cpus_per_trial": 1,
                "storage": str(tmp_path / "results"), "name": "gpus"}
    # Epochs of at least 2 s, so the four trials that fit overlap even on a loaded machine.
    space = {"lr": tune.choice([0.01, 0.05]), "width": 0.0625, "batch_size": 16,
             "_fault": {"kind": "slow", "seconds": 2.0}}
    spec = build_spec(Path("gpus.py"), settings, space, allow_faults=True)
    data = load_dataset("imagefolder", str(image_folder), cache_dir=str(tmp_path))
    probe = ConcurrencyProbe()
    grid = new_tuner(spec, data, [probe]).fit()

    assert len(grid) == 8 and not grid.errors
    assert probe.most_running == 4  # 2 GPUs / 0.5 GPU per trial
    for trial_id, seen in probe.gpu_ids.items():
        assert len(seen) == 1, trial_id  # one GPU for a trial's whole life
        (ids,) = seen
        assert ids in ("0", "1"), (trial_id, ids)
    # Never more than two half-GPU trials on one GPU.
    assert max(max(s.values(), default=0) for s in probe.sharing) <= 2
    assert {ids for seen in probe.gpu_ids.values() for ids in seen} == {"0", "1"}


@pytest.fixture
def ray_with_one_logical_gpu():
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False)
    yield
    ray.shutdown()


def test_more_gpus_per_trial_than_the_cluster_has_is_refused_before_any_record(
        ray_with_one_logical_gpu, image_folder, tmp_path):
    settings = {"dataset": "imagefolder", "data_dir": str(image_folder), "gpus_per_trial": 2,
                "storage": str(tmp_path / "results"), "name": "too-many",
                "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}
    spec = build_spec(Path("gpus.py"), settings, {"lr": tune.choice([0.01, 0.05])})
    with pytest.raises(SpecError, match="--gpus-per-trial: 2 is more than the cluster's 1 GPUs"):
        run_search(spec)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "results").exists()
