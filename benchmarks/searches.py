"""Sections 6-7: searches through tune-run's real Tuner (`search.scheduling.tuner.new_tuner`), timed inside.

Each search is a spec from `search.door.spec.build_spec` (so the same validation as a space file), a data
set from `core.data.load_dataset` with the spec's settings (as `search.runner.run_search` loads it),
and `new_tuner(spec, data, callbacks=[])`: no MLflow, everything else as in a real search.
"""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path

import ray
from ray import tune

from benchmarks.memory import MB, MemorySampler
from benchmarks.throughput import BATCH, WIDTH
from core.data import Dataset, load_dataset
from search.door.spec import SearchSpec, build_spec
from search.scheduling.tuner import new_tuner, start_ray

# Section 4 and 5's one searched dimension (a spec needs one); SGD, the project's defaults.
SGD_SPACE = {"lr": tune.loguniform(0.01, 0.2), "width": WIDTH, "batch_size": BATCH}


def start_local_ray(num_cpus: int) -> float:
    """Starts the section's local Ray; returns its start-up time in seconds."""
    start = time.perf_counter()
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    start_ray(None)  # already started: only sets tune-run's environment for Tune
    return time.perf_counter() - start


def make_spec(workdir: Path, name: str, data_dir: str, space: dict, **settings) -> SearchSpec:
    """A validated spec of one CPU search in `workdir`, 1 CPU per trial, no retries."""
    base = {"name": name, "dataset": "cifar10", "data_dir": data_dir, "search": "random",
            "cpus_per_trial": 1, "max_failures": 0, "storage": str(workdir)}
    return build_spec(workdir / f"{name}.py", base | settings, space)


def load_for(spec: SearchSpec) -> tuple[Dataset, float]:
    start = time.perf_counter()
    data = load_dataset(spec.dataset, spec.data_dir, spec.val_fraction, spec.subset, spec.seed)
    return data, time.perf_counter() - start


def fit(spec: SearchSpec, data: Dataset, callbacks: list | None = None
        ) -> tuple[tune.ResultGrid, float]:
    """Runs the search; returns its results and its wall time (Tuner built and fitted)."""
    start = time.perf_counter()
    grid = new_tuner(spec, data, callbacks=callbacks or []).fit()
    seconds = time.perf_counter() - start
    if grid.errors:
        raise RuntimeError(f"{spec.name}: {len(grid.errors)} trials failed: {grid.errors[0]}")
    return grid, seconds


def dataset_mb(data: Dataset) -> float:
    arrays = (data.train_x, data.train_y, data.val_x, data.val_y, data.test_x, data.test_y)
    return sum(a.nbytes for a in arrays) / MB


class Timeline(tune.Callback):
    """When each trial started and ended, as the driver saw it (time.perf_counter)."""

    def __init__(self):
        self.starts: dict[str, float] = {}
        self.ends: dict[str, float] = {}

    def on_trial_start(self, iteration, trials, trial, **info):
        self.starts.setdefault(trial.trial_id, time.perf_counter())

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.ends[trial.trial_id] = time.perf_counter()


def orchestration(workdir: Path, data_dir: str, sizes: list[dict]) -> dict:
    """Section 6: wall time of FIFO searches, 2 trials at a time, against the ideal.

    The ideal is the sum of the trials' own time (Ray's `time_total_s`: from the start of the
    trainable to its last report) divided by the concurrency; overhead = 1 - ideal / wall. The
    driver's timeline splits what is not ideal: from fit() to the first trial's start (Ray starts
    the workers), from the last trial's end to fit()'s return, and what is left in between.
    """
    concurrency = 2
    out = {"ray_start_seconds": start_local_ray(num_cpus=2), "concurrency": concurrency, "runs": []}
    try:
        for size in sizes:
            spec = make_spec(workdir, f"overhead-{size['label']}-{size['trials']}", data_dir,
                             SGD_SPACE, scheduler="fifo", num_samples=size["trials"],
                             max_concurrent=concurrency, max_epochs=size["epochs"],
                             subset=size["subset"], seed=4)
            data, load_seconds = load_for(spec)
            timeline = Timeline()
            start = time.perf_counter()
            grid, wall = fit(spec, data, [timeline])
            trial_seconds = [r.metrics["time_total_s"] for r in grid]
            epoch_seconds = [float(r.metrics_dataframe["epoch_seconds"].sum()) for r in grid]
            ideal = sum(trial_seconds) / concurrency
            to_first = min(timeline.starts.values()) - start
            after_last = start + wall - max(timeline.ends.values())
            out["runs"].append({
                "label": size["label"], "trials": len(grid), "epochs": size["epochs"],
                "train_images": len(data.train_y), "load_seconds": load_seconds,
                "wall_seconds": wall, "mean_trial_seconds": sum(trial_seconds) / len(grid),
                "ideal_seconds": ideal, "overhead": 1 - ideal / wall,
                "training_ideal_seconds": sum(epoch_seconds) / concurrency,
                "trial_seconds": trial_seconds, "trial_training_seconds": epoch_seconds,
                "overhead_over_training": 1 - sum(epoch_seconds) / concurrency / wall,
                "to_first_trial_seconds": to_first, "after_last_trial_seconds": after_last,
                "between_seconds": wall - ideal - to_first - after_last,
            })
            del grid, data
    finally:
        ray.shutdown()
    return out


def memory(workdir: Path, data_dir: str, subset: int, reference_subset: int,
           concurrencies: list[int]) -> dict:
    """Section 5: peak memory of a one-epoch search with `c` trials running at once, per c.

    Each run gets a fresh local Ray with as many logical CPUs as the largest concurrency, so the
    fixed cost is the same in each and the object store holds only that run's data set; trials
    reserve 1 CPU, as with cpus_per_trial=1. A last run at the largest concurrency on a small
    data set (`reference_subset` images) is the reference: a trial holding its own copy of the
    data would show it as private memory (USS) above the reference's.
    """
    num_cpus = max(concurrencies)
    out = {"num_cpus": num_cpus, "physical_cores": os.cpu_count(), "runs": []}
    plan = [(subset, c, False) for c in concurrencies] + [(reference_subset, num_cpus, True)]
    for images, c, reference in plan:
        # val_fraction 0.5 halves the epoch's time; the object store holds the whole set anyway.
        spec = make_spec(workdir, f"memory-{images}-{c}", data_dir, SGD_SPACE,
                         scheduler="fifo", num_samples=c, max_concurrent=c, max_epochs=1,
                         subset=images, val_fraction=0.5, seed=5)
        data, load_seconds = load_for(spec)
        ray_seconds = start_local_ray(num_cpus=num_cpus)
        try:
            with MemorySampler() as idle:
                time.sleep(1.0)
            with MemorySampler() as sampler:
                grid, wall = fit(spec, data)
        finally:
            ray.shutdown()
        out["runs"].append({
            "concurrency": c, "reference": reference, "trials": len(grid),
            "wall_seconds": wall, "ray_start_seconds": ray_seconds,
            "dataset_mb": dataset_mb(data),
            "images": len(data.train_y) + len(data.val_y) + len(data.test_y),
            "train_images": len(data.train_y), "load_seconds": load_seconds,
            "idle_rss_mb": idle.peak_rss / MB, "idle_pss_mb": idle.peak_pss / MB,
            **sampler.summary(),
        })
        del grid, data
        gc.collect()
    return out
