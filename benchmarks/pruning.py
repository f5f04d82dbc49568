"""What channel pruning buys, measured: a ResNet-18 pruned by channels to half its weights against the
dense one, trained the same epochs by tune-run, then timed on the CPU; and the accuracy/latency front
that a small multi-objective search finds.

    .venv/bin/python benchmarks/pruning.py --data-dir ../shared/datasets/cifar10 \
        --out benchmarks/RESULTS-pruning.md

1. Dense against pruned: one search (`tune-run`, FIFO, a grid over prune_ratio 0 and 0.5 with
   `prune_method: channel`, everything else fixed), so both models come out of the product's own
   trainable with the same data, seed and epochs. Each trial's final checkpoint is then timed here,
   on its own, as it ships (core/cost.py: pruning permanent, BatchNorm folded, fp32, one torch
   thread, median of repeated passes after a warm-up) at batch 1 and batch 128, and scored once on the
   test split.
2. The front: `spaces/resnet18_pareto.py --quick` (accuracy against latency_ms, promotion ASHA on the
   first objective): how many trials are on the front, how many were stopped early (none may be on
   it), and the front's hypervolume against a reference of val_acc 0 and the slowest latency seen.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LATENCY_BATCHES = (1, 128)


def run_tune_run(folder: Path, space: Path, *flags: str) -> float:
    """Runs `tune-run SPACE FLAGS` with its own storage and MLflow store in `folder`; wall seconds."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "search.cli", str(space), "--storage",
                           str(folder / "results"), "--tracking-uri",
                           f"sqlite:///{folder}/mlflow.db", *flags],
                          cwd=folder, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO), HOME=str(folder)))
    if proc.returncode != 0:
        raise RuntimeError(f"tune-run exited {proc.returncode}: {proc.stderr[-3000:]}")
    return time.perf_counter() - start


def dense_against_pruned(work: Path, data_dir: str, epochs: int, subset: int, width: float,
                         ratio: float) -> dict:
    from search.place.experiment_folder import result_rows, trials

    space = work / "pruning.py"
    settings = {"dataset": "cifar10", "data_dir": data_dir, "subset": subset, "max_epochs": epochs,
                "num_samples": 1, "scheduler": "fifo", "search": "random", "max_concurrent": 1,
                "cpus_per_trial": 2, "name": "dense-vs-pruned", "seed": 0}
    space.write_text(textwrap.dedent(f"""\
        from ray import tune

        settings = {settings!r}

        space = {{
            "prune_ratio": tune.grid_search([0.0, {ratio}]),
            "prune_method": "channel",
            "width": {width},
            "optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True,
            "weight_decay": 5e-4, "schedule": "onecycle", "label_smoothing": 0.1,
            "batch_size": 128,
        }}
        """))
    wall = run_tune_run(work, space)
    models = {}
    for trial in trials(work / "results" / "dense-vs-pruned"):
        rows = result_rows(trial.path)
        models[float(trial.config["prune_ratio"])] = {
            "checkpoint": trial.checkpoint.path, "epochs": len(rows),
            "val_acc": rows[-1]["val_acc"], "train_images_per_s": rows[-1]["images_per_s"],
            "reported_latency_ms": rows[-1]["latency_ms"]}
    return {"wall_seconds": wall, "width": width, "epochs": epochs, "subset": subset,
            "models": {str(r): m | measure(m["checkpoint"], data_dir, subset) for r, m in models.items()}}


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


def pareto_search(work: Path, data_dir: str) -> dict:
    from search.place.experiment_folder import trial_histories
    from search.scheduling.pareto import ON_FRONT, hypervolume_2d, pareto_rows, spec_objectives
    from search.door.spec import load_spec

    wall = run_tune_run(work, REPO / "spaces" / "resnet18_pareto.py", "--quick", "--data-dir",
                        data_dir, "--name", "pareto")
    spec = load_spec(REPO / "spaces" / "resnet18_pareto.py", {"name": "pareto",
                     "storage": str(work / "results")}, quick=True)
    rows = pareto_rows(spec, trial_histories(work / "results" / "pareto"))
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


def write_markdown(result: dict, out: Path) -> None:
    a = result["dense_against_pruned"]
    dense, pruned = a["models"]["0.0"], a["models"][str(result["ratio"])]
    lines = [
        "# Channel pruning, measured", "",
        f"Machine: {result['machine']}. torch {result['torch']}. {result['date']}"
        + (f" (part 1 from the run of {result['dense_date']})" if "dense_date" in result else "")
        + ".",
        f"Command: `{result['command']}`", "",
        f"## Dense ResNet-18 against channel-pruned to {result['ratio']:.0%} of its weights removed", "",
        f"Width {a['width']}, {a['epochs']} epochs on {a['subset']} CIFAR-10 training images (10 % held "
        "out for validation), trained by one tune-run search (FIFO, grid over prune_ratio, same seed "
        f"and hyperparameters), {a['wall_seconds']:.0f} s. Latency: the model as it ships (BatchNorm "
        "folded, fp32, contiguous layout), one torch thread, median after a warm-up.", "",
        "| | dense | pruned | pruned / dense |", "|---|---|---|---|"]
    for key, label, fmt in [("params", "parameters", "{:,.0f}"), ("macs", "MACs per image", "{:,.0f}"),
                            ("latency_ms_batch1", "CPU latency, batch 1 (ms)", "{:.2f}"),
                            ("latency_ms_batch128", "CPU latency, batch 128 (ms)", "{:.1f}"),
                            ("val_acc", "val_acc after the last epoch", "{:.4f}"),
                            ("test_acc", f"test accuracy ({dense['test_images']} images)", "{:.4f}"),
                            ("train_images_per_s", "training images/s (last epoch)", "{:.0f}")]:
        lines.append(f"| {label} | {fmt.format(dense[key])} | {fmt.format(pruned[key])} | "
                     f"{pruned[key] / dense[key]:.2f}x |")
    target = pruned["latency_ms_batch128"] / dense["latency_ms_batch128"]
    lines += ["", f"Target: latency at batch 128 at most 0.6x the dense model's: **{target:.2f}x, "
              f"{'met' if target <= 0.6 else 'NOT met'}**.", ""]
    p = result["pareto_search"]
    lines += [
        "## The front of a small multi-objective search", "",
        f"`tune-run spaces/resnet18_pareto.py --quick` (val_acc max, latency_ms min; {p['trials']} "
        f"trials, promotion ASHA ranking rungs by {p['promote_by']}): {p['wall_seconds']:.0f} s, "
        f"{p['completed']} trials ran "
        f"all epochs, {p['stopped_early']} were stopped early.", "",
        f"- Trials on the front: **{len(p['front'])}**; stopped early and on it: "
        f"**{p['stopped_early_on_front']}**.",
        f"- Hypervolume (val_acc x ms, reference val_acc 0 and the slowest latency seen, "
        f"{p['reference']['latency_ms']:.2f} ms): {p['hypervolume']:.3f}.", "",
        "| trial | val_acc | latency_ms | params | width | prune_ratio |", "|---|---|---|---|---|---|"]
    for r in p["front"]:
        lines.append(f"| {r['trial']} | {r['val_acc']:.4f} | {r['latency_ms']:.2f} | "
                     f"{r['params']:,.0f} | {r['width']} | {r['prune_ratio']} |")
    met = len(p["front"]) >= 3 and p["stopped_early_on_front"] == 0
    lines += ["", f"Target: at least 3 trials on the front, none stopped early: "
              f"**{'met' if met else 'NOT met'}**.", ""]
    out.write_text("\n".join(lines))


def main() -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="CIFAR-10 (ImageFolder or cifar-10-batches-py)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--subset", type=int, default=5000)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--skip-front", action="store_true", help="only dense against pruned")
    p.add_argument("--reuse-dense", action="store_true",
                   help="take part 1 from the JSON beside --out (from an earlier run); run part 2")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "RESULTS-pruning.md")
    args = p.parse_args()
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M"),
              "command": " ".join([Path(sys.executable).name, *sys.argv]), "ratio": args.ratio}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "a").mkdir()
        if args.reuse_dense:
            earlier = json.loads(args.out.with_suffix(".json").read_text())
            result["dense_against_pruned"] = earlier["dense_against_pruned"]
            result["dense_date"] = earlier.get("dense_date", earlier["date"])
        else:
            result["dense_against_pruned"] = dense_against_pruned(
                work / "a", str(Path(args.data_dir).resolve()), args.epochs, args.subset,
                args.width, args.ratio)
        print(json.dumps(result["dense_against_pruned"], indent=2, default=str), flush=True)
        if not args.skip_front:
            (work / "b").mkdir()
            result["pareto_search"] = pareto_search(work / "b", str(Path(args.data_dir).resolve()))
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str))
    if "pareto_search" in result:
        write_markdown(result, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
