"""Sections `pruning` and `pareto`: what channel pruning buys, measured, and the accuracy/latency front
a small multi-objective search finds. Both write RESULTS-pruning.md.

- pruning: one search (`tune-run`, FIFO, a grid over prune_ratio 0 and 0.5 with
  `prune_method: channel`, everything else fixed), so the dense and the pruned ResNet-18 come out of
  the product's own trainable with the same data, seed and epochs. Each trial's final checkpoint is
  then timed here, on its own, as it ships (core/cost.py: pruning permanent, BatchNorm folded, fp32,
  one torch thread, median of repeated passes after a warm-up) at batch 1 and batch 128, and scored
  once on the test split.
- pareto: `spaces/resnet18_pareto.py --quick` (accuracy against latency_ms, promotion ASHA ranking
  rungs by Pareto rank): how many trials are on the front, how many were stopped early (none may be
  on it), and the front's hypervolume against a reference of val_acc 0 and the slowest latency seen.

`--merge` keeps the part not run from the results file's JSON (part 1 takes half an hour).
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.harness import REPO, Context, Report, Section, Table, Target, run_tune_run, write_space

RESULTS = "RESULTS-pruning.md"
LATENCY_BATCHES = (1, 128)
PARETO_SPACE = REPO / "spaces" / "resnet18_pareto.py"

PRUNED_LATENCY = Target("channel-pruned model's CPU latency at batch 128 at most 0.6x the dense "
                        "model's", "<=", 0.6)
FRONT_SIZE = Target("at least 3 trials on the front of the multi-objective search", ">=", 3)
STOPPED_ON_FRONT = Target("no trial stopped early on the front", "==", 0)


@dataclass(frozen=True)
class PruningSizes:
    epochs: int
    subset: int  # CIFAR-10 training images (10 % held out for validation)
    width: float
    ratio: float  # prune_ratio of the pruned trial


PRUNING_FULL = PruningSizes(epochs=6, subset=5_000, width=1.0, ratio=0.5)
PRUNING_QUICK = PruningSizes(epochs=2, subset=300, width=0.125, ratio=0.5)
# Over the space file's own `quick` settings (its --quick is a real search of minutes).
PARETO_FULL: dict = {}
PARETO_QUICK = {"num_samples": 4, "max_epochs": 2, "grace_period": 1, "subset": 300}


def run_pruning(ctx: Context) -> dict:
    from search.place.experiment_folder import result_rows, trials

    sizes: PruningSizes = ctx.sizes
    data_dir = str(ctx.data_dir)
    settings = {"dataset": "cifar10", "data_dir": data_dir, "subset": sizes.subset,
                "max_epochs": sizes.epochs, "num_samples": 1, "scheduler": "fifo", "search": "random",
                "max_concurrent": 1, "cpus_per_trial": 2, "name": "dense-vs-pruned", "seed": 0}
    space = write_space(ctx.work / "pruning.py", settings, f"""
        "prune_ratio": tune.grid_search([0.0, {sizes.ratio}]),
        "prune_method": "channel",
        "width": {sizes.width},
        "optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True,
        "weight_decay": 5e-4, "schedule": "onecycle", "label_smoothing": 0.1,
        "batch_size": 128,
    """)
    wall = run_tune_run(ctx.work, str(space))
    models = {}
    for trial in trials(ctx.work / "results" / "dense-vs-pruned"):
        rows = result_rows(trial.path)
        models[float(trial.config["prune_ratio"])] = {
            "checkpoint": trial.checkpoint.path, "epochs": len(rows),
            "val_acc": rows[-1]["val_acc"], "train_images_per_s": rows[-1]["images_per_s"],
            "reported_latency_ms": rows[-1]["latency_ms"]}
    return {"wall_seconds": wall, "width": sizes.width, "epochs": sizes.epochs,
            "subset": sizes.subset, "ratio": sizes.ratio,
            "models": {str(r): m | measure(m["checkpoint"], data_dir, sizes.subset)
                       for r, m in models.items()}}


def measure(checkpoint: str, data_dir: str, subset: int) -> dict:
    """The checkpoint's model as it ships: parameters, MACs, CPU latency per batch, test accuracy."""
    import torch

    from core.cost import latency_ms, macs, parameter_counts
    from core.data import load_dataset
    from core.inference import inference_copy
    from search.report.results import test_split_score

    data = load_dataset("cifar10", data_dir, 0.1, subset, 0)
    model, _, test_acc = test_split_score(checkpoint, data)
    served = inference_copy(model).float().to(memory_format=torch.contiguous_format)
    nonzero, total = parameter_counts(model)
    figures = {"params": nonzero, "params_total": total, "macs": macs(served, 3, 32),
               "test_acc": test_acc, "test_images": len(data.test_y)}
    for batch in LATENCY_BATCHES:
        figures[f"latency_ms_batch{batch}"] = latency_ms(served, batch, 3, 32, threads=1,
                                                         budget_s=3.0 if batch > 1 else 1.0,
                                                         max_runs=30 if batch > 1 else 100)
    return figures


def run_pareto(ctx: Context) -> dict:
    from search.door.spec import load_spec
    from search.place.experiment_folder import trial_histories
    from search.scheduling.pareto import ON_FRONT, hypervolume_2d, pareto_rows, spec_objectives

    space = ctx.work / PARETO_SPACE.name
    overrides = f"\nquick = quick | {ctx.sizes!r}\n" if ctx.sizes else ""
    space.write_text(PARETO_SPACE.read_text() + overrides)
    wall = run_tune_run(ctx.work, str(space), "--quick", "--data-dir", str(ctx.data_dir),
                        "--name", "pareto")
    spec = load_spec(space, {"name": "pareto", "storage": str(ctx.work / "results")}, quick=True)
    rows = pareto_rows(spec, trial_histories(ctx.work / "results" / "pareto"))
    objectives = spec_objectives(spec)
    front = [r for r in rows if r["pareto"] == ON_FRONT]
    slowest = max(r["latency_ms"] for r in rows if r["latency_ms"] is not None)
    reference = {"val_acc": 0.0, "latency_ms": slowest}
    return {"wall_seconds": wall, "trials": len(rows), "front": front,
            "promote_by": "Pareto rank" if spec.promote_by == "pareto" else spec.metric,
            "completed": sum(r["full"] for r in rows),
            "stopped_early": sum(not r["full"] for r in rows),
            "stopped_early_on_front": sum(not r["full"] for r in front),
            "hypervolume": hypervolume_2d(front, objectives, reference), "reference": reference,
            "rows": rows}


def report_pruning(r: dict) -> Report:
    a = r["pruning"]
    dense, pruned = a["models"]["0.0"], a["models"][str(a["ratio"])]
    rows = []
    for key, label, spec in [("params", "parameters", "{:,.0f}"), ("macs", "MACs per image", "{:,.0f}"),
                             ("latency_ms_batch1", "CPU latency, batch 1 (ms)", "{:.2f}"),
                             ("latency_ms_batch128", "CPU latency, batch 128 (ms)", "{:.1f}"),
                             ("val_acc", "val_acc after the last epoch", "{:.4f}"),
                             ("test_acc", f"test accuracy ({dense['test_images']} images)", "{:.4f}"),
                             ("train_images_per_s", "training images/s (last epoch)", "{:.0f}")]:
        rows.append([label, spec.format(dense[key]), spec.format(pruned[key]),
                     f"{pruned[key] / dense[key]:.2f}x"])
    share = pruned["latency_ms_batch128"] / dense["latency_ms_batch128"]
    return Report(f"Dense ResNet-18 against channel-pruned to {a['ratio']:.0%} of its weights removed", [
        f"Width {a['width']}, {a['epochs']} epochs on {a['subset']} CIFAR-10 training images (10 % "
        "held out for validation), trained by one tune-run search (FIFO, grid over prune_ratio, same "
        f"seed and hyperparameters), {a['wall_seconds']:.0f} s. Latency: the model as it ships "
        "(BatchNorm folded, fp32, contiguous layout), one torch thread, median after a warm-up.",
        Table(["", "dense", "pruned", "pruned / dense"], rows)],
        [PRUNED_LATENCY.check(share, f"{share:.2f}x ({pruned['latency_ms_batch128']:.1f} / "
                                     f"{dense['latency_ms_batch128']:.1f} ms)")])


def report_pareto(r: dict) -> Report:
    p = r["pareto"]
    front = [[row["trial"], f"{row['val_acc']:.4f}", f"{row['latency_ms']:.2f}",
              f"{row['params']:,.0f}", row["width"], row["prune_ratio"]] for row in p["front"]]
    return Report("The front of a small multi-objective search", [
        f"`tune-run spaces/resnet18_pareto.py --quick` (val_acc max, latency_ms min; {p['trials']} "
        f"trials, promotion ASHA ranking rungs by {p['promote_by']}): {p['wall_seconds']:.0f} s, "
        f"{p['completed']} trials ran all epochs, {p['stopped_early']} were stopped early.",
        f"- Trials on the front: **{len(p['front'])}**; stopped early and on it: "
        f"**{p['stopped_early_on_front']}**.\n"
        f"- Hypervolume (val_acc x ms, reference val_acc 0 and the slowest latency seen, "
        f"{p['reference']['latency_ms']:.2f} ms): {p['hypervolume']:.3f}.",
        Table(["trial", "val_acc", "latency_ms", "params", "width", "prune_ratio"], front)],
        [FRONT_SIZE.check(len(p["front"]), str(len(p["front"]))),
         STOPPED_ON_FRONT.check(p["stopped_early_on_front"], str(p["stopped_early_on_front"]))])


SECTIONS = (
    Section("pruning", "a dense ResNet-18 against one channel-pruned to half its weights, trained by "
            "one search, then timed as it ships", RESULTS, run_pruning, report_pruning,
            (PRUNED_LATENCY,), PRUNING_FULL, PRUNING_QUICK, ("data_dir",), default=False),
    Section("pareto", "the front of spaces/resnet18_pareto.py --quick: trials on it, stopped early, "
            "hypervolume", RESULTS, run_pareto, report_pareto, (FRONT_SIZE, STOPPED_ON_FRONT),
            PARETO_FULL, PARETO_QUICK, ("data_dir",), default=False),
)
