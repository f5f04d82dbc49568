"""tune-run's benchmark suite: one command, every section side by side on this machine.

    .venv/bin/python benchmarks/run.py --data-dir /work/shared/datasets/cifar10 [--smoke]

Writes benchmarks/RESULTS.md (a table per section, each target and whether it was met) and
benchmarks/results.json (the raw numbers). The full run takes about 15-20 minutes on 2 CPU cores;
--smoke shrinks every section to seconds to check that the script works (its numbers mean nothing)
and writes RESULTS-smoke.md / results-smoke.json instead. Run it on a quiet machine: the sections
time CPU work and another busy process skews every number.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[0] = str(HERE.parent)  # the repository root, not benchmarks/, so `benchmarks.x` imports

from benchmarks import cli_searches, searches, throughput  # noqa: E402
from benchmarks.writeup import write_markdown  # noqa: E402

SECTIONS = ("compute", "trial", "baseline", "searches", "precision", "overhead", "memory")
DEFAULT_SECTIONS = ("compute", "trial", "baseline", "searches", "precision", "overhead")


@dataclass(frozen=True)
class Sizes:
    """How much work each section does; FULL is calibrated to ~35 minutes on 2 quiet cores."""

    compute_steps: int  # timed train steps of section 1, per mode
    throughput_subset: int  # train images of sections 2-3 (the same files in both)
    throughput_epochs: int  # timed epochs of sections 2-3, after one warm-up epoch
    search: dict  # section 4's search settings (tune-run's, the usual pipeline's, FIFO's)
    precision: dict  # section 5's search settings, run once in fp32 and once in bf16
    overhead_sizes: list[dict]  # section 6's searches: label (short|long), subset, epochs, trials
    memory_subset: int  # images of section 7's data set (before its val/test split)
    memory_concurrency: list[int]  # section 7's numbers of trials running at once
    memory_reference_subset: int  # a small data set: the reference of section 7's copy check


# The search: 10,000 CIFAR-10 training images and 2,000 for validation, ResNet-18 at width
# 0.25, SGD over learning rate and weight decay, at most 4 epochs, ASHA with grace period 1 and
# reduction factor 2, two trials at a time, one CPU each.
SEARCH = {"dataset": "cifar10", "subset": 12_000, "val_fraction": 2_000 / 12_000, "num_samples": 8,
          "max_epochs": 4, "grace_period": 1, "reduction_factor": 2, "max_concurrent": 2,
          "cpus_per_trial": 1, "search": "random", "seed": 11, "max_failures": 0}

FULL = Sizes(
    compute_steps=20,
    throughput_subset=5_000,
    throughput_epochs=2,
    search=SEARCH,
    precision=SEARCH | {"subset": 6_000, "num_samples": 4, "scheduler": "fifo", "seed": 12},
    # ~3 s and ~30 s trials at ~550 images/s (a 1-thread bf16 trial on this Xeon). The short
    # trials run twice, 8 and 24 of them: the workers' start is paid once per search.
    overhead_sizes=[{"label": "short", "subset": 700, "epochs": 2, "trials": 8},
                    {"label": "short", "subset": 700, "epochs": 2, "trials": 24},
                    {"label": "long", "subset": 5_000, "epochs": 3, "trials": 8}],
    memory_subset=20_000,  # 24,000 images with the test split: 70 MB of uint8
    memory_concurrency=[1, 2, 4],  # 4 trials of 1 CPU on logical num_cpus=4
    memory_reference_subset=3_000,
)

SMOKE = Sizes(
    compute_steps=2,
    throughput_subset=300,
    throughput_epochs=1,
    search=SEARCH | {"subset": 600, "num_samples": 4, "max_epochs": 2},
    precision=SEARCH | {"subset": 600, "num_samples": 2, "max_epochs": 1, "scheduler": "fifo"},
    overhead_sizes=[{"label": "short", "subset": 150, "epochs": 1, "trials": 2}],
    memory_subset=600,
    memory_concurrency=[1, 2],
    memory_reference_subset=150,
)


def machine() -> dict:
    import ray  # before psutil: Ray puts its vendored psutil on sys.path

    # isort: split
    import psutil
    import torch
    import torchvision

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.processor())
    return {
        "cpu": cpu, "logical_cores": psutil.cpu_count(), "physical_cores": psutil.cpu_count(False),
        "memory_gb": psutil.virtual_memory().total / 1024**3,
        "load_average_at_start": list(psutil.getloadavg()),
        "python": platform.python_version(), "torch": torch.__version__,
        "torchvision": torchvision.__version__, "ray": ray.__version__,
        "platform": platform.platform(),
    }


def run_throughput(out: dict, sizes: Sizes, data_dir: Path, wanted: set[str]) -> None:
    import torch

    from core.data import load_dataset
    from core.precision import LAYOUTS, Mode

    if "compute" in wanted:
        out["compute"] = [throughput.compute_limit(1, sizes.compute_steps, Mode(p, layout))
                          for p in ("fp32", "bf16") for layout in reversed(LAYOUTS)]
        _log("compute", out["compute"])
    if not wanted & {"trial", "baseline"}:
        return
    torch.set_num_threads(1)
    # Sections 2-3 train on all of the subset: no validation split (val_fraction 0).
    with tempfile.TemporaryDirectory(prefix="tune-run-bench-cache-") as cache:
        start = time.perf_counter()
        data = load_dataset("cifar10", str(data_dir), 0.0, sizes.throughput_subset, 0, cache)
        decode_seconds = time.perf_counter() - start  # cold: no .npz cache yet
    if "trial" in wanted:
        # The fastest mode's limit again right before and after the trial: the machine's speed
        # drifts by tens of percent within minutes here, so the ratio compares a pair.
        fastest = max(out.get("compute", []), key=lambda c: c["images_per_s"], default=None)
        limit_mode = Mode(fastest["precision"], fastest["layout"]) if fastest else None
        before = throughput.compute_limit(1, sizes.compute_steps, limit_mode) if fastest else None
        trial = throughput.tune_run_path(data, 1, sizes.throughput_epochs)
        after = throughput.compute_limit(1, sizes.compute_steps, limit_mode) if fastest else None
        out["trial"] = {"decode_seconds": decode_seconds, "train_images": len(data.train_y),
                        **trial, "limit_before": before, "limit_after": after}
        _log("trial", out["trial"])
    if "baseline" in wanted:
        files = throughput.subset_files(data_dir, sizes.throughput_subset, 0)
        out["baseline"] = throughput.baseline_path(data_dir, files, data.mean, data.std, 1,
                                                   sizes.throughput_epochs, workers=2)
        _log("baseline", out["baseline"])


def run_searches(out: dict, sizes: Sizes, data_dir: Path, wanted: set[str]) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="tune-run-bench-"))
    data = {"data_dir": str(data_dir)}
    try:
        if "searches" in wanted:
            runs = {
                "tune_run": cli_searches.run_cli_search(workdir, "asha", sizes.search | data),
                "usual": cli_searches.usual_pipeline_search(workdir, str(data_dir), sizes.search),
                "tune_run_fifo": cli_searches.run_cli_search(
                    workdir, "fifo", sizes.search | data | {"scheduler": "fifo"}),
            }
            runs["same_configs"] = cli_searches.same_configs(
                runs["tune_run"], runs["usual"], runs["tune_run_fifo"])
            out["searches"] = runs | {"settings": sizes.search}
            _log("searches", out["searches"])
        if "precision" in wanted:
            runs = {p: cli_searches.run_cli_search(workdir, f"precision-{p}",
                                                   sizes.precision | data | {"precision": p})
                    for p in ("fp32", "bf16")}
            runs["same_configs"] = cli_searches.same_configs(runs["fp32"], runs["bf16"])
            out["precision"] = runs | {"settings": sizes.precision}
            _log("precision", out["precision"])
        if "overhead" in wanted:
            out["overhead"] = searches.orchestration(
                workdir, str(data_dir), sizes.overhead_sizes)
            _log("overhead", out["overhead"])
        if "memory" in wanted:
            out["memory"] = searches.memory(
                workdir, str(data_dir), sizes.memory_subset, sizes.memory_reference_subset,
                sizes.memory_concurrency)
            _log("memory", out["memory"])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _log(section: str, numbers) -> None:
    print(f"\n=== {section}: {json.dumps(numbers, default=str)}\n", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path,
                        help="CIFAR-10 as train/<class>/*.jpg and test/<class>/*.jpg")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes, seconds per section: checks the script, measures nothing")
    parser.add_argument("--sections", default=",".join(DEFAULT_SECTIONS),
                        help=f"comma-separated subset of {','.join(SECTIONS)} "
                        f"(default: {','.join(DEFAULT_SECTIONS)})")
    parser.add_argument("--out", type=Path, default=HERE, help="folder of RESULTS.md and JSON")
    parser.add_argument("--render", type=Path, metavar="RESULTS_JSON",
                        help="measure nothing: write RESULTS.md beside an earlier run's JSON again "
                        "(after a change to benchmarks/writeup.py)")
    args = parser.parse_args(argv)
    if args.render:
        markdown = write_markdown(json.loads(args.render.read_text()))
        (args.render.parent / args.render.name.replace("results", "RESULTS").replace(
            ".json", ".md")).write_text(markdown)
        print(markdown)
        return 0
    wanted = set(args.sections.split(","))
    if wanted - set(SECTIONS):
        parser.error(f"--sections: unknown {sorted(wanted - set(SECTIONS))}; "
                     f"expected some of {','.join(SECTIONS)}")
    if args.data_dir is None:
        parser.error("--data-dir is required (unless --render)")
    if not (args.data_dir / "train").is_dir():
        parser.error(f"--data-dir: {args.data_dir} has no train/ folder")

    sizes = SMOKE if args.smoke else FULL
    results = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "cwd": str(Path.cwd()),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "smoke": args.smoke, "sizes": asdict(sizes), "sections": sorted(wanted, key=SECTIONS.index),
        "machine": machine(),
    }
    start = time.perf_counter()
    run_throughput(results, sizes, args.data_dir.resolve(), wanted)
    run_searches(results, sizes, args.data_dir.resolve(), wanted)
    results["total_seconds"] = time.perf_counter() - start

    suffix = "-smoke" if args.smoke else ""
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"results{suffix}.json").write_text(json.dumps(results, indent=2) + "\n")
    markdown = write_markdown(results)
    (args.out / f"RESULTS{suffix}.md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
