"""Sections `overhead` and `memory`: searches through tune-run's real Tuner, timed and sampled inside.

Each search is a spec from `search.door.spec.build_spec` (so the same validation as a space file), a
data set from `core.data.load_dataset` with the spec's settings (as `search.runner.run_search` loads
it), and `search.scheduling.tuner.new_tuner(spec, data, callbacks=...)`: no MLflow, everything else
as in a real search.

- overhead: wall time of FIFO searches of short and long trials against the trials' own time;
- memory: peak PSS/RSS of the driver and every Ray process, and the object store, with 1, 2 and 4
  trials at once (memory_sampler.py).

Ray and search/ are imported inside the functions: this module is imported by `--list` and on
machines without Ray.
"""

from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

from benchmarks.harness import Context, Report, Section, Table, Target

RESULTS = "RESULTS.md"
WIDTH, BATCH = 0.25, 128  # the model of every section of RESULTS.md
CONCURRENCY = 2

SHORT_TRIAL_OVERHEAD = Target("orchestration overhead of a search of ~3-s trials < 20%", "<", 0.20)
LONG_TRIAL_OVERHEAD = Target("orchestration overhead of a search of ~30-s trials < 10%", "<", 0.10)
STORE_ONCE = Target("object store holds the data set once, whatever the concurrency (peak <= 1.1 x "
                    "data set + 5 MB)", "==", True)
NO_COPY = Target("memory grows by model+batch per extra trial, not by the data set: a trial's "
                 "private memory grows by < 50 % of the data set's growth", "<", 0.5)


@dataclass(frozen=True)
class MemorySizes:
    subset: int  # images of the data set (before its val/test split)
    concurrency: tuple[int, ...]  # numbers of trials running at once
    reference_subset: int  # a small data set: the reference of the copy check


# ~3 s and ~30 s trials at ~550 images/s (a 1-thread bf16 trial on this Xeon). The short trials run
# twice, 8 and 24 of them: the workers' start is paid once per search.
OVERHEAD_FULL = ({"label": "short", "subset": 700, "epochs": 2, "trials": 8},
                 {"label": "short", "subset": 700, "epochs": 2, "trials": 24},
                 {"label": "long", "subset": 5_000, "epochs": 3, "trials": 8})
OVERHEAD_QUICK = ({"label": "short", "subset": 150, "epochs": 1, "trials": 2},)
MEMORY_FULL = MemorySizes(20_000, (1, 2, 4), 3_000)  # 24,000 images with the test split: 70 MB
MEMORY_QUICK = MemorySizes(600, (1, 2), 150)


def sgd_space() -> dict:
    """The searched dimension a spec needs (one); SGD, the project's defaults."""
    from ray import tune

    return {"lr": tune.loguniform(0.01, 0.2), "width": WIDTH, "batch_size": BATCH}


def start_local_ray(num_cpus: int) -> float:
    """Starts the section's local Ray; returns its start-up time in seconds."""
    import ray

    from search.scheduling.tuner import start_ray

    start = time.perf_counter()
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    start_ray(None)  # already started: only sets tune-run's environment for Tune
    return time.perf_counter() - start


def make_spec(workdir: Path, name: str, data_dir: str, **settings):
    """A validated spec of one CPU search in `workdir`, 1 CPU per trial, no retries."""
    from search.door.spec import build_spec

    base = {"name": name, "dataset": "cifar10", "data_dir": data_dir, "search": "random",
            "cpus_per_trial": 1, "max_failures": 0, "storage": str(workdir)}
    return build_spec(workdir / f"{name}.py", base | settings, sgd_space())


def load_for(spec):
    from core.data import load_dataset

    start = time.perf_counter()
    data = load_dataset(spec.dataset, spec.data_dir, spec.val_fraction, spec.subset, spec.seed)
    return data, time.perf_counter() - start


def fit(spec, data, callbacks: list | None = None):
    """Runs the search; returns its results and its wall time (Tuner built and fitted)."""
    from search.scheduling.tuner import new_tuner

    start = time.perf_counter()
    grid = new_tuner(spec, data, callbacks=callbacks or []).fit()
    seconds = time.perf_counter() - start
    if grid.errors:
        raise RuntimeError(f"{spec.name}: {len(grid.errors)} trials failed: {grid.errors[0]}")
    return grid, seconds


def dataset_mb(data) -> float:
    from trainables.data_source import dataset_bytes

    return dataset_bytes(data) / 2**20


def timeline():
    """A Tune callback that keeps when each trial started and ended, as the driver saw it."""
    from ray import tune

    class Timeline(tune.Callback):
        def __init__(self):
            self.starts: dict[str, float] = {}
            self.ends: dict[str, float] = {}

        def on_trial_start(self, iteration, trials, trial, **info):
            self.starts.setdefault(trial.trial_id, time.perf_counter())

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.ends[trial.trial_id] = time.perf_counter()

    return Timeline()


def run_overhead(ctx: Context) -> dict:
    """Wall time of FIFO searches, 2 trials at a time, against the ideal.

    The ideal is the sum of the trials' own time (Ray's `time_total_s`: from the start of the
    trainable to its last report) divided by the concurrency; overhead = 1 - ideal / wall. The
    driver's timeline splits what is not ideal: from fit() to the first trial's start (Ray starts
    the workers), from the last trial's end to fit()'s return, and what is left in between.
    """
    import ray

    out = {"ray_start_seconds": start_local_ray(num_cpus=2), "concurrency": CONCURRENCY, "runs": []}
    try:
        for size in ctx.sizes:
            spec = make_spec(ctx.work, f"overhead-{size['label']}-{size['trials']}",
                             str(ctx.data_dir), scheduler="fifo", num_samples=size["trials"],
                             max_concurrent=CONCURRENCY, max_epochs=size["epochs"],
                             subset=size["subset"], seed=4)
            data, load_seconds = load_for(spec)
            clock = timeline()
            start = time.perf_counter()
            grid, wall = fit(spec, data, [clock])
            trial_seconds = [r.metrics["time_total_s"] for r in grid]
            epoch_seconds = [float(r.metrics_dataframe["epoch_seconds"].sum()) for r in grid]
            ideal = sum(trial_seconds) / CONCURRENCY
            to_first = min(clock.starts.values()) - start
            after_last = start + wall - max(clock.ends.values())
            out["runs"].append({
                "label": size["label"], "trials": len(grid), "epochs": size["epochs"],
                "train_images": len(data.train_y), "load_seconds": load_seconds,
                "wall_seconds": wall, "mean_trial_seconds": sum(trial_seconds) / len(grid),
                "ideal_seconds": ideal, "overhead": 1 - ideal / wall,
                "training_ideal_seconds": sum(epoch_seconds) / CONCURRENCY,
                "trial_seconds": trial_seconds, "trial_training_seconds": epoch_seconds,
                "overhead_over_training": 1 - sum(epoch_seconds) / CONCURRENCY / wall,
                "to_first_trial_seconds": to_first, "after_last_trial_seconds": after_last,
                "between_seconds": wall - ideal - to_first - after_last,
            })
            del grid, data
    finally:
        ray.shutdown()
    return out


def run_memory(ctx: Context) -> dict:
    """Peak memory of a one-epoch search with `c` trials running at once, per c.

    Each run gets a fresh local Ray with as many logical CPUs as the largest concurrency, so the
    fixed cost is the same in each and the object store holds only that run's data set; trials
    reserve 1 CPU, as with cpus_per_trial=1. A last run at the largest concurrency on a small
    data set (`reference_subset` images) is the reference: a trial holding its own copy of the
    data would show it as private memory (USS) above the reference's.
    """
    import ray

    from benchmarks.sections.memory_sampler import MB, MemorySampler

    sizes: MemorySizes = ctx.sizes
    num_cpus = max(sizes.concurrency)
    out = {"num_cpus": num_cpus, "physical_cores": os.cpu_count(), "runs": []}
    plan = [(sizes.subset, c, False) for c in sizes.concurrency]
    plan.append((sizes.reference_subset, num_cpus, True))
    for images, c, reference in plan:
        # val_fraction 0.5 halves the epoch's time; the object store holds the whole set anyway.
        spec = make_spec(ctx.work, f"memory-{images}-{c}", str(ctx.data_dir), scheduler="fifo",
                         num_samples=c, max_concurrent=c, max_epochs=1, subset=images,
                         val_fraction=0.5, seed=5)
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


# ---------------------------------------------------------------------------------------------------
# Reports.


def report_overhead(r: dict) -> Report:
    o = r["overhead"]
    rows = [[run["label"], run["trials"], run["epochs"], run["train_images"],
             run["mean_trial_seconds"], run["wall_seconds"], run["ideal_seconds"],
             f"{run['overhead']:.1%}", f"{run['overhead_over_training']:.1%}",
             *[f"{run[k]:.1f}" if k in run else "" for k in
               ("to_first_trial_seconds", "between_seconds", "after_last_trial_seconds")]]
            for run in o["runs"]]
    targets = {"short": SHORT_TRIAL_OVERHEAD, "long": LONG_TRIAL_OVERHEAD}
    verdicts = [targets[run["label"]].check(
        run["overhead"], f"{run['overhead']:.1%}",
        f"orchestration overhead, {run['trials']} {run['label']} trials "
        f"(~{run['mean_trial_seconds']:.0f} s each) < {targets[run['label']].limit:.0%}")
        for run in o["runs"]]
    return Report("6. Orchestration overhead of the whole search", [
        f"tune-run's real Tuner (`search.scheduling.tuner.new_tuner`, spec from `build_spec`, FIFO, "
        f"cpus_per_trial=1, max_concurrent={o['concurrency']}, reuse_actors, a checkpoint per "
        f"epoch, no MLflow callback), one local Ray for the section: "
        f"`ray.init(num_cpus=2, include_dashboard=False)` took {o['ray_start_seconds']:.1f} s, "
        f"not counted below. Ideal = sum of the trials' `time_total_s` / {o['concurrency']}; "
        f"overhead = 1 - ideal / wall. The next column uses the epochs' own training time "
        f"(`epoch_seconds`, no evaluation, checkpoints or set-up) as the ideal instead. The last "
        f"three split wall - ideal by the driver's clock: from `fit()` to the first trial's start "
        f"(Ray starting the trials' worker processes: Python, torch and Ray Tune imports), "
        f"what is left between trials, and from the last trial's end to `fit()`'s return.",
        Table(["trials", "count", "epochs each", "train images", "mean trial s", "wall s",
               "ideal s", "overhead", "overhead vs training only", "to first trial s",
               "between s", "after last s"], rows)], verdicts)


def _store(mb: float | None) -> str:
    return "?" if mb is None else f"{mb:.0f}"


def report_memory(r: dict) -> Report:
    m = r["memory"]
    main = [run for run in m["runs"] if not run["reference"]]
    reference = next((run for run in m["runs"] if run["reference"]), None)
    rows = []
    for run in m["runs"]:
        pss, workers = run["pss_at_peak_mb"], run["trial_worker_peaks_mb"]
        uss = (f"{mean(w['uss'] for w in workers):,.0f} / "
               f"{mean(w['uss_median'] for w in workers):,.0f}") if workers else "-"
        rows.append([
            run["concurrency"],
            f"{run['images']:,} = {run['dataset_mb']:.1f} MB"
            + (" (reference)" if run["reference"] else ""),
            run["idle_pss_mb"], run["peak_pss_mb"], run["peak_rss_mb"],
            f"{run['trial_workers_at_peak']}: {pss.get('trial_workers', 0.0):,.0f}",
            pss.get("driver", 0.0), pss.get("ray_system", 0.0) + pss.get("idle_workers", 0.0),
            uss, mean(w["store_mapped"] for w in workers) if workers else "-",
            _store(run["peak_object_store_mb"]), run["wall_seconds"],
            run["sampler_cpu_seconds"]])
    starts = [run["ray_start_seconds"] for run in m["runs"]]
    blocks = [
        f"Each run is a one-epoch FIFO search with as many trials as its concurrency, all running "
        f"at once (cpus_per_trial=1), on a fresh local Ray with logical num_cpus={m['num_cpus']} "
        f"on {m['physical_cores']} cores (started in {min(starts):.1f}-{max(starts):.1f} s, not "
        "counted), so the fixed cost is the same in each and the object store holds only that "
        "run's data set (validation split 0.5, to halve the epoch). Memory of the driver and of "
        "every process under it (Ray's system processes, idle and trial workers) is sampled with "
        "psutil in a thread of the driver: RSS every 0.2 s; PSS, USS and the object store every "
        "2 s (a page-table walk per process, too costly for 0.2 s).",
        "- PSS divides each shared page (the object store's) among the processes that map it, so "
        "its sum is the search's physical memory; RSS counts a shared page in every process. "
        "Idle = Ray started and the data set loaded in the driver, before the search.\n"
        "- Trial worker USS = a trial worker's private memory: its peak, and its median over the "
        "samples (the typical value while it trains), averaged over the run's trial workers.\n"
        "- Store pages = the object store's pages a trial worker maps: the data it reads in place, "
        "shared with the other trials.\n"
        "- Object store = the blocks of its /dev/shm file (a high-water mark).\n"
        "- Sampler CPU = the sampler thread's own CPU time, taken from the trials' cores.",
        Table(["concurrent trials", "data set", "idle PSS MB", "peak PSS sum MB",
               "peak RSS sum MB", "trial workers at PSS peak: PSS MB", "driver PSS MB",
               "Ray system + idle workers PSS MB", "trial worker USS MB: peak / median",
               "trial worker store pages MB", "object store peak MB", "wall s",
               "sampler CPU s"], rows)]
    notes, verdicts = [], []
    one = next((run for run in main if run["concurrency"] == 1), None)
    for run in main:
        if one and run["concurrency"] > 1:
            per_trial = (run["peak_pss_mb"] - one["peak_pss_mb"]) / (run["concurrency"] - 1)
            notes.append(f"- From 1 to {run['concurrency']} concurrent trials the search's memory "
                         f"(peak PSS) grows by {per_trial:,.0f} MB per extra trial; the data set is "
                         f"{run['dataset_mb']:.0f} MB.")
    if main:
        peaks = [run["peak_object_store_mb"] for run in main]
        store_ok = None if None in peaks else all(
            peak <= 1.1 * run["dataset_mb"] + 5 for peak, run in zip(peaks, main))
        verdicts.append(STORE_ONCE.check(
            store_ok, f"{', '.join(_store(p) for p in peaks)} MB at "
                      f"{', '.join(str(run['concurrency']) for run in main)} trials, for "
                      f"{main[0]['dataset_mb']:.0f} MB of data"))
    biggest = max(main, key=lambda run: run["concurrency"], default=None)
    if biggest and reference and biggest["trial_worker_peaks_mb"] \
            and reference["trial_worker_peaks_mb"]:
        typical = {id(run): mean(w["uss_median"] for w in run["trial_worker_peaks_mb"])
                   for run in main if run["trial_worker_peaks_mb"]}
        big, small = typical[id(biggest)], mean(
            w["uss_median"] for w in reference["trial_worker_peaks_mb"])
        spread = max(typical.values()) - min(typical.values())
        mapped = mean(w["store_mapped"] for w in biggest["trial_worker_peaks_mb"])
        data_growth = biggest["dataset_mb"] - reference["dataset_mb"]
        share = (big - small) / data_growth
        notes.append(
            f"- A trial worker's private memory while it trains (median USS, mean of "
            f"{biggest['concurrency']} workers) is {big:.0f} MB with the "
            f"{biggest['dataset_mb']:.0f} MB data set and {small:.0f} MB with the "
            f"{reference['dataset_mb']:.0f} MB reference: it grows by {share:.0%} of the data "
            f"set's growth; a per-trial copy of the data would make it ~100 %. For scale, the "
            f"same value varies by {spread:.0f} MB between the runs on the same data set. Each "
            f"trial maps {mapped:.0f} MB of the object store's pages: it reads its train and "
            "validation images in place. The rest of a trial's memory is its worker process "
            "(Python, torch, Ray) plus model, optimizer state and the activations of its batches "
            "(128 images in training, 1024 in evaluation).")
        verdicts.append(NO_COPY.check(share, f"{share:.0%} ({big - small:+.0f} MB for "
                                             f"{data_growth:+.0f} MB of data; run-to-run spread "
                                             f"{spread:.0f} MB)"))
    if notes:
        blocks.append("\n".join(notes))
    return Report("7. Memory of the whole search against concurrency", blocks, verdicts)


SECTIONS = (
    Section("overhead", "wall time of FIFO searches of ~3-s and ~30-s trials through new_tuner "
            "against the trials' own time", RESULTS, run_overhead, report_overhead,
            (SHORT_TRIAL_OVERHEAD, LONG_TRIAL_OVERHEAD), OVERHEAD_FULL, OVERHEAD_QUICK,
            ("data_dir",)),
    Section("memory", "peak PSS/RSS of the driver and all Ray processes, object store, with 1, 2 "
            "and 4 trials at once", RESULTS, run_memory, report_memory, (STORE_ONCE, NO_COPY),
            MEMORY_FULL, MEMORY_QUICK, ("data_dir",), default=False),
)
