"""Section `data-memory`: a trial's memory does not grow with the data set, and the mapped path
trains as fast as the in-memory one.

A local Ray with a small object store (`STORE_MB`), so that a data set of a few hundred MB is well
over `data_share` of it: each trial then reads the data set from its node's decoded cache, mapped
(core/decoded_cache.py), instead of receiving it through the object store. Two searches, 2 trials at
once, one epoch each, on CIFAR-shaped random images written in torchvision's CIFAR-10 layout: a
large data set (>= 4 x data_share of the store) and one 8 times smaller (which fits data_share and
is shipped through the object store as before). Sampled: each trial process's RSS and anonymous
(private, not file-backed) memory, the driver's, and the object store's. Then images/s of one
trial's training on the large data set mapped from the cache against the same trial on the same
arrays held in memory (np.array copies), in this process, one thread.
"""

from __future__ import annotations

import gc
import pickle
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.harness import Context, Report, Section, Table, Target

RESULTS = "RESULTS-data-memory.md"
STORE_MB = 100
DATA_SHARE = 0.25

PER_TRIAL = Target("a trial's private memory grows <= 10 % from the small data set to the large",
                   "<=", 0.10)
MAPPED_SPEED = Target("a trial on the mapped data set >= 0.9 of its images/s on arrays in memory",
                      ">=", 0.90)


@dataclass(frozen=True)
class Sizes:
    large: int  # train images of the large data set (CIFAR-shaped: 3,072 bytes each)
    speed_subset: int  # train images of the speed comparison's epochs
    epochs: int  # timed epochs of the speed comparison


FORCE_MAPPED = 1e-6  # a data_share no data set fits: every trial reads the mapped cache

FULL = Sizes(large=40_000, speed_subset=8_000, epochs=2)
QUICK = Sizes(large=1_600, speed_subset=400, epochs=1)


def write_cifar_layout(root: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Random CIFAR-shaped images in torchvision's cifar-10-batches-py layout (five train batches)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    per = n_train // 5
    for i in range(1, 6):
        rows = rng.integers(0, 256, (per, 3072), dtype=np.uint8)
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(
            {"data": rows, "labels": (np.arange(per) % 10).tolist()}))
    rows = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    (folder / "test_batch").write_bytes(pickle.dumps(
        {"data": rows, "labels": (np.arange(n_test) % 10).tolist()}))
    (folder / "batches.meta").write_bytes(pickle.dumps(
        {"label_names": [f"c{i}" for i in range(10)]}))
    return root


def _anonymous_mb(pid: int) -> float:
    """A process's anonymous memory (its own, not pages of files it maps), from smaps_rollup."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Anonymous:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _search(ctx: Context, root: Path, name: str, data_share: float = DATA_SHARE) -> dict:
    import ray

    from benchmarks.sections.memory_sampler import MB, MemorySampler
    from benchmarks.sections.orchestration import fit, make_spec
    from search.place.cluster import data_source
    from search.scheduling.tuner import start_ray

    spec = make_spec(ctx.work, name, str(root), scheduler="fifo", num_samples=2,
                     max_concurrent=2, max_epochs=1, val_fraction=0.1, seed=3,
                     data_share=data_share)
    from core.data import load_dataset

    start = time.perf_counter()
    data = load_dataset(spec.dataset, spec.data_dir, spec.val_fraction, spec.subset, spec.seed,
                        cache_dir=str(ctx.work / "cache"))
    load_seconds = time.perf_counter() - start
    import os

    os.environ["TUNE_RUN_CACHE"] = str(ctx.work / "cache")  # the trials' decoded cache too
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=STORE_MB * 2**20)
    start_ray(None)
    anonymous: dict[int, float] = {}
    try:
        shipped = data_source(spec, data) is None
        with MemorySampler() as sampler:
            import threading

            stop = threading.Event()

            def sample_anonymous():
                while not stop.wait(0.5):
                    for pid in list(sampler._kinds):
                        if sampler._kinds[pid] == "trial_workers":
                            anonymous[pid] = max(anonymous.get(pid, 0.0), _anonymous_mb(pid))

            thread = threading.Thread(target=sample_anonymous, daemon=True)
            thread.start()
            _, wall = fit(spec, data)
            stop.set()
            thread.join()
    finally:
        ray.shutdown()
    summary = sampler.summary()
    decoded = sum(a.nbytes for a in (data.train_x, data.val_x, data.test_x)) / MB
    del data
    gc.collect()
    return {"name": name, "decoded_mb": decoded, "shipped_through_store": shipped,
            "load_seconds": load_seconds, "wall_seconds": wall,
            "trial_anonymous_peak_mb": sorted(anonymous.values()),
            "trial_rss_peak_mb": sorted(w["rss"] for w in summary["trial_worker_peaks_mb"]),
            "driver_rss_mb": summary["rss_at_peak_mb"].get("driver"),
            "peak_object_store_mb": summary["peak_object_store_mb"]}


def _speed(ctx: Context, root: Path) -> dict:
    """One trial's training images/s on the mapped cache and on the same arrays copied into memory."""
    import torch

    from core.data import Dataset, load_dataset
    from core.hparams import resolve
    from core.trial import build_trial

    torch.set_num_threads(1)
    mapped = load_dataset("cifar10", str(root), 0.0, ctx.sizes.speed_subset, 0,
                          cache_dir=str(ctx.work / "cache"))
    in_memory = Dataset(**{k: (np.array(v) if isinstance(v, np.ndarray) else v)
                           for k, v in vars(mapped).items()})
    rows = {}
    for label, data in (("mapped", mapped), ("in_memory", in_memory), ("mapped_again", mapped)):
        hp = resolve({"width": 0.25, "batch_size": 128, "lr": 0.05})
        trial = build_trial(data, torch.device("cpu"), model_name="resnet18",
                            max_epochs=1 + ctx.sizes.epochs, **hp)
        results = [trial.run_epoch(e) for e in range(1, 2 + ctx.sizes.epochs)]
        timed = [r.stats for r in results[1:]]
        rows[label] = sum(s.images for s in timed) / sum(s.seconds for s in timed)
    return {"mapped_type": type(mapped.train_x).__name__, "images_per_s": rows}


def run_data_memory(ctx: Context) -> dict:
    n_large = ctx.sizes.large
    large = write_cifar_layout(ctx.work / "large", n_large, n_large // 5)
    small = write_cifar_layout(ctx.work / "small", n_large // 8, n_large // 40, seed=1)
    # The small data set once more, read from the mapped cache (a data_share it cannot fit): which
    # path a data set that fits the store should take is decided by these two runs.
    runs = [_search(ctx, small, "small"), _search(ctx, large, "large"),
            _search(ctx, small, "small-mapped", data_share=FORCE_MAPPED)]
    return {"store_mb": STORE_MB, "data_share": DATA_SHARE, "runs": runs,
            "speed": _speed(ctx, large)}


def _path(run: dict) -> str:
    return ("shipped to the trials through the object store" if run["shipped_through_store"]
            else "read by each trial from its node's mapped cache")


def report_data_memory(r: dict) -> Report:
    m = r["data-memory"]
    rows = []
    for run in m["runs"]:
        rows.append([run["name"], f"{run['decoded_mb']:.0f}",
                     "object store" if run["shipped_through_store"] else "mapped cache",
                     ", ".join(f"{v:.0f}" for v in run["trial_anonymous_peak_mb"]),
                     ", ".join(f"{v:.0f}" for v in run["trial_rss_peak_mb"]),
                     f"{run['driver_rss_mb']:.0f}" if run["driver_rss_mb"] else "-",
                     f"{run['peak_object_store_mb']:.0f}" if run["peak_object_store_mb"] else "-"])
    small, large, *mapped_small = m["runs"]
    growth = (max(large["trial_anonymous_peak_mb"]) / max(small["trial_anonymous_peak_mb"])) - 1
    speed = m["speed"]["images_per_s"]
    in_memory = speed["in_memory"]
    mapped = (speed["mapped"] + speed["mapped_again"]) / 2
    return Report("Memory that does not grow with the data set", [
        f"A local Ray with a {m['store_mb']} MB object store and data_share {m['data_share']}: the "
        f"large data set ({large['decoded_mb']:.0f} MB decoded, "
        f"{large['decoded_mb'] / (m['store_mb'] * m['data_share']):.1f} x data_share of the store) "
        f"is {_path(large)}; the small one (8 times smaller) is {_path(small)}. Two trials at "
        "once, one epoch each, ResNet-18 width 0.25. "
        "Private memory is a process's anonymous memory (smaps_rollup), what a copy of the data "
        "would add to; RSS also counts the cache's pages the trial has mapped (shared by both "
        "trials and the page cache).",
        Table(["data set", "decoded MB", "trials read it from", "trial private MB (peak)",
               "trial RSS MB (peak)", "driver RSS MB", "object store MB"], rows),
        f"One trial's training on the large data set, one thread: {speed['mapped']:.0f} and "
        f"{speed['mapped_again']:.0f} images/s mapped (before and after), {in_memory:.0f} with the "
        f"same arrays copied into memory.", *_small_paths(small, mapped_small)],
        [PER_TRIAL.check(growth, f"{growth:+.1%} ({max(small['trial_anonymous_peak_mb']):.0f} -> "
                                 f"{max(large['trial_anonymous_peak_mb']):.0f} MB)"),
         MAPPED_SPEED.check(mapped / in_memory, f"{mapped / in_memory:.2f} ({mapped:.0f} / "
                                                f"{in_memory:.0f})")])


def _small_paths(shipped: dict, mapped: list[dict]) -> list[str]:
    """The measured choice for a data set that fits the store: the same search both ways."""
    if not mapped:  # a run from before this part
        return []
    other = mapped[0]
    faster = "the object store" if shipped["wall_seconds"] <= other["wall_seconds"] else "the mapped cache"
    return [f"The small data set both ways, the same search: through the object store "
            f"{shipped['wall_seconds']:.1f} s wall, trial private memory "
            f"{max(shipped['trial_anonymous_peak_mb']):.0f} MB; from the mapped cache "
            f"{other['wall_seconds']:.1f} s, {max(other['trial_anonymous_peak_mb']):.0f} MB. "
            f"Faster here: {faster}. A data set that fits data_share keeps going through the "
            "object store whatever this says about speed: that path needs no data_dir on the "
            "trials' nodes (the driver ships it), which a cluster without shared storage relies on."]


SECTIONS = (
    Section("data-memory", "trial memory on a data set 4x data_share (mapped cache) and one 8x "
            "smaller; mapped against in-memory images/s", RESULTS, run_data_memory,
            report_data_memory, (PER_TRIAL, MAPPED_SPEED), FULL, QUICK, default=False),
)
