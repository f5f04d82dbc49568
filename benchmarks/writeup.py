"""RESULTS.md from the raw numbers of benchmarks/run.py: a table per section, each target checked."""

from __future__ import annotations

from statistics import mean

# The targets: (name, how it is computed, threshold text)
TUNE_RUN_VS_COMPUTE = 0.90  # tune-run's data path keeps >= 90 % of the compute limit
TUNE_RUN_VS_BASELINE = 1.5  # and is >= 1.5x the Ray Tune example's DataLoader path
ASHA_EPOCHS_SHARE = 0.40  # ASHA trains <= 40 % of FIFO's epochs
ASHA_ACC_POINTS = 1.0  # ASHA's best val_acc within 1 point of FIFO's
MEMORY_COPY_SHARE = 0.5  # a trial's private memory grows by < half the data set (a copy: 100 %)


def write_markdown(r: dict) -> str:
    targets: list[tuple[str, str, bool | None]] = []
    body = []
    for name, section in (("compute", _compute), ("tune_run", _tune_run), ("baseline", _baseline),
                          ("overhead", _overhead), ("memory", _memory), ("asha", _asha)):
        if name in r:
            body.append(section(r, targets))
    return "\n".join([_header(r), _targets(targets), *body])


def _header(r: dict) -> str:
    m = r["machine"]
    lines = ["# tune-run benchmarks", ""]
    if r["smoke"]:
        lines += ["> **SMOKE RUN**: every section shrunk to seconds to check the script. "
                  "These numbers measure nothing; run without `--smoke` for results.", ""]
    lines += [
        f"- Command: `{r['command']}` (in `{r['cwd']}`)",
        f"- Date: {r['date']}; total time {r['total_seconds'] / 60:.1f} min",
        f"- Machine: {m['cpu']}, {m['logical_cores']} logical / {m['physical_cores']} physical "
        f"cores, {m['memory_gb']:.0f} GiB RAM; load average at start "
        f"{', '.join(f'{x:.2f}' for x in m['load_average_at_start'])}",
        f"- Software: Python {m['python']}, torch {m['torch']}, torchvision {m['torchvision']}, "
        f"Ray {m['ray']} ({m['platform']})",
        "- Model everywhere: ResNet-18 width 0.25 (16..128 channels), batch 128, 32x32, SGD "
        "(momentum 0.9, weight decay 5e-4), cross-entropy; CPU only.",
        "",
    ]
    return "\n".join(lines)


def _targets(targets: list[tuple[str, str, bool | None]]) -> str:
    lines = ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for name, measured, met in targets:
        verdict = "n/a" if met is None else ("**yes**" if met else "**NO**")
        lines.append(f"| {name} | {measured} | {verdict} |")
    return "\n".join(lines + [""])


def _table(header: list[str], rows: list[list]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(row) + " |" for row in cells])


def _cell(v) -> str:
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    return str(v)


def _compute(r: dict, targets: list) -> str:
    rows = [[c["threads"], c["steps"], c["images"], c["seconds"], c["images_per_s"]]
            for c in r["compute"]]
    return "\n".join([
        "## 1. Compute limit: the train step alone", "",
        "Forward, loss, backward and SGD step on one random batch already in memory "
        "(3 untimed warm-up steps). One thread is what a trial with cpus_per_trial=1 gets.", "",
        _table(["torch threads", "steps", "images", "seconds", "images/s"], rows), ""])


def _limit(r: dict, threads: int) -> float | None:
    return next((c["images_per_s"] for c in r.get("compute", []) if c["threads"] == threads), None)


def _tune_run_rate(r: dict, threads: int) -> float | None:
    runs = r.get("tune_run", {}).get("runs", [])
    return next((t["images_per_s"] for t in runs if t["threads"] == threads), None)


def _tune_run(r: dict, targets: list) -> str:
    t = r["tune_run"]
    rows = []
    for run in t["runs"]:
        limit = _limit(r, run["threads"])
        rows.append([run["threads"], run["train_images"], run["epochs"], run["seconds"],
                     run["images_per_s"], f"{run['images_per_s'] / limit:.2f}" if limit else "-"])
    rate, limit = _tune_run_rate(r, 1), _limit(r, 1)
    if rate and limit:
        targets.append(("tune-run data path / compute limit, 1 thread >= 0.90",
                        f"{rate / limit:.2f} ({rate:.0f} / {limit:.0f} images/s)",
                        rate / limit >= TUNE_RUN_VS_COMPUTE))
    return "\n".join([
        "## 2. tune-run's trainable data path", "",
        f"`core.train.train_epoch` with `BatchAugment` (crop pad 4, flip, normalise) on the uint8 "
        f"arrays of `core.data.load_dataset` ({t['train_images']} CIFAR-10 train images, no "
        f"validation split), timed over whole epochs after one warm-up epoch. Decoding the JPEGs "
        f"once per search ({t['train_images']} train + {t['test_images']} test, no cache) took "
        f"{t['decode_seconds']:.1f} s; later searches read an .npz cache.", "",
        _table(["torch threads", "train images", "timed epochs", "seconds", "images/s",
                "/ compute limit"], rows), ""])


def _baseline(r: dict, targets: list) -> str:
    rows = []
    ours = _tune_run_rate(r, 1)
    for b in r["baseline"]:
        rows.append([b["workers"], b["threads"], b["train_images"], b["epochs"], b["seconds"],
                     b["images_per_s"], b["setup_seconds"],
                     f"{ours / b['images_per_s']:.2f}" if ours else "-"])
    example = next((b for b in r["baseline"] if b["workers"] == 2), None)
    limit = _limit(r, 1)
    if ours and example:
        ratio = ours / example["images_per_s"]
        targets.append(("tune-run / Ray Tune example (DataLoader, 2 workers), 1 thread >= 1.5",
                        f"{ratio:.2f} ({ours:.0f} / {example['images_per_s']:.0f} images/s)",
                        ratio >= TUNE_RUN_VS_BASELINE))
    extra = []
    if example and limit:
        ceiling = limit / example["images_per_s"]
        extra = [f"The example's path reaches {example['images_per_s'] / limit:.2f} of the "
                 "compute limit at 1 thread, so on this machine no data path can be more than "
                 f"{ceiling:.2f}x faster than it: the 1.5x target cannot be met here (a trial's "
                 "one training thread is the bottleneck, and the example's two loader workers run "
                 "on the other core). The real target on a CPU is the compute limit itself; it "
                 "matters on GPUs, where the model outruns PIL decoding by far.", ""]
    return "\n".join([
        "## 3. Baseline: the usual Ray Tune PyTorch CIFAR-10 example's data path", "",
        "A per-trial `torchvision.datasets.ImageFolder` over the same JPEG files (the same subset, "
        "chosen by `core.data`'s own code), `DataLoader(batch_size=128, shuffle=True, "
        "num_workers=N)` with PIL `RandomCrop(32, padding=4)`, `RandomHorizontalFlip`, "
        "`ToTensor`, `Normalize`; same model, optimizer, loss, threads and epochs; timed over "
        "whole epochs (worker start-up and data loading included) after one warm-up epoch. The "
        "`ImageFolder` scan of the train folder is per trial and timed apart (setup).", "",
        _table(["DataLoader workers", "torch threads", "train images", "timed epochs", "seconds",
                "images/s", "setup s", "tune-run (1 thread) / this"], rows), "", *extra])


def _overhead(r: dict, targets: list) -> str:
    o = r["overhead"]
    rows = [[run["label"], run["trials"], run["epochs"], run["train_images"],
             run["mean_trial_seconds"], run["wall_seconds"], run["ideal_seconds"],
             f"{run['overhead']:.1%}", f"{run['overhead_over_training']:.1%}"]
            for run in o["runs"]]
    limits = {"short": 0.30, "long": 0.10}  # the targets for ~2-s and ~30-s trials
    for run in o["runs"]:
        limit = limits[run["label"]]
        targets.append((f"orchestration overhead, {run['label']} trials "
                        f"(~{run['mean_trial_seconds']:.0f} s each) < {limit:.0%}",
                        f"{run['overhead']:.1%}", run["overhead"] < limit))
    return "\n".join([
        "## 4. Orchestration overhead of the whole search", "",
        f"tune-run's real Tuner (`search.tuner.new_tuner`, spec from `build_spec`, FIFO, "
        f"cpus_per_trial=1, max_concurrent={o['concurrency']}, reuse_actors, a checkpoint per "
        f"epoch, no MLflow callback), one local Ray for the section: "
        f"`ray.init(num_cpus=2, include_dashboard=False)` took {o['ray_start_seconds']:.1f} s, "
        f"not counted below. Ideal = sum of the trials' `time_total_s` / {o['concurrency']}; "
        f"overhead = 1 - ideal / wall. The last column uses the epochs' own training time "
        f"(`epoch_seconds`, no evaluation, checkpoints or set-up) as the ideal instead.", "",
        _table(["trials", "count", "epochs each", "train images", "mean trial s", "wall s",
                "ideal s", "overhead", "overhead vs training only"], rows), ""])


def _memory(r: dict, targets: list) -> str:
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
    lines = [
        "## 5. Memory of the whole search against concurrency", "",
        f"Each run is a one-epoch FIFO search with as many trials as its concurrency, all running "
        f"at once (cpus_per_trial=1), on a fresh local Ray with logical num_cpus={m['num_cpus']} "
        f"on {m['physical_cores']} cores (started in {min(starts):.1f}-{max(starts):.1f} s, not "
        "counted), so the fixed cost is the same in each and the object store holds only that "
        "run's data set (validation split 0.5, to halve the epoch). Memory of the driver and of "
        "every process under it (Ray's system processes, idle and trial workers) is sampled with "
        "psutil in a thread of the driver: RSS every 0.2 s; PSS, USS and the object store every "
        "2 s (a page-table walk per process, too costly for 0.2 s).", "",
        "- PSS divides each shared page (the object store's) among the processes that map it, so "
        "its sum is the search's physical memory; RSS counts a shared page in every process. "
        "Idle = Ray started and the data set loaded in the driver, before the search.",
        "- Trial worker USS = a trial worker's private memory: its peak, and its median over the "
        "samples (the typical value while it trains), averaged over the run's trial workers.",
        "- Store pages = the object store's pages a trial worker maps: the data it reads in place, "
        "shared with the other trials.",
        "- Object store = the blocks of its /dev/shm file (a high-water mark).",
        "- Sampler CPU = the sampler thread's own CPU time, taken from the trials' cores.", "",
        _table(["concurrent trials", "data set", "idle PSS MB", "peak PSS sum MB",
                "peak RSS sum MB", "trial workers at PSS peak: PSS MB", "driver PSS MB",
                "Ray system + idle workers PSS MB", "trial worker USS MB: peak / median",
                "trial worker store pages MB", "object store peak MB", "wall s",
                "sampler CPU s"], rows),
        ""]
    one = next((run for run in main if run["concurrency"] == 1), None)
    for run in main:
        if one and run["concurrency"] > 1:
            per_trial = (run["peak_pss_mb"] - one["peak_pss_mb"]) / (run["concurrency"] - 1)
            lines.append(f"- From 1 to {run['concurrency']} concurrent trials the search's "
                         f"memory (peak PSS) grows by {per_trial:,.0f} MB per extra trial; the "
                         f"data set is {run['dataset_mb']:.0f} MB.")
    if main:
        peaks = [run["peak_object_store_mb"] for run in main]
        store_ok = None if None in peaks else all(
            peak <= 1.1 * run["dataset_mb"] + 5 for peak, run in zip(peaks, main))
        targets.append(("object store holds the data set once, whatever the concurrency "
                        "(peak <= 1.1 x data set + 5 MB)",
                        f"{', '.join(_store(p) for p in peaks)} MB at "
                        f"{', '.join(str(run['concurrency']) for run in main)} trials, for "
                        f"{main[0]['dataset_mb']:.0f} MB of data", store_ok))
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
        lines.append(
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
        targets.append(("memory grows by model+batch per extra trial, not by the data set: a "
                        "trial's private memory grows by < 50 % of the data set's growth",
                        f"{share:.0%} ({big - small:+.0f} MB for {data_growth:+.0f} MB of data; "
                        f"run-to-run spread {spread:.0f} MB)", share < MEMORY_COPY_SHARE))
    return "\n".join(lines + [""])


def _store(mb: float | None) -> str:
    return "?" if mb is None else f"{mb:.0f}"


def _asha(r: dict, targets: list) -> str:
    a = r["asha"]
    fifo, asha = a["runs"]["fifo"], a["runs"]["asha"]
    rows = [[name, run["trials"], run["epochs"], run["wall_seconds"],
             f"{run['best_val_acc']:.3f}", " ".join(str(e) for e in run["epochs_per_trial"]),
             ", ".join(f"{k}={_short(v)}" for k, v in run["best_config"].items())]
            for name, run in (("FIFO", fifo), ("ASHA", asha))]
    share = asha["epochs"] / fifo["epochs"]
    gap = (fifo["best_val_acc"] - asha["best_val_acc"]) * 100
    targets.append(("same sampled configurations in both searches", str(a["same_configs"]),
                    a["same_configs"]))
    targets.append(("ASHA epochs <= 40 % of FIFO's",
                    f"{share:.0%} ({asha['epochs']} / {fifo['epochs']})",
                    share <= ASHA_EPOCHS_SHARE))
    targets.append(("ASHA best val_acc within 1 point of FIFO's",
                    f"{gap:+.1f} points (FIFO {fifo['best_val_acc']:.3f}, "
                    f"ASHA {asha['best_val_acc']:.3f})", gap <= ASHA_ACC_POINTS))
    return "\n".join([
        "## 6. ASHA against FIFO on the same configurations", "",
        f"{a['configs']} configurations (optimizer sgd/adamw, lr log-uniform 1e-3..0.3, weight "
        f"decay log-uniform 1e-5..5e-3) drawn by search 'random' with one seed in both searches, "
        f"max_epochs={a['max_epochs']}, 2 trials at a time, {fifo['train_images']} train / "
        f"{fifo['val_images']} validation images; ASHA with grace_period 1, reduction_factor 3. "
        f"Epochs = sum over trials of the epochs trained; best val_acc = the best epoch of the "
        f"best trial (`search.report.leaderboard_rows`, as the end-of-search summary). Ray started in "
        f"{a['ray_start_seconds']:.1f} s, not counted. Same configurations in both: "
        f"{a['same_configs']}. ASHA trained {share:.0%} of FIFO's epochs in "
        f"{asha['wall_seconds'] / fifo['wall_seconds']:.0%} of its wall time.", "",
        _table(["scheduler", "trials", "epochs", "wall s", "best val_acc",
                "epochs per trial", "best configuration"], rows), ""])


def _short(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)
