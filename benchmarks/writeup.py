"""RESULTS.md from the raw numbers of benchmarks/run.py: a table per section, each target checked."""

from __future__ import annotations

from statistics import mean, median

# The targets.
TRIAL_VS_FASTEST_LIMIT = 0.90  # a trial's images/s >= 0.9 of the fastest mode's compute limit
TRIAL_VS_USUAL = 2.5  # and >= 2.5x the usual pipeline's trial in the same run
SEARCH_WALL_SHARE = 0.40  # a whole search's wall time <= 0.4x the usual pipeline's
SEARCH_ACC_POINTS = 1.0  # with best val_acc no worse than 1 point below it
PROMOTION_EPOCHS_SHARE = 0.55  # promotion ASHA trains <= 55 % of FIFO's epochs
PROMOTION_ACC_POINTS = 1.0  # with best val_acc within 1 point of FIFO's
PRECISION_ACC_POINTS = 1.0  # bf16 and fp32 best val_acc agree within 1 point
EPOCH_OVERHEAD = 0.05  # evaluation and checkpoint <= 5 % of an epoch
SHORT_TRIAL_OVERHEAD = 0.20  # a search of ~3-s trials loses <= 20 % to orchestration
LONG_TRIAL_OVERHEAD = 0.10
MEMORY_COPY_SHARE = 0.5  # a trial's private memory grows by < half the data set (a copy: 100 %)


def write_markdown(r: dict) -> str:
    targets: list[tuple[str, str, bool | None]] = []
    body = []
    for name, section in (("compute", _compute), ("trial", _trial), ("baseline", _baseline),
                          ("searches", _searches), ("precision", _precision),
                          ("overhead", _overhead), ("memory", _memory)):
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


def _fastest(r: dict) -> dict | None:
    return max(r.get("compute", []), key=lambda c: c["images_per_s"], default=None)


def _compute(r: dict, targets: list) -> str:
    rows = [[c["precision"], c["layout"], c["threads"], c["steps"], c["images_per_s"]]
            for c in r["compute"]]
    fastest = _fastest(r)
    return "\n".join([
        "## 1. The compute limit in each mode", "",
        "The train step alone (forward, loss, backward, SGD step) on one random batch kept in "
        "memory, one thread, after warm-up steps; bf16 is `torch.autocast` (weights stay fp32), "
        f"channels-last puts the model and the batch in that layout. Fastest: "
        f"{fastest['precision']} {fastest['layout']}.", "",
        _table(["precision", "layout", "threads", "timed steps", "images/s"], rows), ""])


def _trial(r: dict, targets: list) -> str:
    t = r["trial"]
    fastest = _fastest(r)
    lines = ["## 2. tune-run's trial", "",
             f"`core.train.train_epoch` as the trainable runs it on a CPU: the shared uint8 arrays "
             f"wrapped without a copy, batched crop/flip/normalise, the precision and layout that "
             f"`precision: auto` picks here (**{t['precision']} {t['layout']}**), one thread, "
             f"{t['train_images']:,} CIFAR-10 images (decoded once in {t['decode_seconds']:.1f} s), "
             f"{t['epochs']} timed epochs after a warm-up epoch: **{t['images_per_s']:.0f} "
             f"images/s**.", ""]
    if fastest and t.get("limit_before") and t.get("limit_after"):
        around = (t["limit_before"]["images_per_s"] + t["limit_after"]["images_per_s"]) / 2
        share = t["images_per_s"] / around
        lines += [f"The fastest mode's limit measured again right before and after the trial: "
                  f"{t['limit_before']['images_per_s']:.0f} and "
                  f"{t['limit_after']['images_per_s']:.0f} images/s (section 1's: "
                  f"{fastest['images_per_s']:.0f}); the trial is {share:.2f} of their mean, "
                  f"{t['images_per_s'] / fastest['images_per_s']:.2f} of section 1's.", ""]
        targets.append(("trial >= 0.9 of the fastest mode's compute limit (measured right "
                        "before and after it)",
                        f"{share:.2f} ({t['images_per_s']:.0f} / {around:.0f})",
                        share >= TRIAL_VS_FASTEST_LIMIT))
    elif fastest:
        share = t["images_per_s"] / fastest["images_per_s"]
        targets.append(("trial >= 0.9 of the fastest mode's compute limit",
                        f"{share:.2f} ({t['images_per_s']:.0f} / {fastest['images_per_s']:.0f})",
                        share >= TRIAL_VS_FASTEST_LIMIT))
    return "\n".join(lines)


def _baseline(r: dict, targets: list) -> str:
    b = r["baseline"]
    lines = ["## 3. The usual Ray Tune pipeline's trial", "",
             f"The loop of Ray's PyTorch CIFAR-10 example on the same files, model, batch and "
             f"thread: a per-trial `ImageFolder` and a `DataLoader` with {b['workers']} worker "
             f"processes decoding and transforming every image with PIL in every epoch, fp32, "
             f"NCHW: **{b['images_per_s']:.0f} images/s** ({b['epochs']} timed epochs after a "
             f"warm-up epoch).", ""]
    if "trial" in r:
        ratio = r["trial"]["images_per_s"] / b["images_per_s"]
        targets.append(("trial >= 2.5x the usual pipeline's trial",
                        f"{ratio:.2f}x ({r['trial']['images_per_s']:.0f} / "
                        f"{b['images_per_s']:.0f})", ratio >= TRIAL_VS_USUAL))
    return "\n".join(lines)


def successive_halving_epochs(trials: int, grace: int, eta: float, max_epochs: int) -> int:
    """Epochs synchronous successive halving trains: n trials to the first rung, n/eta onwards to
    the next, ..., the survivors to max_epochs."""
    from search.scheduling.promotion import rung_milestones

    epochs, done, alive = 0, 0, trials
    for milestone in rung_milestones(grace, eta, max_epochs) + [max_epochs]:
        epochs += alive * (milestone - done)
        done, alive = milestone, max(1, int(alive / eta))
    return epochs


def _searches(r: dict, targets: list) -> str:
    s = r["searches"]
    cfg = s["settings"]
    ours, usual, fifo = s["tune_run"], s["usual"], s["tune_run_fifo"]
    usual_wall = usual["process_wall_seconds"]
    sh = successive_halving_epochs(cfg["num_samples"], cfg["grace_period"],
                                   cfg["reduction_factor"], cfg["max_epochs"])
    full = cfg["num_samples"] * cfg["max_epochs"]
    rows = [
        ["tune-run, promotion ASHA (`scheduler: asha`)", ours["wall_seconds"], ours["epochs"],
         f"{ours['best_val_acc']:.4f}", _rates(ours)],
        ["the usual Ray Tune pipeline, Ray's ASHA", usual_wall, usual["epochs"],
         f"{usual['best_val_acc']:.4f}", _rates(usual)],
        ["tune-run, FIFO (no early stopping)", fifo["wall_seconds"], fifo["epochs"],
         f"{fifo['best_val_acc']:.4f}", _rates(fifo)],
        ["successive halving (computed, not run)", "", sh, "", ""],
    ]
    wall_share = ours["wall_seconds"] / usual_wall
    acc_gap = (usual["best_val_acc"] - ours["best_val_acc"]) * 100
    epochs_share = ours["epochs"] / fifo["epochs"]
    fifo_gap = (fifo["best_val_acc"] - ours["best_val_acc"]) * 100
    targets += [
        ("same sampled configurations in the three searches", str(s["same_configs"]),
         s["same_configs"]),
        ("search wall time <= 0.4x the usual pipeline's",
         f"{wall_share:.2f}x ({ours['wall_seconds']:.0f} s / {usual_wall:.0f} s)",
         wall_share <= SEARCH_WALL_SHARE),
        ("search best val_acc no worse than 1 point below the usual pipeline's",
         f"{-acc_gap:+.1f} points ({ours['best_val_acc']:.4f} vs {usual['best_val_acc']:.4f})",
         acc_gap <= SEARCH_ACC_POINTS),
        ("promotion ASHA epochs <= 55 % of FIFO's",
         f"{epochs_share:.0%} ({ours['epochs']} / {fifo['epochs']})",
         epochs_share <= PROMOTION_EPOCHS_SHARE),
        ("promotion ASHA best val_acc within 1 point of FIFO's",
         f"{-fifo_gap:+.1f} points ({ours['best_val_acc']:.4f} vs {fifo['best_val_acc']:.4f})",
         abs(fifo_gap) <= PROMOTION_ACC_POINTS),
        ("evaluation and checkpoint <= 5 % of an epoch (the promotion search)",
         f"{ours['epoch_overhead']:.1%}", ours["epoch_overhead"] <= EPOCH_OVERHEAD),
    ]
    replay = _replay(fifo, cfg)
    if replay:
        targets.append((
            f"promotion ASHA epochs <= 55 % of FIFO's, mean of {replay['orders']:,} arrival orders "
            "replayed on FIFO's curves (computed, not run)",
            f"{replay['mean_share']:.0%} ({replay['mean_epochs']:.1f} / {replay['fifo_epochs']}); "
            f"{replay['orders_within_55_percent']:.0%} of orders within",
            replay["mean_share"] <= PROMOTION_EPOCHS_SHARE))
    per_trial = [[f"{t['config']['lr']:.4f}", f"{t['config']['weight_decay']:.2e}",
                  _epochs_of(ours, t), _epochs_of(usual, t), _epochs_of(fifo, t)]
                 for t in sorted(fifo["trials"], key=lambda t: t["config"]["lr"])]
    return "\n".join([
        "## 4. Whole searches side by side", "",
        f"{cfg['num_samples']} trials of SGD over lr (log-uniform 0.01..0.4) and weight decay "
        f"(log-uniform 1e-5..1e-2), ResNet-18 width 0.25, batch 128, at most {cfg['max_epochs']} "
        f"epochs, {cfg['subset'] - round(cfg['subset'] * cfg['val_fraction']):,} CIFAR-10 "
        f"training and {round(cfg['subset'] * cfg['val_fraction']):,} validation images, "
        f"{cfg['max_concurrent']} trials at a time with 1 CPU and 1 thread each, ASHA grace "
        f"period {cfg['grace_period']} and reduction factor {cfg['reduction_factor']:g}. The "
        f"configurations are drawn by Ray's BasicVariantGenerator with seed {cfg['seed']} in all "
        f"three. Wall time is the whole process, as a user waits for it: Ray's start, decoding the "
        f"images (tune-run: cold image cache), training, and for tune-run the MLflow record "
        f"(SQLite) and the end-of-search summary. Epochs = sum over trials; FIFO would train "
        f"{full}. tune-run's trials trained in "
        f"{', '.join(sorted({str(t['precision']) + ' ' + str(t['layout']) for t in ours['trials']}))}.",
        "",
        _table(["search", "wall s", "epochs", "best val_acc", "images/s per trial (median)"], rows),
        "", "Epochs each configuration trained:", "",
        _table(["lr", "weight decay", "tune-run promotion ASHA", "usual pipeline (Ray's ASHA)",
                "tune-run FIFO"], per_trial), "", _replay_text(replay)])


def _replay(fifo: dict, cfg: dict) -> dict | None:
    """Promotion ASHA's decisions replayed on the FIFO search's curves (benchmarks/asha_replay.py);
    None for a run without per-epoch values (results.json from before they were kept)."""
    from benchmarks.asha_replay import replay_many

    if not all(len(t.get("val_acc_by_epoch", ())) == cfg["max_epochs"] for t in fifo["trials"]):
        return None
    return replay_many(fifo["trials"], cfg["max_concurrent"], cfg["grace_period"],
                       cfg["reduction_factor"], cfg["max_epochs"])


def _replay_text(replay: dict | None) -> str:
    if replay is None:
        return ""
    counts = ", ".join(f"{epochs}: {n}" for epochs, n in replay["epochs_counts"].items())
    return "\n".join([
        "One search gives one order of events, and with 8 trials the epochs promotion ASHA trains "
        "swing with it (an early promotion is judged among the few trials that reached the rung so "
        f"far). `benchmarks/asha_replay.py` replays the scheduler's rules (its own `Rungs`) on the "
        f"FIFO search's measured val_acc and seconds of every epoch, for {replay['orders']:,} "
        "random orders in which the 8 configurations arrive (computed, not run; worker start-up "
        "and Ray's latency left out):", "",
        f"- epochs: mean {replay['mean_epochs']:.2f} ({replay['mean_share']:.1%} of FIFO's "
        f"{replay['fifo_epochs']}), median {replay['median_epochs']:g}, from "
        f"{replay['min_epochs']} to {replay['max_epochs']}; within 55 %: "
        f"{replay['orders_within_55_percent']:.0%} of orders. Orders per epoch count: {counts}.",
        f"- best val_acc below FIFO's: mean {replay['mean_points_below_fifo']:.2f} points, worst "
        f"{replay['worst_points_below_fifo']:.2f}; within 1 point: "
        f"{replay['orders_within_1_point']:.0%} of orders.", ""])


def _rates(run: dict) -> str:
    rates = [v for t in run["trials"] for v in t["images_per_s"]]
    return f"{median(rates):.0f}" if rates else ""


def _epochs_of(run: dict, trial: dict) -> int | str:
    for t in run["trials"]:
        if all(abs(t["config"][k] - v) < 1e-12 for k, v in trial["config"].items()):
            return t["epochs"]
    return "?"


def _precision(r: dict, targets: list) -> str:
    p = r["precision"]
    cfg = p["settings"]
    fp32, bf16 = p["fp32"], p["bf16"]
    gap = (bf16["best_val_acc"] - fp32["best_val_acc"]) * 100
    targets += [("same configurations in the fp32 and bf16 searches", str(p["same_configs"]),
                 p["same_configs"]),
                ("bf16 best val_acc within 1 point of fp32's",
                 f"{gap:+.1f} points (bf16 {bf16['best_val_acc']:.4f}, fp32 "
                 f"{fp32['best_val_acc']:.4f})", abs(gap) <= PRECISION_ACC_POINTS)]
    rows = [[name, run["wall_seconds"], run["epochs"], f"{run['best_val_acc']:.4f}", _rates(run),
             " ".join(f"{t['best_val_acc']:.3f}" for t in sorted(
                 run["trials"], key=lambda t: t["config"]["lr"]))]
            for name, run in (("fp32", fp32), ("bf16", bf16))]
    return "\n".join([
        "## 5. Same accuracy in bf16 and fp32", "",
        f"The same {cfg['num_samples']} configurations (the section 4 space, seed {cfg['seed']}), "
        f"FIFO, {cfg['max_epochs']} epochs each, "
        f"{cfg['subset'] - round(cfg['subset'] * cfg['val_fraction']):,} training and "
        f"{round(cfg['subset'] * cfg['val_fraction']):,} validation images, searched with "
        f"`--precision fp32` and with `--precision bf16` (both channels-last).", "",
        _table(["precision", "wall s", "epochs", "best val_acc", "images/s per trial (median)",
                "best val_acc of each trial (by lr)"], rows), ""])


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
        "## 7. Memory of the whole search against concurrency", "",
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


def _overhead(r: dict, targets: list) -> str:
    o = r["overhead"]
    rows = [[run["label"], run["trials"], run["epochs"], run["train_images"],
             run["mean_trial_seconds"], run["wall_seconds"], run["ideal_seconds"],
             f"{run['overhead']:.1%}", f"{run['overhead_over_training']:.1%}",
             *[f"{run[k]:.1f}" if k in run else "" for k in
               ("to_first_trial_seconds", "between_seconds", "after_last_trial_seconds")]]
            for run in o["runs"]]
    limits = {"short": SHORT_TRIAL_OVERHEAD, "long": LONG_TRIAL_OVERHEAD}
    for run in o["runs"]:
        limit = limits[run["label"]]
        targets.append((f"orchestration overhead, {run['trials']} {run['label']} trials "
                        f"(~{run['mean_trial_seconds']:.0f} s each) < {limit:.0%}",
                        f"{run['overhead']:.1%}", run["overhead"] < limit))
    return "\n".join([
        "## 6. Orchestration overhead of the whole search", "",
        f"tune-run's real Tuner (`search.scheduling.tuner.new_tuner`, spec from `build_spec`, FIFO, "
        f"cpus_per_trial=1, max_concurrent={o['concurrency']}, reuse_actors, a checkpoint per "
        f"epoch, no MLflow callback), one local Ray for the section: "
        f"`ray.init(num_cpus=2, include_dashboard=False)` took {o['ray_start_seconds']:.1f} s, "
        f"not counted below. Ideal = sum of the trials' `time_total_s` / {o['concurrency']}; "
        f"overhead = 1 - ideal / wall. The next column uses the epochs' own training time "
        f"(`epoch_seconds`, no evaluation, checkpoints or set-up) as the ideal instead. The last "
        f"three split wall - ideal by the driver's clock: from `fit()` to the first trial's start "
        f"(Ray starting the trials' worker processes: Python, torch and Ray Tune imports), "
        f"what is left between trials, and from the last trial's end to `fit()`'s return.", "",
        _table(["trials", "count", "epochs each", "train images", "mean trial s", "wall s",
                "ideal s", "overhead", "overhead vs training only", "to first trial s",
                "between s", "after last s"], rows), ""])


def _short(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)
