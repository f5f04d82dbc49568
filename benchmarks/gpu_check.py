"""GPU check in one command: what one lent GPU does for tune-run's trials, with torch and core/ alone.

    python3 benchmarks/gpu_check.py [--budget-s 420] [--out benchmarks/RESULTS-gpu.md] [--smoke]

Needs no Ray, MLflow or Optuna (the device machine has none): it runs core/'s training as
trainables/classifier.py wires it, minus Ray, on benchmarks/data/cifar10-subset.npz (a CIFAR-10
subset small enough to travel with the working tree; benchmarks/make_gpu_subset.py writes it), and
writes a markdown report with a table per section:

  (a) the compute limit of the train step: ResNet-18 width 1.0 on one random batch kept on the GPU,
      fp32 and bf16, NCHW and channels-last, torch.compile off and on (the compiled modes compile in
      parallel worker processes, then are timed one at a time);
  (b) core's epoch loop as a trial runs it (uint8 data on the GPU, BatchAugment, the precision and
      layout `auto` picks, evaluation of inference_copy every epoch): images/s against (a), and the
      validation accuracy of each epoch;
  (c) 1, 2, 4 and 8 trial processes sharing the GPU at once, as Ray's fractional GPUs run them:
      each one's images/s and memory over the same time window;
  (d) a real CUDA out-of-memory error on the trial path, torch's message and the trainable's.

Each section is time-boxed from --budget-s so that the whole run fits (the default, 420 s, keeps it
under 8 minutes). Without a CUDA GPU it says so in one line and exits 0; --smoke --allow-cpu runs
tiny sizes on the CPU to check that the script works (its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import math
import multiprocessing as mp
import os
import platform
import queue
import shlex
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[0] = str(HERE.parent)  # the repository root, so `core` imports

import numpy as np  # noqa: E402
import torch  # noqa: E402

from core.augment import BatchAugment, crop_padding  # noqa: E402
from core.data import Dataset  # noqa: E402
from core.hparams import resolve  # noqa: E402
from core.inference import inference_copy  # noqa: E402
from core.losses import classification_loss  # noqa: E402
from core.models import build_model  # noqa: E402
from core.optim import make_optimizer, make_schedule  # noqa: E402
from core.precision import Mode, resolve_mode  # noqa: E402
from core.pruning import GradualPruner  # noqa: E402
from core.train import evaluate, train_epoch  # noqa: E402

DATA = HERE / "data" / "cifar10-subset.npz"
MODEL = "resnet18"
CLASSES = 10
TARGET_SHARE, TARGET_TRIALS = 0.8, 4  # >= 4 trials sharing a GPU each keep >= 0.8 of a lone one
TIME_LIMIT_S = 480  # the whole check in under 8 minutes
OOM_ERRORS = (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError),)
MODES = [Mode(p, layout) for p in ("fp32", "bf16") for layout in ("nchw", "channels_last")]
MIB = 2**20


@dataclass(frozen=True)
class Sizes:
    """How much work each section does; the time boxes come from --budget-s."""

    width: float  # ResNet-18 channel width in every section
    batch: int  # batch size of (a), (b) and (c)
    train: int | None  # subset train images used (None: all of them)
    val: int | None  # subset test images used as the validation split (None: all)
    epochs: int  # max_epochs of (b)'s trial (the length of its schedule)
    warmup_steps: int  # untimed steps before each timed (a) mode (after the compile step)
    processes: tuple[int, ...]  # trial processes sharing the GPU in (c)
    oom: tuple[tuple[int, float], ...]  # (batch, width) tried in turn until one runs out of memory


FULL = Sizes(1.0, 512, None, None, 15, 10, (1, 2, 4, 8), ((65536, 1.0), (65536, 2.0), (65536, 4.0)))
SMOKE = Sizes(0.125, 32, 512, 256, 2, 2, (1, 2), ((65536, 1.0),))


@dataclass(frozen=True)
class Plan:
    """Seconds given to each section, from the total budget."""

    eager_s: float  # timed seconds of each (a) mode
    compile_s: float  # deadline for every compiled (a) mode to compile and warm up, in parallel
    trial_s: float  # (b): epochs start until this many seconds have gone
    window_s: float  # (c): the time window all trials of a round train in together
    ready_s: float  # (c): deadline for a round's trials to set up and run their warm-up epoch

    @classmethod
    def from_budget(cls, budget: float) -> Plan:
        return cls(eager_s=min(3.0, max(0.3, 0.005 * budget)), compile_s=0.33 * budget,
                   trial_s=0.06 * budget, window_s=max(2.0, 0.05 * budget),
                   ready_s=max(20.0, 0.1 * budget))


# ---------------------------------------------------------------------------------------------------
# What is measured: the train step alone (a), and a trial's epochs (b, c).


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    """Starts torch's peak-memory count afresh (CUDA initialised first: the count needs it)."""
    if device.type == "cuda":
        torch.cuda.init()
        torch.cuda.reset_peak_memory_stats(device)


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


class StepBench:
    """Forward, loss, backward and SGD step on one random batch kept on the device, as
    benchmarks/throughput.py's compute_limit does on the CPU, in one precision and layout."""

    def __init__(self, device: torch.device, width: float, batch: int, mode: Mode, compile_: bool):
        torch.manual_seed(0)
        self.device, self.batch, self.mode = device, batch, mode
        model = build_model(MODEL, CLASSES, 3, width=width).to(device, memory_format=mode.memory_format)
        model.train()
        self.optimizer = make_optimizer("sgd", model.parameters(), 0.05, 0.9, 5e-4)
        self.step_model = torch.compile(model) if compile_ else model
        x = torch.randn(batch, 3, 32, 32, device=device)  # (B, 3, 32, 32), already normalised
        self.x = x.contiguous(memory_format=mode.memory_format)
        self.y = torch.randint(0, CLASSES, (batch,), device=device)

    def step(self) -> None:
        amp = self.mode.autocast_dtype
        with torch.autocast(self.device.type, dtype=amp, enabled=amp is not None):
            loss = classification_loss(self.step_model(self.x), self.y, 0.0)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def run(self, steps: int) -> float:
        """Seconds of `steps` steps, the device synchronised before and after."""
        sync(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        sync(self.device)
        return time.perf_counter() - start

    def timed(self, seconds: float) -> dict:
        """Images/s over about `seconds` of steps, their number sized from a short probe."""
        probe = 3
        per_step = self.run(probe) / probe
        steps = max(5, int(seconds / max(per_step, 1e-6)))
        elapsed = self.run(steps)
        return {"steps": steps, "seconds": elapsed, "images_per_s": steps * self.batch / elapsed,
                "ms_per_step": 1e3 * elapsed / steps}


def bench_mode(device: torch.device, sizes: Sizes, mode: Mode, compile_: bool, seconds: float) -> dict:
    """One (a) row: the first step timed apart (it compiles, with torch.compile), then warm-up
    steps (more with torch.compile), then about `seconds` of timed steps."""
    reset_peak(device)
    bench = StepBench(device, sizes.width, sizes.batch, mode, compile_)
    first_s = bench.run(1)
    bench.run(sizes.warmup_steps * (3 if compile_ else 1))
    row = bench.timed(seconds) | {"first_step_s": first_s}
    if device.type == "cuda":
        row["peak_mib"] = torch.cuda.max_memory_allocated(device) / MIB
    return row


def load_subset(train: int | None, val: int | None) -> Dataset:
    """The carried CIFAR-10 subset as core.data's Dataset; its test split is the validation split.
    `train` / `val` keep that many images, chosen at random (the file is in class order)."""
    with np.load(DATA) as z:
        x, y, vx, vy = z["x_train"], z["y_train"], z["x_test"], z["y_test"]
        classes = [str(c) for c in z["classes"]]
        mean = tuple(float(m) for m in z["mean"])
        std = tuple(float(s) for s in z["std"])
    rng = np.random.default_rng(0)
    if train is not None and train < len(y):
        rows = np.sort(rng.permutation(len(y))[:train])
        x, y = x[rows], y[rows]
    if val is not None and val < len(vy):
        rows = np.sort(rng.permutation(len(vy))[:val])
        vx, vy = vx[rows], vy[rows]
    none_x, none_y = vx[:0], vy[:0]
    return Dataset("cifar10-subset", classes, x, y.astype(np.int64), vx, vy.astype(np.int64),
                   none_x, none_y, mean, std, hflip=True)


def trial_hparams(sizes: Sizes) -> dict:
    """The hyperparameters of (b)'s and (c)'s trial: the defaults, at (a)'s batch size and width,
    with the learning rate scaled by sqrt(batch / 128) from the default 0.1 at batch 128."""
    lr = round(0.1 * math.sqrt(sizes.batch / 128), 4)
    return resolve({"batch_size": sizes.batch, "width": sizes.width, "lr": lr,
                    "warmup_epochs": 1 if sizes.epochs >= 5 else 0})


class Trial:
    """One trial's training, set up as trainables/classifier.py's train_classifier does (minus Ray,
    checkpoints and fault injection): model in the layout of resolve_mode("auto"), the uint8 arrays
    copied to the device, BatchAugment in that layout, autocast in that precision, and evaluation of
    inference_copy(model) with batches of 1024 on a GPU (128 on a CPU) after every epoch."""

    def __init__(self, data: Dataset, device: torch.device, hp: dict, max_epochs: int):
        torch.manual_seed(hp["seed"])
        self.generator = torch.Generator(device).manual_seed(hp["seed"])
        self.hp, self.device = hp, device
        options = {k: hp[k] for k in ("width", "activation", "norm", "conv", "dropout", "init")}
        model = build_model(MODEL, data.num_classes, data.in_channels, **options)
        self.pruner = GradualPruner(model, hp["prune_ratio"], max_epochs)
        self.mode = resolve_mode("auto", device)
        self.model = model.to(device, memory_format=self.mode.memory_format)
        self.optimizer = make_optimizer(hp["optimizer"], [p for p in model.parameters() if p.requires_grad],
                                        hp["lr"], hp["momentum"], hp["weight_decay"], hp["nesterov"])
        self.x, self.y = torch.from_numpy(data.train_x).to(device), torch.from_numpy(data.train_y).to(device)
        self.vx, self.vy = torch.from_numpy(data.val_x).to(device), torch.from_numpy(data.val_y).to(device)
        steps = max(1, len(self.y) // hp["batch_size"])
        self.schedule = make_schedule(hp["schedule"], self.optimizer, max_epochs, steps, hp["warmup_epochs"])
        self.augment = BatchAugment(data.mean, data.std, crop_padding(data.image_size), data.hflip,
                                    self.mode.memory_format)
        self.eval_batch = 128 if device.type == "cpu" else 1024
        self.epoch = 0

    def run_epoch(self) -> dict:
        self.epoch += 1
        start = time.perf_counter()
        stats = train_epoch(self.model, self.x, self.y, self.augment, self.optimizer, self.schedule,
                            self.hp["batch_size"], self.hp["label_smoothing"], None, self.generator,
                            self.mode.autocast_dtype)
        diverged = not math.isfinite(stats.loss)
        sparsity = self.pruner.sparsity() if diverged else self.pruner.step(self.epoch)
        eval_start = time.perf_counter()
        val_loss, val_acc = evaluate(inference_copy(self.model), self.vx, self.vy, self.augment,
                                     self.eval_batch, autocast_dtype=self.mode.autocast_dtype)
        end = time.perf_counter()
        return {"epoch": self.epoch, "train_loss": stats.loss, "val_loss": val_loss, "val_acc": val_acc,
                "images": stats.images, "train_s": stats.seconds, "images_per_s": stats.images_per_s,
                "eval_s": end - eval_start, "epoch_s": end - start, "sparsity": sparsity}


# ---------------------------------------------------------------------------------------------------
# Worker processes: the compiled (a) modes, and (c)'s trials, each in its own OS process.

_WORKER_DATA: dict = {}


def _redirect_output(path: Path) -> None:
    """The worker's stdout and stderr (torch.compile's warnings too) go to its own log file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)


def _worker(index: int, jobs, results, stop, log_dir: str) -> None:
    """Runs jobs from `jobs` until None: each sets up, says ("ready", ...), waits for ("go", ...),
    then measures and says ("done", ...); any exception is answered ("error", first line)."""
    _redirect_output(Path(log_dir) / f"worker-{index}.log")
    results.put(("started", index, os.getpid()))
    while True:
        msg = jobs.get()
        if msg is None:
            return
        kind, job = msg
        try:
            if kind == "bench":
                _bench_job(index, job, jobs, results)
            elif kind == "trial":
                _trial_job(index, job, jobs, results, stop)
        except Exception as e:  # reported to the parent; the worker takes the next job
            print(f"worker {index}: {kind} failed", flush=True)
            import traceback

            traceback.print_exc()
            results.put(("error", index, first_line(e)))
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _wait_go(jobs):
    while True:
        msg = jobs.get()
        if msg is not None and msg[0] == "go":
            return msg[1]


def _bench_job(index: int, job: dict, jobs, results) -> None:
    device = torch.device(job["device"])
    if device.type == "cpu":
        torch.set_num_threads(1)  # a smoke check on a shared CPU: stay light
    if job["compile"] and job.get("compile_threads"):
        try:
            import torch._inductor.config as inductor_config

            inductor_config.compile_threads = job["compile_threads"]
        except Exception:
            pass
    mode = Mode(job["precision"], job["layout"])
    reset_peak(device)
    start = time.perf_counter()
    bench = StepBench(device, job["sizes"].width, job["sizes"].batch, mode, job["compile"])
    first_s = bench.run(1)
    ready_s = time.perf_counter() - start
    bench.run(job["sizes"].warmup_steps * 3)
    results.put(("ready", index, {"first_step_s": first_s, "setup_s": ready_s}))
    seconds = _wait_go(jobs)
    row = bench.timed(seconds) | {"first_step_s": first_s}
    if device.type == "cuda":
        row["peak_mib"] = torch.cuda.max_memory_allocated(device) / MIB
    results.put(("done", index, row))


def _trial_job(index: int, job: dict, jobs, results, stop) -> None:
    """A trial set up and warmed up by one epoch, then trained (with its evaluation after every
    epoch) from the common start time for `window_s` seconds; it keeps training, uncounted, until
    `stop` is set, so that every process of the round shares the GPU for the whole window."""
    device = torch.device(job["device"])
    torch.set_num_threads(job["threads"])
    key = (job["train"], job["val"])
    if key not in _WORKER_DATA:
        _WORKER_DATA.clear()
        _WORKER_DATA[key] = load_subset(*key)
    reset_peak(device)
    trial = Trial(_WORKER_DATA[key], device, job["hp"], job["max_epochs"])
    warm = trial.run_epoch()
    results.put(("ready", index, {"warmup_epoch_s": warm["epoch_s"]}))
    start_at = _wait_go(jobs)
    time.sleep(max(0.0, start_at - time.time()))
    epochs = []
    while time.time() < start_at + job["window_s"]:
        epochs.append(trial.run_epoch())
    end = time.time()
    images = sum(e["images"] for e in epochs)
    train_s = sum(e["train_s"] for e in epochs)
    row = {"epochs": len(epochs), "images": images, "train_s": train_s,
           "images_per_s": images / train_s if train_s else 0.0,
           "window_images_per_s": images / (end - start_at), "window_s": end - start_at,
           "val_acc": epochs[-1]["val_acc"] if epochs else float("nan"),
           "mode": str(trial.mode), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        row["peak_alloc_mib"] = torch.cuda.max_memory_allocated(device) / MIB
        row["peak_reserved_mib"] = torch.cuda.max_memory_reserved(device) / MIB
    results.put(("done", index, row))
    while not stop.is_set():
        trial.run_epoch()
    del trial
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    results.put(("idle", index, None))


class Pool:
    """Worker processes started with the spawn method, each with its own job queue."""

    def __init__(self, size: int, log_dir: Path):
        ctx = mp.get_context("spawn")
        self.log_dir = log_dir
        self.results = ctx.Queue()
        self.stop = ctx.Event()
        self.jobs = [ctx.Queue() for _ in range(size)]
        # Not daemonic: torch.compile's workers start processes of their own.
        self.procs = [ctx.Process(target=_worker, name=f"gpu_check-{i}",
                                  args=(i, self.jobs[i], self.results, self.stop, str(log_dir)))
                      for i in range(size)]
        for p in self.procs:
            p.start()
        self.dead: dict[int, str] = {}

    def log(self, i: int) -> str:
        return str(self.log_dir / f"worker-{i}.log")

    def send(self, i: int, msg) -> None:
        self.jobs[i].put(msg)

    def collect(self, kind: str, indices, deadline: float) -> tuple[dict, dict]:
        """Waits until each of `indices` answered `kind` (or an error) or `deadline` (time.time())
        passed; a worker still silent then is ended. Returns ({i: answer}, {i: error})."""
        got, errors = {}, {i: self.dead[i] for i in indices if i in self.dead}
        waiting = {i for i in indices if i not in self.dead}
        while waiting:
            left = deadline - time.time()
            if left <= 0:
                break
            try:
                what, i, answer = self.results.get(timeout=min(left, 1.0))
            except queue.Empty:
                for i in sorted(waiting):
                    if not self.procs[i].is_alive():
                        self.dead[i] = errors[i] = (f"process exited with code {self.procs[i].exitcode} "
                                                    f"(log {self.log(i)})")
                        waiting.discard(i)
                continue
            if i not in waiting:
                continue
            if what == "error":
                errors[i] = answer
                waiting.discard(i)
            elif what == kind:
                got[i] = answer
                waiting.discard(i)
        for i in sorted(waiting):
            self.end(i, f"no {kind!r} answer within the time allowed; ended (log {self.log(i)})")
            errors[i] = self.dead[i]
        return got, errors

    def end(self, i: int, why: str) -> None:
        self.procs[i].terminate()
        self.procs[i].join(5)
        self.dead[i] = why

    def close(self) -> None:
        for i, p in enumerate(self.procs):
            if p.is_alive():
                self.jobs[i].put(None)
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join(5)


# ---------------------------------------------------------------------------------------------------
# The sections.


def section_a_eager(device: torch.device, sizes: Sizes, plan: Plan) -> list[dict]:
    rows = []
    for mode in MODES:
        row = {"precision": mode.precision, "layout": mode.layout, "compile": False, "batch": sizes.batch}
        try:
            row |= bench_mode(device, sizes, mode, False, plan.eager_s)
        except Exception as e:
            row["error"] = first_line(e)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        rows.append(row)
        say(f"(a) {mode} eager: " + (f"{row['images_per_s']:,.0f} images/s" if "images_per_s" in row
                                     else row["error"]))
    return rows


def section_a_compiled(pool: Pool, device: torch.device, sizes: Sizes, plan: Plan,
                       compile_deadline_s: float, really_compile: bool) -> list[dict]:
    """Every compiled mode compiles and warms up in its own process at once; then each is timed
    alone, one after another, while the others wait idle."""
    threads = max(1, (os.cpu_count() or 1) // len(MODES))
    for i, mode in enumerate(MODES):
        pool.send(i, ("bench", {"device": str(device), "precision": mode.precision, "layout": mode.layout,
                                "compile": really_compile, "compile_threads": threads, "sizes": sizes}))
    start = time.time()
    ready, errors = pool.collect("ready", range(len(MODES)), start + compile_deadline_s)
    rows = []
    for i, mode in enumerate(MODES):
        row = {"precision": mode.precision, "layout": mode.layout, "compile": True, "batch": sizes.batch,
               "parallel_compiles": len(MODES), "compile_threads": threads}
        if not really_compile:
            row["note"] = "CPU smoke: run eagerly in a worker, not compiled"
        if i in ready:
            row["setup_s"] = ready[i]["setup_s"]
            pool.send(i, ("go", plan.eager_s))
            done, errs = pool.collect("done", [i], time.time() + 60 + 20 * plan.eager_s)
            row |= done.get(i, {})
            if i in errs:
                row["error"] = errs[i]
        else:
            row["error"] = errors.get(i, "no answer")
        rows.append(row)
        say(f"(a) {mode} compiled: " + (f"{row['images_per_s']:,.0f} images/s, first step "
                                        f"{row['first_step_s']:.1f} s" if "images_per_s" in row
                                        else row["error"]))
    return rows


def section_b(data: Dataset, device: torch.device, sizes: Sizes, plan: Plan) -> dict:
    hp = trial_hparams(sizes)
    reset_peak(device)
    start = time.perf_counter()
    trial = Trial(data, device, hp, sizes.epochs)
    epochs = []
    while len(epochs) < sizes.epochs and (not epochs or time.perf_counter() - start < plan.trial_s):
        epochs.append(trial.run_epoch())
        e = epochs[-1]
        say(f"(b) epoch {e['epoch']}: {e['images_per_s']:,.0f} images/s, val_acc {e['val_acc']:.3f}")
    timed = epochs[1:] or epochs
    images, seconds = sum(e["images"] for e in timed), sum(e["train_s"] for e in timed)
    result = {"hp": hp, "mode": str(trial.mode), "epochs": epochs, "train_images": len(data.train_y),
              "val_images": len(data.val_y), "images_per_s": images / seconds if seconds else 0.0,
              "timed_epochs": len(timed), "wall_s": time.perf_counter() - start,
              "max_epochs": sizes.epochs}
    if device.type == "cuda":
        result["peak_mib"] = torch.cuda.max_memory_allocated(device) / MIB
    del trial
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def section_c(pool: Pool, data_sizes: Sizes, device: torch.device, window_s: float,
              ready_s: float) -> list[dict]:
    hp = trial_hparams(data_sizes)
    cpus = os.cpu_count() or 1
    rounds = []
    for n in data_sizes.processes:
        job = {"device": str(device), "train": data_sizes.train, "val": data_sizes.val, "hp": hp,
               "max_epochs": 1000, "window_s": window_s,
               "threads": 1 if device.type == "cpu" else max(1, cpus // n)}
        live = [i for i in range(len(pool.procs)) if i not in pool.dead][:n]
        result = {"n": n, "window_s": window_s, "threads": job["threads"], "rows": {}, "errors": {}}
        if len(live) < n:
            result["errors"][-1] = f"only {len(live)} worker processes left of {len(pool.procs)}"
            rounds.append(result)
            continue
        pool.stop.clear()
        for i in live:
            pool.send(i, ("trial", job))
        ready, errors = pool.collect("ready", live, time.time() + ready_s)
        result["errors"] |= errors
        start_at = time.time() + 0.5
        for i in ready:
            pool.send(i, ("go", start_at))
        if device.type == "cuda" and ready:
            time.sleep(max(0.0, start_at + window_s / 2 - time.time()))
            free, total = torch.cuda.mem_get_info(device)
            result["gpu_used_mib"] = (total - free) / MIB
        done, errors = pool.collect("done", list(ready), start_at + window_s + 60)
        pool.stop.set()
        result["rows"], result["errors"] = done, result["errors"] | errors
        _, errors = pool.collect("idle", list(done), time.time() + 60)
        rounds.append(result)
        rates = [r["images_per_s"] for r in done.values()]
        say(f"(c) {n} process(es): " + (f"mean {sum(rates) / len(rates):,.0f} images/s each" if rates
                                        else "no results") + (f", {len(result['errors'])} failed"
                                                              if result["errors"] else ""))
    return rounds


def section_d(device: torch.device, sizes: Sizes) -> dict:
    """Runs a trial's first epoch (train_epoch as the trainable calls it, in auto's mode) with a batch
    too big for the GPU, catching torch's out-of-memory error as trainables/classifier.py does; if no
    try runs out of memory, a plain allocation of twice the GPU's memory does."""
    mode = resolve_mode("auto", device)
    result: dict = {"mode": str(mode), "tries": []}
    gc.collect()
    torch.cuda.empty_cache()
    for batch, width in sizes.oom:
        hp = resolve({"batch_size": batch, "width": width})
        caught = _try_oom(result, batch, width, lambda: _oom_epoch(device, mode, batch, width, hp))
        if caught is not None:
            message = caught.splitlines()[0] if caught else ""
            # Worded as trainables/classifier.py's TrialOutOfMemory words it (copied: that module
            # imports Ray, which the GPU machine lacks).
            result["trial_message"] = (
                f"TrialOutOfMemory: out of memory on {device} at epoch 1 with batch_size={batch}, "
                f"model {MODEL} width={width} conv={hp['conv']}: lower batch_size or width, or give "
                f"trials more of a GPU ({message})")
            break
    if "first_line" not in result:
        total = torch.cuda.get_device_properties(device).total_memory
        _try_oom(result, None, None, lambda: torch.empty(2 * total, dtype=torch.uint8, device=device))
    # The process goes on: a normal step right after the error, at (a)'s batch and width.
    try:
        bench = StepBench(device, sizes.width, sizes.batch, mode, False)
        bench.run(2)
        result["after"] = f"a batch-{sizes.batch} step ran afterwards in the same process"
        del bench
    except Exception as e:
        result["after"] = f"a batch-{sizes.batch} step afterwards failed: {first_line(e)}"
    gc.collect()
    torch.cuda.empty_cache()
    result["allocated_after_mib"] = torch.cuda.memory_allocated(device) / MIB
    return result


def _oom_epoch(device: torch.device, mode: Mode, batch: int, width: float, hp: dict) -> None:
    torch.manual_seed(0)
    model = build_model(MODEL, CLASSES, 3, width=width).to(device, memory_format=mode.memory_format)
    optimizer = make_optimizer("sgd", model.parameters(), hp["lr"], hp["momentum"], hp["weight_decay"])
    schedule = make_schedule("cosine", optimizer, 1, 1)
    augment = BatchAugment((0.5,) * 3, (0.25,) * 3, crop_padding(32), True, mode.memory_format)
    generator = torch.Generator(device).manual_seed(0)
    x = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, device=device)
    y = torch.randint(0, CLASSES, (batch,), device=device)
    train_epoch(model, x, y, augment, optimizer, schedule, batch, 0.0, None, generator, mode.autocast_dtype)
    sync(device)


def _try_oom(result: dict, batch: int | None, width: float | None, work) -> str | None:
    """Runs `work`; on an out-of-memory error records it in `result` and returns its message."""
    what = f"batch {batch} width {width}" if batch else "a plain allocation of 2x the GPU's memory"
    reset_peak(torch.device("cuda", 0))
    start = time.perf_counter()
    message, outcome = None, ""
    try:
        work()
        outcome = f"ran, peak {torch.cuda.max_memory_allocated() / MIB:,.0f} MiB"
    except OOM_ERRORS as e:
        message = str(e).strip()
        result |= {"what": what, "seconds": time.perf_counter() - start,
                   "error_type": f"{type(e).__module__}.{type(e).__qualname__}",
                   "first_line": message.splitlines()[0] if message else "", "message": message}
        outcome = "out of memory"
    except Exception as e:  # not the error wanted here (a kernel's size limit, say): noted, go on
        outcome = f"failed otherwise: {first_line(e)}"
    gc.collect()
    torch.cuda.empty_cache()
    result["tries"].append(f"{what} ({outcome})")
    return message


# ---------------------------------------------------------------------------------------------------
# The report.


def say(text: str) -> None:
    print(f"gpu_check: {text}", flush=True)


def fmt(x, spec: str = ",.0f", missing: str = "-") -> str:
    return missing if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def machine(device: torch.device) -> list[str]:
    lines = [f"- torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN "
             f"{torch.backends.cudnn.version()}, Python {platform.python_version()}, numpy {np.__version__}"]
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count()
    lines.append(f"- CPUs: {os.cpu_count()} ({cpus} usable by this process); {platform.platform()}")
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        lines.append(f"- GPU: {torch.cuda.get_device_name(device)}, {p.total_memory / 2**30:.1f} GiB, "
                     f"compute capability {p.major}.{p.minor}, {p.multi_processor_count} multiprocessors; "
                     f"bf16 supported: {torch.cuda.is_bf16_supported()}")
        with warnings.catch_warnings():  # newer torch prefers its fp32_precision settings: a warning
            warnings.simplefilter("ignore")
            lines.append(f"- cudnn.benchmark {torch.backends.cudnn.benchmark} (as a trial leaves it), "
                         f"cudnn.allow_tf32 {torch.backends.cudnn.allow_tf32}, "
                         f"matmul.allow_tf32 {torch.backends.cuda.matmul.allow_tf32}")
    else:
        lines.append(f"- no GPU: run on the CPU ({torch.get_num_threads()} torch threads); "
                     f"the numbers below mean nothing")
    return lines


def write_report(path: Path, args, device: torch.device, sizes: Sizes, plan: Plan, data: Dataset | None,
                 a_rows: list[dict], b: dict | None, c: list[dict] | None, d: dict | None,
                 notes: list[str], total_s: float) -> dict:
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    out = ["# tune-run on one GPU: compute limit, trial loop, shared GPU, out of memory", "",
           f"{now}. Command: `{command}`" + (" (smoke: tiny sizes, numbers mean nothing)." if args.smoke
                                             else "."),
           f"Written by benchmarks/gpu_check.py in {total_s:.0f} s (budget {args.budget_s:.0f} s). "
           f"Everything below was measured by that run.", ""]
    out += machine(device)
    if data is not None:
        out.append(f"- data: {DATA.relative_to(HERE.parent)}, {len(data.train_y):,} CIFAR-10 train images "
                   f"(trained on) and {len(data.val_y):,} test images (the validation split), uint8 on the "
                   f"device")
    out.append(f"- model: ResNet-18 (core.models.build_model) at width {sizes.width}, batch {sizes.batch}, "
               f"32x32 images, {CLASSES} classes")
    out.append("")

    # Targets.
    targets = []
    share = target_share(c)
    share_target = (f">= {TARGET_TRIALS} trials sharing one GPU each keep >= {TARGET_SHARE} of a lone "
                    f"trial's images/s")
    if share is not None:
        met, text = share
        targets.append((share_target, text, "yes" if met else "no"))
    else:
        processes = ", ".join(map(str, sizes.processes))
        targets.append((share_target, f"not measured (processes {processes})", "-"))
    targets.append((f"the check runs in under {TIME_LIMIT_S // 60} minutes", f"{total_s:.0f} s",
                    "yes" if total_s < TIME_LIMIT_S else "no"))
    out += ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
    out += [f"| {t} | {m} | {ok} |" for t, m, ok in targets]
    out.append("")
    if notes:
        out += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]

    # (a)
    out += ["## (a) Compute limit of the train step", "",
            f"Forward, loss (core.losses), backward and SGD step (momentum 0.9) of ResNet-18 width "
            f"{sizes.width} on one random batch of {sizes.batch} already on the device and already "
            f"normalised: no data path, no augmentation. bf16 is torch.autocast; channels-last is the "
            f"model and the batch in torch.channels_last. Each mode: one first step timed apart (with "
            f"torch.compile it compiles), {sizes.warmup_steps} warm-up steps ({3 * sizes.warmup_steps} "
            f"with torch.compile), then about {plan.eager_s:.1f} s of steps between two device "
            f"synchronisations. The compiled modes compile at the same time in {len(MODES)} worker "
            f"processes (so their first-step seconds are under that sharing) and are then timed one at "
            f"a time.", "",
            "| precision | layout | torch.compile | images/s | ms/step | steps timed | first step s | "
            "peak MiB | note |", "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for r in a_rows:
        note = r.get("error") or r.get("note") or ""
        out.append(f"| {r['precision']} | {r['layout']} | {'on' if r['compile'] else 'off'} | "
                   f"{fmt(r.get('images_per_s'))} | {fmt(r.get('ms_per_step'), '.2f')} | "
                   f"{fmt(r.get('steps'), 'd')} | {fmt(r.get('first_step_s'), '.1f')} | "
                   f"{fmt(r.get('peak_mib'))} | {note} |")
    best = fastest(a_rows, False)
    best_c = fastest(a_rows, True)
    out.append("")
    if best:
        out.append(f"Fastest with torch.compile off: {best['precision']} {best['layout']}, "
                   f"{best['images_per_s']:,.0f} images/s.")
    if best_c:
        out.append(f"Fastest with torch.compile on: {best_c['precision']} {best_c['layout']}, "
                   f"{best_c['images_per_s']:,.0f} images/s"
                   + (f" ({best_c['images_per_s'] / best['images_per_s']:.2f}x the fastest eager mode)."
                      if best else "."))
    out.append("")

    # (b)
    out += ["## (b) core's epoch loop as a trial runs it", ""]
    if b is None:
        out += ["Not measured: " + (notes_for("b", notes) or "no data"), ""]
    else:
        hp = b["hp"]
        same = next((r for r in a_rows if not r["compile"] and f"{r['precision']} {r['layout']}" == b["mode"]
                     and "images_per_s" in r), None)
        out.append(
            f"trainables/classifier.py's set-up without Ray: precision `auto` -> **{b['mode']}**, the uint8 "
            f"arrays copied to the device once, core.augment.BatchAugment (random crop with padding "
            f"{crop_padding(32)}, horizontal flip, normalisation) in that layout, core.train.train_epoch, "
            f"then core.train.evaluate of core.inference.inference_copy(model) (batch "
            f"{1024 if device.type == 'cuda' else 128}) every epoch; torch.compile off (the trial default). "
            f"Hyperparameters: optimizer {hp['optimizer']}, lr {hp['lr']}, momentum {hp['momentum']}, "
            f"weight_decay {hp['weight_decay']}, schedule {hp['schedule']} over {b['max_epochs']} epochs "
            f"with {hp['warmup_epochs']} warm-up epoch(s), batch_size {hp['batch_size']}, "
            f"width {hp['width']}. "
            f"{b['train_images']:,} train images, {b['val_images']:,} validation images; epochs start "
            f"until {plan.trial_s:.0f} s have gone.")
        out.append("")
        ratio = f"{b['images_per_s'] / best['images_per_s']:.2f}" if best else "-"
        ratio_same = f"{b['images_per_s'] / same['images_per_s']:.2f}" if same else "-"
        out += ["| measure | value |", "|---|---:|",
                f"| train images/s (train_epoch's own figure, epochs 2-{b['epochs'][-1]['epoch']}) | "
                f"{b['images_per_s']:,.0f} |" if b["timed_epochs"] and len(b["epochs"]) > 1 else
                f"| train images/s (epoch 1 only) | {b['images_per_s']:,.0f} |",
                f"| ... against the fastest (a) mode with torch.compile off | {ratio} |",
                f"| ... against (a) in the same mode ({b['mode']}, compile off) | {ratio_same} |",
                f"| val_acc after {len(b['epochs'])} epoch(s) | {b['epochs'][-1]['val_acc']:.4f} |",
                f"| peak memory allocated, MiB | {fmt(b.get('peak_mib'))} |",
                f"| wall seconds of the section | {b['wall_s']:.1f} |", ""]
        out += ["| epoch | train_loss | val_loss | val_acc | train images/s | train s | eval s |",
                "|---:|---:|---:|---:|---:|---:|---:|"]
        for e in b["epochs"]:
            out.append(f"| {e['epoch']} | {e['train_loss']:.4f} | {e['val_loss']:.4f} | {e['val_acc']:.4f} | "
                       f"{e['images_per_s']:,.0f} | {e['train_s']:.2f} | {e['eval_s']:.2f} |")
        out.append("")

    # (c)
    out += ["## (c) Trials sharing one GPU", ""]
    if c is None:
        out += ["Not measured: " + (notes_for("c", notes) or "no data"), ""]
    else:
        window = c[0]["window_s"] if c else 0
        threads = ", ".join(f"{r['threads']} at N = {r['n']}" for r in c)
        out.append(
            f"N OS processes (multiprocessing, spawn) at once on the same device, as Ray runs trials with "
            f"fractional GPUs (no MPS): each one sets up (b)'s trial, runs one warm-up epoch, then all start "
            f"together and train, evaluating after every epoch as the trial does, for {window:.0f} s; each "
            f"keeps training, uncounted, until every one has finished its window, so they share the GPU "
            f"throughout. Train images/s is train_epoch's figure (what the trial reports); window images/s "
            f"counts the evaluation time too. The ratio is to the mean of the N = 1 round. Torch CPU threads "
            f"per process: {threads}. Peak memory is torch's allocator per process (its CUDA context, some "
            f"hundreds of MiB, comes on top); GPU in use is the whole device's, read half-way through the "
            f"window.")
        out.append("")
        lone = lone_rate(c)
        out += ["| N | process | train images/s | ratio to lone | window images/s | epochs | val_acc | "
                "peak allocated MiB | peak reserved MiB |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for rnd in c:
            for i, r in sorted(rnd["rows"].items()):
                ratio = f"{r['images_per_s'] / lone:.2f}" if lone else "-"
                out.append(f"| {rnd['n']} | {i} | {r['images_per_s']:,.0f} | {ratio} | "
                           f"{r['window_images_per_s']:,.0f} | {r['epochs']} | {fmt(r['val_acc'], '.3f')} | "
                           f"{fmt(r.get('peak_alloc_mib'))} | {fmt(r.get('peak_reserved_mib'))} |")
            for i, err in sorted(rnd["errors"].items()):
                out.append(f"| {rnd['n']} | {i if i >= 0 else '-'} | failed: {err} | | | | | | |")
        out += ["", "| N | mean train images/s per process | min ratio to lone | mean ratio | "
                "all N together, images/s | together / lone | GPU memory in use, MiB |",
                "|---:|---:|---:|---:|---:|---:|---:|"]
        for rnd in c:
            rates = [r["images_per_s"] for r in rnd["rows"].values()]
            if not rates:
                out.append(f"| {rnd['n']} | - | - | - | - | - | - |")
                continue
            mean, total = sum(rates) / len(rates), sum(rates)
            out.append(f"| {rnd['n']} | {mean:,.0f} | {fmt(min(rates) / lone if lone else None, '.2f')} | "
                       f"{fmt(mean / lone if lone else None, '.2f')} | {total:,.0f} | "
                       f"{fmt(total / lone if lone else None, '.2f')} | {fmt(rnd.get('gpu_used_mib'))} |")
        out.append("")

    # (d)
    out += ["## (d) Out of memory", ""]
    if d is None:
        out += ["Not measured: " + (notes_for("d", notes) or "no GPU"), ""]
    else:
        tried = "; ".join(d["tries"])
        out.append(f"A trial's first epoch (core.train.train_epoch in {d['mode']}, as the trainable calls "
                   f"it) with batches too big for the device; tried: {tried}.")
        out.append("")
        if "first_line" in d:
            out += [f"Caught `{d['error_type']}` from {d['what']} after {d['seconds']:.1f} s. Its first "
                    f"line, as torch words it:", "", "```", d["first_line"], "```", ""]
            if "trial_message" in d:
                out += ["What a user of tune-run sees (trainables/classifier.py turns the error into "
                        "TrialOutOfMemory, worded as below; built here the same way, since that module "
                        "imports Ray):", "", "```", d["trial_message"], "```", ""]
            else:
                out += ["No try on the trial path ran out of memory, so this is not the trainable's "
                        "error.", ""]
            if d["message"] != d["first_line"]:
                out += ["torch's whole message:", "", "```", d["message"], "```", ""]
        else:
            out += ["No out-of-memory error: every try fitted on this device.", ""]
        out += [f"Afterwards: {d['after']}; torch memory still allocated: "
                f"{d['allocated_after_mib']:,.0f} MiB.", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out))
    return {"targets": targets}


def notes_for(section: str, notes: list[str]) -> str:
    return "; ".join(n.split(": ", 1)[1] for n in notes if n.startswith(f"({section})"))


def fastest(rows: list[dict], compiled: bool) -> dict | None:
    ok = [r for r in rows if r["compile"] == compiled and "images_per_s" in r and "note" not in r]
    return max(ok, key=lambda r: r["images_per_s"]) if ok else None


def lone_rate(c: list[dict] | None) -> float | None:
    lone = next((r for r in c or [] if r["n"] == 1 and r["rows"]), None)
    if lone is None:
        return None
    rates = [r["images_per_s"] for r in lone["rows"].values()]
    return sum(rates) / len(rates)


def target_share(c: list[dict] | None) -> tuple[bool, str] | None:
    lone = lone_rate(c)
    shared = [r for r in c or [] if r["n"] >= TARGET_TRIALS]
    if not lone or not shared:
        return None
    parts, met = [], True
    for rnd in shared:
        rates = [r["images_per_s"] for r in rnd["rows"].values()]
        if len(rates) < rnd["n"]:
            parts.append(f"N={rnd['n']}: {len(rates)} of {rnd['n']} processes finished")
            met = False
            continue
        worst = min(rates) / lone
        met = met and worst >= TARGET_SHARE
        parts.append(f"N={rnd['n']}: worst process {worst:.2f}, mean {sum(rates) / len(rates) / lone:.2f} "
                     f"of lone {lone:,.0f} images/s")
    return met, "; ".join(parts)


# ---------------------------------------------------------------------------------------------------


def guarded(section: str, notes: list[str], fn, *args):
    """fn(*args), or None with a note (and the traceback on stderr) when it raises: the report is
    still written, with the other sections."""
    try:
        return fn(*args)
    except Exception as e:
        import traceback

        traceback.print_exc()
        notes.append(f"({section}): failed with {first_line(e)}")
        say(f"({section}) failed: {first_line(e)}")
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "RESULTS-gpu.md"), help="the markdown report")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="total seconds to size the sections to (default 420; 60 with --smoke)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check that the script works")
    parser.add_argument("--allow-cpu", action="store_true", help="run on the CPU when there is no GPU")
    args = parser.parse_args()
    args.budget_s = args.budget_s or (60.0 if args.smoke else 420.0)
    t0 = time.time()

    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        print(f"gpu_check: no CUDA GPU here (torch {torch.__version__}); nothing measured")
        return 0
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    if not cuda:
        torch.set_num_threads(1)  # a smoke check on a shared CPU: stay light
    sizes = SMOKE if args.smoke else FULL
    plan = Plan.from_budget(args.budget_s)
    deadline = t0 + args.budget_s
    notes: list[str] = []
    really_compile = cuda or not args.smoke
    log_dir = Path(tempfile.mkdtemp(prefix="gpu_check-"))

    data = None
    if DATA.exists():
        data = load_subset(sizes.train, sizes.val)
    else:
        say(f"{DATA} is missing (run benchmarks/make_gpu_subset.py); (b) and (c) are skipped")
        notes += [f"(b): {DATA.name} missing", f"(c): {DATA.name} missing"]

    # The worker processes start first (they import torch, no CUDA yet), all of them before any timing.
    for folder in ("bench", "trials"):
        (log_dir / folder).mkdir()
    bench_pool = Pool(len(MODES), log_dir / "bench")
    a_rows, b, c, d = [], None, None, None
    trial_pool = None
    try:
        if data is not None:
            trial_pool = Pool(max(sizes.processes), log_dir / "trials")
        bench_pool.collect("started", range(len(MODES)), time.time() + 120)
        if trial_pool is not None:
            trial_pool.collect("started", range(len(trial_pool.procs)), time.time() + 120)
        say(f"{device}: {torch.cuda.get_device_name(device) if cuda else 'CPU'}; workers started "
            f"in {time.time() - t0:.0f} s")

        a_rows = section_a_eager(device, sizes, plan)
        rounds = len(sizes.processes)
        reserve = plan.trial_s + 20 + rounds * (plan.window_s + 12) + 15
        # At least a minute to compile, even when the budget is small (a smoke run on a GPU).
        compile_s = min(plan.compile_s, deadline - time.time() - reserve)
        compile_s = max(60.0 if really_compile else 20.0, compile_s)
        a_rows += section_a_compiled(bench_pool, device, sizes, plan, compile_s, really_compile)
        bench_pool.close()

        if data is not None:
            b = guarded("b", notes, section_b, data, device, sizes, plan)
        if cuda:
            d = guarded("d", notes, section_d, device, sizes)
            if d is not None:
                say(f"(d) {d.get('first_line', 'no out-of-memory error')}")
        else:
            notes.append("(d): no GPU; an out-of-memory error is not provoked on the CPU")
        if trial_pool is not None:
            left = deadline - time.time() - 10
            window = plan.window_s
            if left < rounds * (window + 12):
                window = max(2.0, left / rounds - 12)
                notes.append(f"(c) window shortened to {window:.0f} s to fit the budget")
            c = guarded("c", notes, section_c, trial_pool, sizes, device, window, plan.ready_s)
    finally:
        bench_pool.close()
        if trial_pool is not None:
            trial_pool.close()

    total = time.time() - t0
    out = Path(args.out)
    write_report(out, args, device, sizes, plan, data, a_rows, b, c, d, notes, total)
    say(f"wrote {out} in {total:.0f} s (worker logs in {log_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
