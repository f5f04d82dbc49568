"""What every benchmark section shares: its declaration, sizes, timing, targets, and the one renderer.

A section (benchmarks/sections/) is a `Section`: a name, the results file it writes into, the
targets it promises, FULL and QUICK sizes, `run(context) -> raw numbers` (JSON-able) and
`report(raw numbers of its results file) -> Report` (text, tables, and a verdict on each target).
`render` writes the reports of one results file as markdown: one header, one table of targets,
then each section. benchmarks/run.py is the driver.

Imports only the standard library and torch, so that `--list` and the GPU section run where Ray,
MLflow and Optuna are not installed.
"""

from __future__ import annotations

import datetime
import operator
import os
import platform
import shlex
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from core.precision import cpu_model

REPO = Path(__file__).resolve().parents[1]
HERE = REPO / "benchmarks"

# ---------------------------------------------------------------------------------------------------
# Targets.

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge, "<=": operator.le, "<": operator.lt, ">": operator.gt, "==": operator.eq,
    "within": lambda value, limit: abs(value) <= limit,  # |value| <= limit
}


@dataclass(frozen=True)
class Verdict:
    """A target checked: what was promised, what was measured (as text), whether it was met
    (None: not measured in this run)."""

    target: str
    measured: str
    met: bool | None


@dataclass(frozen=True)
class Target:
    """A target a section declares: `what` it promises, met when `value <op> limit`."""

    what: str
    op: str
    limit: float | bool

    def __post_init__(self):
        if self.op not in _OPS:
            raise ValueError(f"target op {self.op!r}: expected one of {', '.join(_OPS)}")

    def check(self, value: float | bool | None, measured: str, what: str | None = None) -> Verdict:
        """The verdict on `value` (None: not measured); `what` rewords the target for this row
        (a count or a size filled in), keeping its limit."""
        met = None if value is None else bool(_OPS[self.op](value, self.limit))
        return Verdict(what or self.what, measured, met)


# ---------------------------------------------------------------------------------------------------
# What a section is, and what it returns.


@dataclass
class Table:
    header: list[str]
    rows: list[list[Any]]


Block = str | Table  # a paragraph (or a list, or a code block) of markdown, or a table


@dataclass
class Report:
    """One section of a results file: its heading, its blocks in order, and its verdicts."""

    title: str
    blocks: list[Block]
    verdicts: list[Verdict] = field(default_factory=list)


class Skipped(Exception):
    """A section that cannot measure here (no GPU, no root): said in one line, nothing written."""


@dataclass
class Context:
    """What a section's run gets from the driver."""

    quick: bool
    sizes: Any  # the section's QUICK or FULL sizes
    data_dir: Path | None  # --data-dir (CIFAR-10), resolved
    work: Path  # a scratch folder of its own, removed afterwards
    earlier: dict[str, Any]  # raw numbers of the sections of its results file run before it
    options: dict[str, Any] = field(default_factory=dict)  # the driver's other flags (budget_s, ...)


@dataclass(frozen=True)
class Section:
    """A benchmark section: declared once, listed by `--list`, run and rendered by the driver."""

    name: str
    about: str  # one line for --list
    results: str  # the results file it writes into, e.g. "RESULTS.md"
    run: Callable[[Context], dict]
    report: Callable[[dict], Report]  # the raw numbers of its results file -> its report
    targets: tuple[Target, ...] = ()
    full: Any = None
    quick: Any = None
    needs: tuple[str, ...] = ()  # "data_dir": --data-dir must be given
    default: bool = True  # run when --sections is not given


# ---------------------------------------------------------------------------------------------------
# Sizes and timing.


def sync(device: torch.device) -> None:
    """Waits for the device's queued work, so a clock read after it counts that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device | None = None) -> tuple[Any, float]:
    """(fn(), seconds it took), the device synchronised before and after."""
    device = device or torch.device("cpu")
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


class StepLimit:
    """The compute limit of a trial's train step: `core.train.train_step` (forward, loss, backward,
    optimizer step) again and again on one random batch kept on the device, already normalised,
    in one precision and layout (`mode`), with `torch.compile` or not. No data path at all: what a
    trial's images/s is held against. The model and optimizer are a trial's (`hp`: core/hparams.py's
    resolved values; width, optimizer, lr, momentum, weight decay)."""

    def __init__(self, device: torch.device, hp: dict, mode, compile_: bool = False,
                 classes: int = 10, image: int = 32, model_name: str = "resnet18",
                 options: dict | None = None):
        """`options`: the model's options (core/models.py); the built-in model's width by default."""
        from core.models import build_model
        from core.optim import make_optimizer
        from core.train import train_step

        torch.manual_seed(0)
        self.device, self.batch, self.mode, self._step = device, hp["batch_size"], mode, train_step
        options = {"width": hp["width"]} if options is None else options
        model = build_model(model_name, classes, 3, **options)
        model = model.to(device, memory_format=mode.memory_format).train()
        self.optimizer = make_optimizer(hp["optimizer"], model.parameters(), hp["lr"],
                                        hp["momentum"], hp["weight_decay"], hp["nesterov"])
        self.step_model = torch.compile(model) if compile_ else model
        x = torch.randn(self.batch, 3, image, image, device=device)  # (B, 3, 32, 32), normalised
        self.x = x.contiguous(memory_format=mode.memory_format)
        self.y = torch.randint(0, classes, (self.batch,), device=device)

    def run(self, steps: int) -> float:
        """Seconds of `steps` steps, the device synchronised before and after."""
        def steps_():
            for _ in range(steps):
                self._step(self.step_model, self.x, self.y, self.optimizer, None, 0.0,
                           self.mode.autocast_dtype)
        return timed(steps_, self.device)[1]

    def images_per_s(self, steps: int) -> dict:
        seconds = self.run(steps)
        return {"steps": steps, "images": steps * self.batch, "seconds": seconds,
                "images_per_s": steps * self.batch / seconds, "ms_per_step": 1e3 * seconds / steps}

    def for_seconds(self, seconds: float) -> dict:
        """Images/s over about `seconds` of steps, their number sized from a short probe."""
        probe = 3
        per_step = self.run(probe) / probe
        return self.images_per_s(max(5, int(seconds / max(per_step, 1e-6))))


# ---------------------------------------------------------------------------------------------------
# Searches run through tune-run's command line.


def write_space(path: Path, settings: dict, space: str) -> Path:
    """A space file with `settings` (a dict) and `space` (Python source of the space dict's body)."""
    body = textwrap.indent(textwrap.dedent(space).strip(), "    ")
    path.write_text(f"from ray import tune\n\nsettings = {settings!r}\n\nspace = {{\n{body}\n}}\n")
    return path


def tune_run_command(folder: Path, *args: str, env: dict[str, str] | None = None,
                     storage: str | None = None) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) of `tune-run ARGS` from this checkout, with its results under `folder`
    (or `storage`), its MLflow record in `folder`/mlflow.db and HOME at `folder` (a cold image
    cache)."""
    argv = [sys.executable, "-m", "search.cli", *args, "--storage",
            storage or str(folder / "results"), "--tracking-uri", f"sqlite:///{folder}/mlflow.db"]
    return argv, dict(os.environ, PYTHONPATH=str(REPO), HOME=str(folder)) | (env or {})


def run_tune_run(folder: Path, *args: str, env: dict[str, str] | None = None,
                 storage: str | None = None, timeout_s: float = 3600) -> float:
    """Runs `tune-run ARGS` (see tune_run_command) to its end; returns its wall seconds."""
    argv, full_env = tune_run_command(folder, *args, env=env, storage=storage)
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=folder, env=full_env, capture_output=True, text=True,
                          timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"tune-run {shlex.join(args)} exited {proc.returncode}: "
                           f"{proc.stderr[-3000:]}")
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------------
# The machine, and the one renderer.


def machine() -> dict[str, str]:
    """This machine and its software, one line each (no Ray import: versions from the metadata)."""
    cpu = cpu_model()
    memory = ""
    try:
        total_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text()
                        .splitlines() if line.startswith("MemTotal"))
        memory = f", {total_kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration):
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    software = [f"Python {platform.python_version()}", f"torch {torch.__version__}"]
    for package in ("torchvision", "numpy", "ray", "mlflow"):
        try:
            software.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            software.append(f"no {package}")
    return {"machine": f"{cpu}, {os.cpu_count()} logical cores ({usable} usable){memory}; "
                       f"load average at start {load}",
            "software": f"{', '.join(software)} ({platform.platform()})"}


def render(title: str, meta: dict, reports: list[Report]) -> str:
    """One results file as markdown: header, every verdict in one table, then each section."""
    lines = [f"# {title}", ""]
    if meta.get("quick") or meta.get("smoke"):
        lines += ["> **QUICK RUN**: every section shrunk to seconds to check that it works. These "
                  "numbers measure nothing; run without `--quick` for results.", ""]
    lines.append(f"- Command: `{meta['command']}` (in `{meta['cwd']}`)")
    total = meta.get("total_seconds")
    lines.append(f"- Date: {meta['date']}" + (f"; total time {total / 60:.1f} min" if total else ""))
    for name, text in _machine_lines(meta.get("machine", {})):
        lines.append(f"- {name.capitalize()}: {text}")
    for name, date in meta.get("kept", {}).items():
        lines.append(f"- Section `{name}`: kept from the run of {date}")
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for verdict in (v for r in reports for v in r.verdicts):
        met = "n/a" if verdict.met is None else ("**yes**" if verdict.met else "**NO**")
        lines.append(f"| {verdict.target} | {verdict.measured} | {met} |")
    lines.append("")
    for report in reports:
        lines += [f"## {report.title}", ""]
        for block in report.blocks:
            lines += [table(block) if isinstance(block, Table) else block, ""]
    return "\n".join(lines)


def _machine_lines(m: dict) -> list[tuple[str, str]]:
    if "logical_cores" in m:  # results.json of the runs before this renderer
        return [("machine", f"{m['cpu']}, {m['logical_cores']} logical / {m['physical_cores']} "
                            f"physical cores, {m['memory_gb']:.0f} GiB RAM; load average at start "
                            f"{', '.join(f'{x:.2f}' for x in m['load_average_at_start'])}"),
                ("software", f"Python {m['python']}, torch {m['torch']}, torchvision "
                             f"{m['torchvision']}, Ray {m['ray']} ({m['platform']})")]
    return [(k, str(v)) for k, v in m.items()]


def table(t: Table) -> str:
    return "\n".join(["| " + " | ".join(t.header) + " |", "|" + "---|" * len(t.header)]
                     + ["| " + " | ".join(cell(v) for v in row) + " |" for row in t.rows])


def cell(v: Any) -> str:
    """A table cell: big floats with thousands separators, small ones to 3 figures."""
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    return "" if v is None else str(v)


def fmt(x: Any, spec: str = ",.0f", missing: str = "-") -> str:
    """`x` formatted with `spec`, or `missing` when it is None or NaN."""
    return missing if x is None or (isinstance(x, float) and x != x) else format(x, spec)


def run_meta(argv: list[str], quick: bool) -> dict:
    return {"command": shlex.join([Path(sys.executable).name, *argv]), "cwd": str(Path.cwd()),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "quick": quick, "machine": machine()}
