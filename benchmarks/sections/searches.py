"""Sections `searches` and `precision`: whole searches through tune-run's command line, timed from
outside, as a user runs them.

Each search is a space file written here and run with `tune-run SPACE` in a subprocess: Ray's
start, decoding the images (a fresh image cache: cold), training, MLflow logging into a SQLite store
and the end-of-search summary are all in its wall time. What it trained is read back from Ray's
experiment folder afterwards.

- searches: tune-run with promotion ASHA, the usual Ray Tune pipeline (benchmarks/usual_pipeline.py,
  Ray's ASHA) and tune-run with FIFO, on the same sampled configurations;
- precision: the same configurations searched with `--precision fp32` and `--precision bf16`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

from benchmarks.harness import REPO, Context, Report, Section, Table, Target, run_tune_run, write_space

RESULTS = "RESULTS.md"

# The search: 10,000 CIFAR-10 training images and 2,000 for validation, ResNet-18 at width
# 0.25, SGD over learning rate and weight decay, at most 4 epochs, ASHA with grace period 1 and
# reduction factor 2, two trials at a time, one CPU each.
SEARCH = {"dataset": "cifar10", "subset": 12_000, "val_fraction": 2_000 / 12_000, "num_samples": 8,
          "max_epochs": 4, "grace_period": 1, "reduction_factor": 2, "max_concurrent": 2,
          "cpus_per_trial": 1, "search": "random", "seed": 11, "max_failures": 0}
SEARCH_QUICK = SEARCH | {"subset": 600, "num_samples": 4, "max_epochs": 2}
PRECISION = SEARCH | {"subset": 6_000, "num_samples": 4, "scheduler": "fifo", "seed": 12}
PRECISION_QUICK = SEARCH | {"subset": 600, "num_samples": 2, "max_epochs": 1, "scheduler": "fifo"}

# The benchmark search's space (the same as benchmarks/usual_pipeline.py's search_space()).
SPACE = """
    "lr": tune.loguniform(0.01, 0.4),
    "weight_decay": tune.loguniform(1e-5, 1e-2),
    "width": 0.25,
    "batch_size": 128,
"""

SAME_CONFIGS = Target("same sampled configurations in the three searches", "==", True)
WALL_SHARE = Target("search wall time <= 0.4x the usual pipeline's", "<=", 0.40)
ACC_POINTS = Target("search best val_acc no worse than 1 point below the usual pipeline's", "<=", 1.0)
PROMOTION_EPOCHS = Target("promotion ASHA epochs <= 55 % of FIFO's", "<=", 0.55)
PROMOTION_ACC = Target("promotion ASHA best val_acc within 1 point of FIFO's", "within", 1.0)
EPOCH_OVERHEAD = Target("evaluation and checkpoint <= 5 % of an epoch (the promotion search)",
                        "<=", 0.05)
REPLAYED_EPOCHS = Target("promotion ASHA epochs <= 55 % of FIFO's, mean of the arrival orders "
                         "replayed on FIFO's curves (computed, not run)", "<=", 0.55)
PRECISION_SAME = Target("same configurations in the fp32 and bf16 searches", "==", True)
PRECISION_ACC = Target("bf16 best val_acc within 1 point of fp32's", "within", 1.0)


def run_cli_search(workdir: Path, name: str, settings: dict) -> dict:
    """Runs one search with `tune-run`; returns its wall time and what each trial trained."""
    folder = workdir / name
    folder.mkdir(parents=True)
    space = write_space(folder / f"{name}.py", settings | {"name": name}, SPACE)
    wall = run_tune_run(folder, str(space))
    return {"wall_seconds": wall, **experiment_summary(folder / "results" / name)}


def experiment_summary(path: Path) -> dict:
    """Each trial's configuration, epochs, best val_acc and per-epoch timings, from Ray's files."""
    from ray.tune import ExperimentAnalysis

    from search.place.experiment_folder import result_rows

    trials = []
    for trial in ExperimentAnalysis(str(path)).trials:
        rows = result_rows(trial.path)
        # time_this_iter_s runs from one report to the next: training, evaluation, checkpoint and
        # report; epoch_seconds is the training alone. The first epoch also holds the set-up.
        later = rows[1:]
        trials.append({
            "config": {k: trial.config[k] for k in ("lr", "weight_decay") if k in trial.config},
            "epochs": len(rows), "best_val_acc": max(r["val_acc"] for r in rows),
            "val_acc_by_epoch": [r["val_acc"] for r in rows],
            "epoch_seconds_by_epoch": [r["time_this_iter_s"] for r in rows],
            "images_per_s": [r["images_per_s"] for r in rows],
            "precision": rows[0].get("precision"), "layout": rows[0].get("layout"),
            "iteration_seconds": sum(r["time_this_iter_s"] for r in later),
            "training_seconds": sum(r["epoch_seconds"] for r in later),
            "status": trial.status,
        })
    iteration = sum(t["iteration_seconds"] for t in trials)
    training = sum(t["training_seconds"] for t in trials)
    return {
        "trials": trials, "epochs": sum(t["epochs"] for t in trials),
        "best_val_acc": max(t["best_val_acc"] for t in trials),
        # Evaluation, checkpoint and report, as a share of an epoch (epochs after the first).
        "epoch_overhead": 1 - training / iteration if iteration else None,
    }


def same_configs(*runs: dict) -> bool:
    """Whether the runs trained the same set of sampled configurations."""
    def key(run):
        return sorted(tuple(round(v, 12) for v in t["config"].values()) for t in run["trials"])
    return all(key(r) == key(runs[0]) for r in runs[1:])


def usual_pipeline_search(workdir: Path, data_dir: str, settings: dict) -> dict:
    """The usual Ray Tune pipeline's search (benchmarks/usual_pipeline.py) on the same files."""
    out = workdir / "usual.json"
    args = [sys.executable, "-m", "benchmarks.usual_pipeline", "--data-dir", data_dir,
            "--subset", str(settings["subset"]), "--val-fraction", str(settings["val_fraction"]),
            "--num-samples", str(settings["num_samples"]),
            "--max-epochs", str(settings["max_epochs"]),
            "--grace-period", str(settings["grace_period"]),
            "--reduction-factor", str(settings["reduction_factor"]),
            "--concurrency", str(settings["max_concurrent"]), "--seed", str(settings["seed"]),
            "--storage", str(workdir / "usual-results"), "--out", str(out)]
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"usual pipeline exited {proc.returncode}: {proc.stderr[-2000:]}")
    return json.loads(out.read_text()) | {"process_wall_seconds": wall}


def run_searches(ctx: Context) -> dict:
    settings, data = ctx.sizes, {"data_dir": str(ctx.data_dir)}
    runs = {
        "tune_run": run_cli_search(ctx.work, "asha", settings | data),
        "usual": usual_pipeline_search(ctx.work, str(ctx.data_dir), settings),
        "tune_run_fifo": run_cli_search(ctx.work, "fifo", settings | data | {"scheduler": "fifo"}),
    }
    runs["same_configs"] = same_configs(runs["tune_run"], runs["usual"], runs["tune_run_fifo"])
    return runs | {"settings": settings}


def run_precision(ctx: Context) -> dict:
    data = {"data_dir": str(ctx.data_dir)}
    runs = {p: run_cli_search(ctx.work, f"precision-{p}", ctx.sizes | data | {"precision": p})
            for p in ("fp32", "bf16")}
    runs["same_configs"] = same_configs(runs["fp32"], runs["bf16"])
    return runs | {"settings": ctx.sizes}


# ---------------------------------------------------------------------------------------------------
# Reports.


def successive_halving_epochs(trials: int, grace: int, eta: float, max_epochs: int) -> int:
    """Epochs synchronous successive halving trains: n trials to the first rung, n/eta onwards to
    the next, ..., the survivors to max_epochs."""
    from search.scheduling.promotion import rung_milestones

    epochs, done, alive = 0, 0, trials
    for milestone in rung_milestones(grace, eta, max_epochs) + [max_epochs]:
        epochs += alive * (milestone - done)
        done, alive = milestone, max(1, int(alive / eta))
    return epochs


def report_searches(r: dict) -> Report:
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
    overhead = ours["epoch_overhead"]
    verdicts = [
        SAME_CONFIGS.check(s["same_configs"], str(s["same_configs"])),
        WALL_SHARE.check(wall_share, f"{wall_share:.2f}x ({ours['wall_seconds']:.0f} s / "
                                     f"{usual_wall:.0f} s)"),
        ACC_POINTS.check(acc_gap, f"{-acc_gap:+.1f} points ({ours['best_val_acc']:.4f} vs "
                                  f"{usual['best_val_acc']:.4f})"),
        PROMOTION_EPOCHS.check(epochs_share, f"{epochs_share:.0%} ({ours['epochs']} / "
                                             f"{fifo['epochs']})"),
        PROMOTION_ACC.check(fifo_gap, f"{-fifo_gap:+.1f} points ({ours['best_val_acc']:.4f} vs "
                                      f"{fifo['best_val_acc']:.4f})"),
        EPOCH_OVERHEAD.check(overhead, "-" if overhead is None else f"{overhead:.1%}"),
    ]
    replay = _replay(fifo, cfg)
    if replay:
        verdicts.append(REPLAYED_EPOCHS.check(
            replay["mean_share"],
            f"{replay['mean_share']:.0%} ({replay['mean_epochs']:.1f} / {replay['fifo_epochs']}); "
            f"{replay['orders_within_55_percent']:.0%} of orders within",
            f"promotion ASHA epochs <= 55 % of FIFO's, mean of {replay['orders']:,} arrival orders "
            "replayed on FIFO's curves (computed, not run)"))
    per_trial = [[f"{t['config']['lr']:.4f}", f"{t['config']['weight_decay']:.2e}",
                  _epochs_of(ours, t), _epochs_of(usual, t), _epochs_of(fifo, t)]
                 for t in sorted(fifo["trials"], key=lambda t: t["config"]["lr"])]
    modes = ", ".join(sorted({f"{t['precision']} {t['layout']}" for t in ours["trials"]}))
    blocks = [
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
        f"{full}. tune-run's trials trained in {modes}.",
        Table(["search", "wall s", "epochs", "best val_acc", "images/s per trial (median)"], rows),
        "Epochs each configuration trained:",
        Table(["lr", "weight decay", "tune-run promotion ASHA", "usual pipeline (Ray's ASHA)",
               "tune-run FIFO"], per_trial)]
    if replay:
        blocks.append(_replay_text(replay))
    return Report("4. Whole searches side by side", blocks, verdicts)


def _replay(fifo: dict, cfg: dict) -> dict | None:
    """Promotion ASHA's decisions replayed on the FIFO search's curves
    (benchmarks/virtual/orders.py); None for a run without per-epoch values (results.json from
    before they were kept)."""
    from benchmarks.virtual.orders import replay_many

    if not all(len(t.get("val_acc_by_epoch", ())) == cfg["max_epochs"] for t in fifo["trials"]):
        return None
    return replay_many(fifo["trials"], cfg["max_concurrent"], cfg["grace_period"],
                       cfg["reduction_factor"], cfg["max_epochs"])


def _replay_text(replay: dict) -> str:
    counts = ", ".join(f"{epochs}: {n}" for epochs, n in replay["epochs_counts"].items())
    return "\n".join([
        "One search gives one order of events, and with 8 trials the epochs promotion ASHA trains "
        "swing with it (an early promotion is judged among the few trials that reached the rung so "
        "far). `benchmarks/virtual/orders.py` replays the scheduler's rules (its own "
        "`PromotionRules`) on the FIFO search's measured val_acc and seconds of every epoch, for "
        f"{replay['orders']:,} random orders in which the 8 configurations arrive (computed, not "
        "run; worker start-up and Ray's latency left out):", "",
        f"- epochs: mean {replay['mean_epochs']:.2f} ({replay['mean_share']:.1%} of FIFO's "
        f"{replay['fifo_epochs']}), median {replay['median_epochs']:g}, from "
        f"{replay['min_epochs']} to {replay['max_epochs']}; within 55 %: "
        f"{replay['orders_within_55_percent']:.0%} of orders. Orders per epoch count: {counts}.",
        f"- best val_acc below FIFO's: mean {replay['mean_points_below_fifo']:.2f} points, worst "
        f"{replay['worst_points_below_fifo']:.2f}; within 1 point: "
        f"{replay['orders_within_1_point']:.0%} of orders."])


def _rates(run: dict) -> str:
    rates = [v for t in run["trials"] for v in t["images_per_s"]]
    return f"{median(rates):.0f}" if rates else ""


def _epochs_of(run: dict, trial: dict) -> int | str:
    for t in run["trials"]:
        if all(abs(t["config"][k] - v) < 1e-12 for k, v in trial["config"].items()):
            return t["epochs"]
    return "?"


def report_precision(r: dict) -> Report:
    p = r["precision"]
    cfg = p["settings"]
    fp32, bf16 = p["fp32"], p["bf16"]
    gap = (bf16["best_val_acc"] - fp32["best_val_acc"]) * 100
    verdicts = [PRECISION_SAME.check(p["same_configs"], str(p["same_configs"])),
                PRECISION_ACC.check(gap, f"{gap:+.1f} points (bf16 {bf16['best_val_acc']:.4f}, fp32 "
                                         f"{fp32['best_val_acc']:.4f})")]
    rows = [[name, run["wall_seconds"], run["epochs"], f"{run['best_val_acc']:.4f}", _rates(run),
             " ".join(f"{t['best_val_acc']:.3f}" for t in sorted(
                 run["trials"], key=lambda t: t["config"]["lr"]))]
            for name, run in (("fp32", fp32), ("bf16", bf16))]
    return Report("5. Same accuracy in bf16 and fp32", [
        f"The same {cfg['num_samples']} configurations (the section 4 space, seed {cfg['seed']}), "
        f"FIFO, {cfg['max_epochs']} epochs each, "
        f"{cfg['subset'] - round(cfg['subset'] * cfg['val_fraction']):,} training and "
        f"{round(cfg['subset'] * cfg['val_fraction']):,} validation images, searched with "
        f"`--precision fp32` and with `--precision bf16` (both channels-last).",
        Table(["precision", "wall s", "epochs", "best val_acc", "images/s per trial (median)",
               "best val_acc of each trial (by lr)"], rows)], verdicts)


SECTIONS = (
    Section("searches", "whole 8-trial searches: tune-run (promotion ASHA), the usual pipeline, "
            "tune-run FIFO", RESULTS, run_searches, report_searches,
            (SAME_CONFIGS, WALL_SHARE, ACC_POINTS, PROMOTION_EPOCHS, PROMOTION_ACC, EPOCH_OVERHEAD,
             REPLAYED_EPOCHS), SEARCH, SEARCH_QUICK, ("data_dir",)),
    Section("precision", "the same configurations searched in fp32 and in bf16: best val_acc",
            RESULTS, run_precision, report_precision, (PRECISION_SAME, PRECISION_ACC), PRECISION,
            PRECISION_QUICK, ("data_dir",)),
)
