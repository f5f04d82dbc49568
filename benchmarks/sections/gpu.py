"""Section `gpu`: what one lent GPU does for tune-run's trials, with torch and core/ alone.

    python3 -m benchmarks.run --sections gpu [--budget-s 420]      # writes RESULTS-gpu.md

Needs no Ray, MLflow or Optuna (the device machine has none): trials are set up by
`core.trial.build_trial` and trained by its `run_epoch`, the very functions the trainable calls, on
benchmarks/data/cifar10-subset.npz (a CIFAR-10 subset small enough to travel with the working tree;
benchmarks/make_gpu_subset.py writes it). Six parts, one table or more each:

  (a) the compute limit of the train step (harness.StepLimit: `core.train.train_step` on one random
      batch kept on the GPU), fp32 and bf16, NCHW and channels-last, torch.compile off and on (the
      compiled modes compile in parallel worker processes, then are timed one at a time);
  (b) a trial's epochs as the trainable runs them (uint8 data on the GPU, batched augmentation, the
      precision and layout `auto` picks, evaluation of a BatchNorm-folded copy, the cost measured):
      images/s against (a), and the validation accuracy of each epoch;
  (c) 1, 2, 4 and 8 trial processes sharing the GPU at once, as Ray's fractional GPUs run them:
      each one's images/s and memory over the same time window;
  (d) a real CUDA out-of-memory error on the trial path: torch's message and the trial's
      (`core.trial.TrialOutOfMemory`, what a tune-run user sees);
  (e) each kind of model (section `models` on this device);
  (f) the mapped path: (b)'s trial on memory-mapped arrays, its batches streamed to the GPU.

Each part is time-boxed from --budget-s so that the whole run fits (the default, 420 s, keeps it
under 8 minutes). Without a CUDA GPU it says so in one line and writes nothing; --quick --allow-cpu
runs tiny sizes on the CPU to check that it works (its numbers mean nothing).
"""

from __future__ import annotations

import dataclasses
import gc
import math
import multiprocessing as mp
import os
import queue
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.harness import HERE, Context, Report, Section, Skipped, StepLimit, Table, Target, fmt
from core.data import Dataset
from core.hparams import resolve
from core.precision import Mode, resolve_mode
from core.streamed import StreamedImages
from core.trial import Trial, TrialOutOfMemory, build_trial

RESULTS = "RESULTS-gpu.md"
DATA = HERE / "data" / "cifar10-subset.npz"
MODEL = "resnet18"
TIME_LIMIT_S = 480  # the whole check in under 8 minutes
OOM_ERRORS = (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), TrialOutOfMemory)
MODES = [Mode(p, layout) for p in ("fp32", "bf16") for layout in ("nchw", "channels_last")]
MIB = 2**20

SHARED_GPU = Target(">= 4 trials sharing one GPU each keep >= 0.8 of a lone trial's images/s",
                    ">=", 0.8)
SHARED_TRIALS = 4  # the rounds SHARED_GPU is checked on: this many processes or more
MAPPED_GPU = Target("a trial on a mapped data set (batches streamed to the GPU) >= 0.9 of its "
                    "images/s with the data set copied to the GPU", ">=", 0.9)
IN_TIME = Target(f"the check runs in under {TIME_LIMIT_S // 60} minutes", "<", TIME_LIMIT_S)


@dataclass(frozen=True)
class Sizes:
    """How much work each part does; the time boxes come from --budget-s."""

    width: float  # ResNet-18 channel width in every part
    batch: int  # batch size of (a), (b) and (c)
    train: int | None  # subset train images used (None: all of them)
    val: int | None  # subset test images used as the validation split (None: all)
    epochs: int  # max_epochs of (b)'s trial (the length of its schedule)
    warmup_steps: int  # untimed steps before each timed (a) mode (after the compile step)
    processes: tuple[int, ...]  # trial processes sharing the GPU in (c)
    oom: tuple[tuple[int, float], ...]  # (batch, width) tried in turn until one runs out of memory


FULL = Sizes(1.0, 512, None, None, 15, 10, (1, 2, 4, 8), ((65536, 1.0), (65536, 2.0), (65536, 4.0)))
QUICK = Sizes(0.125, 32, 512, 256, 2, 2, (1, 2), ((65536, 1.0),))


@dataclass(frozen=True)
class Plan:
    """Seconds given to each part, from the total budget."""

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


def reset_peak(device: torch.device) -> None:
    """Starts torch's peak-memory count afresh (CUDA initialised first: the count needs it)."""
    if device.type == "cuda":
        torch.cuda.init()
        torch.cuda.reset_peak_memory_stats(device)


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


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
    return Dataset("cifar10-subset", classes, x, y.astype(np.int64), vx, vy.astype(np.int64),
                   vx[:0], vy[:0].astype(np.int64), mean, std, hflip=True)


def trial_hparams(sizes: Sizes, **overrides) -> dict:
    """The hyperparameters of every part's trial: the defaults, at the batch size and width of
    `sizes`, with the learning rate scaled by sqrt(batch / 128) from the default 0.1 at batch 128."""
    lr = round(0.1 * math.sqrt(sizes.batch / 128), 4)
    return resolve({"batch_size": sizes.batch, "width": sizes.width, "lr": lr,
                    "warmup_epochs": 1 if sizes.epochs >= 5 else 0} | overrides)


def new_trial(data: Dataset, device: torch.device, hp: dict, max_epochs: int) -> Trial:
    """A trial set up exactly as the trainable sets it up (precision auto, torch.compile off)."""
    return build_trial(data, device, model_name=MODEL, max_epochs=max_epochs, **hp)


def run_epoch(trial: Trial, epoch: int) -> dict:
    """One epoch of `trial` (`Trial.run_epoch`, as the trainable calls it) as a row of (b) / (c)."""
    start = time.perf_counter()
    result = trial.run_epoch(epoch)
    return {"epoch": epoch, "train_loss": result.stats.loss, "val_loss": result.val_loss,
            "val_acc": result.val_acc, "images": result.stats.images, "train_s": result.stats.seconds,
            "images_per_s": result.stats.images_per_s, "eval_s": result.eval_seconds,
            "epoch_s": time.perf_counter() - start, "sparsity": result.sparsity}


def bench_mode(device: torch.device, sizes: Sizes, mode: Mode, compile_: bool, seconds: float) -> dict:
    """One (a) row: the first step timed apart (it compiles, with torch.compile), then warm-up
    steps (more with torch.compile), then about `seconds` of timed steps."""
    reset_peak(device)
    bench = StepLimit(device, trial_hparams(sizes), mode, compile_)
    first_s = bench.run(1)
    bench.run(sizes.warmup_steps * (3 if compile_ else 1))
    row = bench.for_seconds(seconds) | {"first_step_s": first_s}
    if device.type == "cuda":
        row["peak_mib"] = torch.cuda.max_memory_allocated(device) / MIB
    return row


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
        torch.set_num_threads(1)  # a quick check on a shared CPU: stay light
    if job["compile"] and job.get("compile_threads"):
        try:
            import torch._inductor.config as inductor_config

            inductor_config.compile_threads = job["compile_threads"]
        except Exception:
            pass
    mode = Mode(job["precision"], job["layout"])
    reset_peak(device)
    start = time.perf_counter()
    bench = StepLimit(device, trial_hparams(job["sizes"]), mode, job["compile"])
    first_s = bench.run(1)
    ready_s = time.perf_counter() - start
    bench.run(job["sizes"].warmup_steps * 3)
    results.put(("ready", index, {"first_step_s": first_s, "setup_s": ready_s}))
    seconds = _wait_go(jobs)
    row = bench.for_seconds(seconds) | {"first_step_s": first_s}
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
    trial = new_trial(_WORKER_DATA[key], device, job["hp"], job["max_epochs"])
    warm = run_epoch(trial, 1)
    results.put(("ready", index, {"warmup_epoch_s": warm["epoch_s"]}))
    start_at = _wait_go(jobs)
    time.sleep(max(0.0, start_at - time.time()))
    epochs = []
    while time.time() < start_at + job["window_s"]:
        epochs.append(run_epoch(trial, 2 + len(epochs)))
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
    epoch = 2 + len(epochs)
    while not stop.is_set():
        run_epoch(trial, epoch)
        epoch += 1
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
        self.procs = [ctx.Process(target=_worker, name=f"gpu-{i}",
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
# The parts.


def part_a_eager(device: torch.device, sizes: Sizes, plan: Plan) -> list[dict]:
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


def part_a_compiled(pool: Pool, device: torch.device, sizes: Sizes, plan: Plan,
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
            row["note"] = "CPU quick run: run eagerly in a worker, not compiled"
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


def part_b(data: Dataset, device: torch.device, sizes: Sizes, plan: Plan) -> dict:
    hp = trial_hparams(sizes)
    reset_peak(device)
    start = time.perf_counter()
    trial = new_trial(data, device, hp, sizes.epochs)
    epochs = []
    while len(epochs) < sizes.epochs and (not epochs or time.perf_counter() - start < plan.trial_s):
        epochs.append(run_epoch(trial, len(epochs) + 1))
        e = epochs[-1]
        say(f"(b) epoch {e['epoch']}: {e['images_per_s']:,.0f} images/s, val_acc {e['val_acc']:.3f}")
    timed = epochs[1:] or epochs
    images, seconds = sum(e["images"] for e in timed), sum(e["train_s"] for e in timed)
    result = {"hp": hp, "mode": str(trial.mode), "eval_batch": trial.eval_batch,
              "data_path": "streamed" if isinstance(trial.x, StreamedImages) else "on the device",
              "steps_per_epoch": trial.steps_per_epoch, "epochs": epochs,
              "train_images": len(data.train_y), "val_images": len(data.val_y),
              "images_per_s": images / seconds if seconds else 0.0, "timed_epochs": len(timed),
              "wall_s": time.perf_counter() - start, "max_epochs": sizes.epochs}
    if device.type == "cuda":
        result["peak_mib"] = torch.cuda.max_memory_allocated(device) / MIB
    del trial
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def part_f(data: Dataset, device: torch.device, sizes: Sizes, plan: Plan) -> dict:
    """(b)'s trial on the same arrays memory-mapped from .npy files, as a trial reads a data set
    too big to ship through the object store (core/decoded_cache.py): on a GPU, its batches are
    copied as they are needed, overlapped with compute (core/streamed.py), not the data set once."""
    folder = Path(tempfile.mkdtemp(prefix="tune-run-gpu-mapped-"))
    try:
        arrays = {}
        for name in ("train_x", "val_x"):
            np.save(folder / f"{name}.npy", getattr(data, name))
            arrays[name] = np.load(folder / f"{name}.npy", mmap_mode="r")
        result = part_b(dataclasses.replace(data, **arrays), device, sizes, plan)
        for e in result["epochs"]:
            say(f"(f) epoch {e['epoch']}: {e['images_per_s']:,.0f} images/s ({result['data_path']})")
        return result
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def part_c(pool: Pool, sizes: Sizes, device: torch.device, window_s: float,
           ready_s: float) -> list[dict]:
    hp = trial_hparams(sizes)
    cpus = os.cpu_count() or 1
    rounds = []
    for n in sizes.processes:
        job = {"device": str(device), "train": sizes.train, "val": sizes.val, "hp": hp,
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
        pool.collect("idle", list(done), time.time() + 60)
        rounds.append(result)
        rates = [r["images_per_s"] for r in done.values()]
        say(f"(c) {n} process(es): " + (f"mean {sum(rates) / len(rates):,.0f} images/s each" if rates
                                        else "no results") + (f", {len(result['errors'])} failed"
                                                              if result["errors"] else ""))
    return rounds


def part_e(data: Dataset, device: torch.device, sizes: Sizes) -> list[dict]:
    """Section `models` on this device: the built-in ResNet-18 and two torchvision models, each a
    trial (`build_trial`, precision auto) against its bare train step in its fastest mode."""
    from benchmarks.sections import models

    model_sizes = models.Sizes(batch=sizes.batch, subset=len(data.train_y), epochs=2,
                               limit_steps=50 if device.type == "cuda" else 2)
    rows = models.measure_models(data, model_sizes, device)
    for row in rows:
        say(f"(e) {row['model']}: trial {row['trial']['images_per_s']:,.0f} images/s")
    return rows


def part_d(device: torch.device, sizes: Sizes) -> dict:
    """A trial's first epoch (`build_trial` and `run_epoch`, as the trainable runs them) with a
    batch too big for the GPU: the trial's own TrialOutOfMemory, and torch's error under it. If no
    try runs out of memory, a plain allocation of twice the GPU's memory does."""
    mode = resolve_mode("auto", device)
    result: dict = {"mode": str(mode), "tries": []}
    gc.collect()
    torch.cuda.empty_cache()
    for batch, width in sizes.oom:
        hp = trial_hparams(sizes, batch_size=batch, width=width)
        if _try_oom(result, batch, width, lambda: _oom_epoch(device, hp)) is not None:
            break
    if "first_line" not in result:
        total = torch.cuda.get_device_properties(device).total_memory
        _try_oom(result, None, None, lambda: torch.empty(2 * total, dtype=torch.uint8, device=device))
    # The process goes on: a normal step right after the error, at (a)'s batch and width.
    try:
        bench = StepLimit(device, trial_hparams(sizes), mode)
        bench.run(2)
        result["after"] = f"a batch-{sizes.batch} step ran afterwards in the same process"
        del bench
    except Exception as e:
        result["after"] = f"a batch-{sizes.batch} step afterwards failed: {first_line(e)}"
    gc.collect()
    torch.cuda.empty_cache()
    result["allocated_after_mib"] = torch.cuda.memory_allocated(device) / MIB
    return result


def _oom_epoch(device: torch.device, hp: dict) -> None:
    """One batch of random uint8 images (16 for validation) through a trial's first epoch."""
    rng = np.random.default_rng(0)
    n = hp["batch_size"]
    x = rng.integers(0, 256, (n + 16, 3, 32, 32), dtype=np.uint8)
    y = rng.integers(0, 10, n + 16).astype(np.int64)
    data = Dataset("random", [str(c) for c in range(10)], x[:n], y[:n], x[n:], y[n:], x[:0], y[:0],
                   (0.5,) * 3, (0.25,) * 3, hflip=True)
    trial = new_trial(data, device, hp, 1)
    trial.run_epoch(1)
    torch.cuda.synchronize(device)


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
        torch_error = e.__context__ if isinstance(e, TrialOutOfMemory) else e  # raised `from None`
        message = str(torch_error).strip()
        result |= {"what": what, "seconds": time.perf_counter() - start,
                   "error_type": f"{type(torch_error).__module__}.{type(torch_error).__qualname__}",
                   "first_line": message.splitlines()[0] if message else "", "message": message}
        if isinstance(e, TrialOutOfMemory):
            result["trial_message"] = f"TrialOutOfMemory: {e}"
        outcome = "out of memory"
    except Exception as e:  # not the error wanted here (a kernel's size limit, say): noted, go on
        outcome = f"failed otherwise: {first_line(e)}"
    gc.collect()
    torch.cuda.empty_cache()
    result["tries"].append(f"{what} ({outcome})")
    return message


def say(text: str) -> None:
    print(f"gpu: {text}", flush=True)


def guarded(part: str, notes: list[str], fn, *args):
    """fn(*args), or None with a note (and the traceback on stderr) when it raises: the report is
    still written, with the other parts."""
    try:
        return fn(*args)
    except Exception as e:
        traceback.print_exc()
        notes.append(f"({part}): failed with {first_line(e)}")
        say(f"({part}) failed: {first_line(e)}")
        return None


def device_lines(device: torch.device) -> list[str]:
    lines = [f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN "
             f"{torch.backends.cudnn.version()}, numpy {np.__version__}"]
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        lines.append(f"GPU: {torch.cuda.get_device_name(device)}, {p.total_memory / 2**30:.1f} GiB, "
                     f"compute capability {p.major}.{p.minor}, {p.multi_processor_count} multiprocessors; "
                     f"bf16 supported: {torch.cuda.is_bf16_supported()}")
        with warnings.catch_warnings():  # newer torch prefers its fp32_precision settings: a warning
            warnings.simplefilter("ignore")
            lines.append(f"cudnn.benchmark {torch.backends.cudnn.benchmark} (as a trial leaves it), "
                         f"cudnn.allow_tf32 {torch.backends.cudnn.allow_tf32}, "
                         f"matmul.allow_tf32 {torch.backends.cuda.matmul.allow_tf32}")
    else:
        lines.append(f"no GPU: run on the CPU ({torch.get_num_threads()} torch threads); "
                     f"the numbers below mean nothing")
    return lines


def run_gpu(ctx: Context) -> dict:
    budget = ctx.options.get("budget_s") or (60.0 if ctx.quick else 420.0)
    t0 = time.time()
    cuda = torch.cuda.is_available()
    if not cuda and not ctx.options.get("allow_cpu"):
        raise Skipped(f"no CUDA GPU here (torch {torch.__version__}); nothing measured")
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    if not cuda:
        torch.set_num_threads(1)  # a quick check on a shared CPU: stay light
    sizes: Sizes = ctx.sizes
    plan = Plan.from_budget(budget)
    deadline = t0 + budget
    notes: list[str] = []
    really_compile = cuda or not ctx.quick
    log_dir = Path(tempfile.mkdtemp(prefix="tune-run-gpu-logs-"))  # kept: the workers' logs

    data = None
    if DATA.exists():
        data = load_subset(sizes.train, sizes.val)
    else:
        say(f"{DATA} is missing (run python -m benchmarks.make_gpu_subset); (b) and (c) are skipped")
        notes += [f"(b): {DATA.name} missing", f"(c): {DATA.name} missing"]

    # The worker processes start first (they import torch, no CUDA yet), all of them before any timing.
    for folder in ("bench", "trials"):
        (log_dir / folder).mkdir()
    bench_pool = Pool(len(MODES), log_dir / "bench")
    a_rows, b, c, d, e, f = [], None, None, None, None, None
    trial_pool = None
    try:
        if data is not None:
            trial_pool = Pool(max(sizes.processes), log_dir / "trials")
        bench_pool.collect("started", range(len(MODES)), time.time() + 120)
        if trial_pool is not None:
            trial_pool.collect("started", range(len(trial_pool.procs)), time.time() + 120)
        say(f"{device}: {torch.cuda.get_device_name(device) if cuda else 'CPU'}; workers started "
            f"in {time.time() - t0:.0f} s")

        a_rows = part_a_eager(device, sizes, plan)
        rounds = len(sizes.processes)
        reserve = plan.trial_s + 20 + rounds * (plan.window_s + 12) + 15
        # At least a minute to compile, even when the budget is small (a quick run on a GPU).
        compile_s = min(plan.compile_s, deadline - time.time() - reserve)
        compile_s = max(60.0 if really_compile else 20.0, compile_s)
        a_rows += part_a_compiled(bench_pool, device, sizes, plan, compile_s, really_compile)
        bench_pool.close()

        if data is not None:
            b = guarded("b", notes, part_b, data, device, sizes, plan)
            e = guarded("e", notes, part_e, data, device, sizes)
            f = guarded("f", notes, part_f, data, device, sizes, plan)
        if cuda:
            d = guarded("d", notes, part_d, device, sizes)
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
            c = guarded("c", notes, part_c, trial_pool, sizes, device, window, plan.ready_s)
    finally:
        bench_pool.close()
        if trial_pool is not None:
            trial_pool.close()
    say(f"the worker processes' logs are in {log_dir}")
    data_line = None
    if data is not None:
        data_line = (f"{DATA.relative_to(HERE.parent)}, {len(data.train_y):,} CIFAR-10 train images "
                     f"(trained on) and {len(data.val_y):,} test images (the validation split), "
                     f"uint8 on the device")
    return {"device": str(device), "device_lines": device_lines(device), "data": data_line,
            "budget_s": budget, "plan": asdict(plan), "a": a_rows, "b": b, "c": c, "d": d, "e": e, "f": f,
            "notes": notes, "total_s": time.time() - t0}


# ---------------------------------------------------------------------------------------------------
# The report.


def _notes_for(part: str, notes: list[str]) -> str:
    return "; ".join(n.split(": ", 1)[1] for n in notes if n.startswith(f"({part})"))


def _fastest(rows: list[dict], compiled: bool) -> dict | None:
    ok = [r for r in rows if r["compile"] == compiled and "images_per_s" in r and "note" not in r]
    return max(ok, key=lambda r: r["images_per_s"]) if ok else None


def _lone_rate(c: list[dict] | None) -> float | None:
    lone = next((r for r in c or [] if r["n"] == 1 and r["rows"]), None)
    if lone is None:
        return None
    rates = [r["images_per_s"] for r in lone["rows"].values()]
    return sum(rates) / len(rates)


def _shared_verdict(c: list[dict] | None, processes: list[int]):
    lone = _lone_rate(c)
    shared = [r for r in c or [] if r["n"] >= SHARED_TRIALS]
    if not lone or not shared:
        return SHARED_GPU.check(None, f"not measured (processes {', '.join(map(str, processes))})")
    parts, worst_of_all = [], math.inf
    for rnd in shared:
        rates = [r["images_per_s"] for r in rnd["rows"].values()]
        if len(rates) < rnd["n"]:
            parts.append(f"N={rnd['n']}: {len(rates)} of {rnd['n']} processes finished")
            worst_of_all = 0.0
            continue
        worst = min(rates) / lone
        worst_of_all = min(worst_of_all, worst)
        parts.append(f"N={rnd['n']}: worst process {worst:.2f}, mean {sum(rates) / len(rates) / lone:.2f} "
                     f"of lone {lone:,.0f} images/s")
    return SHARED_GPU.check(worst_of_all, "; ".join(parts))


def report_gpu(r: dict) -> Report:
    g = r["gpu"]
    sizes = Sizes(**r["sizes"]["gpu"])  # lists where the dataclass has tuples: only read here
    plan = Plan(**g["plan"])
    a_rows, b, c, d, notes = g["a"], g["b"], g["c"], g["d"], g["notes"]
    cuda = g["device"].startswith("cuda")
    setup = [*g["device_lines"]]
    if g["data"]:
        setup.append(f"data: {g['data']}")
    setup.append(f"model: ResNet-18 (core.models.build_model) at width {sizes.width}, batch "
                 f"{sizes.batch}, 32x32 images, 10 classes")
    blocks: list = [f"Measured in {g['total_s']:.0f} s (budget {g['budget_s']:.0f} s) on {g['device']}.",
                    "\n".join(f"- {line}" for line in setup)]
    verdicts = [_shared_verdict(c, list(sizes.processes)),
                IN_TIME.check(g["total_s"], f"{g['total_s']:.0f} s")]
    if notes:
        blocks.append("Notes:\n\n" + "\n".join(f"- {n}" for n in notes))

    # (a)
    blocks += [
        "### (a) Compute limit of the train step",
        f"`core.train.train_step` (forward, loss, backward and SGD step, momentum 0.9) of ResNet-18 "
        f"width {sizes.width} on one random batch of {sizes.batch} already on the device and already "
        f"normalised: no data path, no augmentation. bf16 is torch.autocast; channels-last is the "
        f"model and the batch in torch.channels_last. Each mode: one first step timed apart (with "
        f"torch.compile it compiles), {sizes.warmup_steps} warm-up steps ({3 * sizes.warmup_steps} "
        f"with torch.compile), then about {plan.eager_s:.1f} s of steps between two device "
        f"synchronisations. The compiled modes compile at the same time in {len(MODES)} worker "
        f"processes (so their first-step seconds are under that sharing) and are then timed one at "
        f"a time.",
        Table(["precision", "layout", "torch.compile", "images/s", "ms/step", "steps timed",
               "first step s", "peak MiB", "note"],
              [[row["precision"], row["layout"], "on" if row["compile"] else "off",
                fmt(row.get("images_per_s")), fmt(row.get("ms_per_step"), ".2f"),
                fmt(row.get("steps"), "d"), fmt(row.get("first_step_s"), ".1f"),
                fmt(row.get("peak_mib")), row.get("error") or row.get("note") or ""]
               for row in a_rows])]
    best, best_c = _fastest(a_rows, False), _fastest(a_rows, True)
    fastest = []
    if best:
        fastest.append(f"Fastest with torch.compile off: {best['precision']} {best['layout']}, "
                       f"{best['images_per_s']:,.0f} images/s.")
    if best_c:
        fastest.append(f"Fastest with torch.compile on: {best_c['precision']} {best_c['layout']}, "
                       f"{best_c['images_per_s']:,.0f} images/s"
                       + (f" ({best_c['images_per_s'] / best['images_per_s']:.2f}x the fastest eager "
                          "mode)." if best else "."))
    if fastest:
        blocks.append(" ".join(fastest))

    # (b)
    blocks.append("### (b) A trial's epochs as the trainable runs them")
    if b is None:
        blocks.append("Not measured: " + (_notes_for("b", notes) or "no data"))
    else:
        hp = b["hp"]
        same = next((row for row in a_rows if not row["compile"] and "images_per_s" in row
                     and f"{row['precision']} {row['layout']}" == b["mode"]), None)
        blocks.append(
            f"`core.trial.build_trial` and `Trial.run_epoch`, the functions the trainable calls, "
            f"without Ray: precision `auto` -> **{b['mode']}**, the uint8 arrays copied to the device "
            f"once, core.augment.BatchAugment (random crop with padding 4, horizontal flip, "
            f"normalisation) in that layout, core.train.train_epoch, pruning's step, then "
            f"core.train.evaluate of a BatchNorm-folded copy (batch {b.get('eval_batch', '-')}) and "
            f"the model's cost (core.cost) every epoch; torch.compile off (the trial default). "
            f"Hyperparameters: optimizer {hp['optimizer']}, lr {hp['lr']}, momentum {hp['momentum']}, "
            f"weight_decay {hp['weight_decay']}, schedule {hp['schedule']} over {b['max_epochs']} "
            f"epochs with {hp['warmup_epochs']} warm-up epoch(s), batch_size {hp['batch_size']}, "
            f"width {hp['width']}. {b['train_images']:,} train images, {b['val_images']:,} validation "
            f"images; epochs start until {plan.trial_s:.0f} s have gone.")
        ratio = f"{b['images_per_s'] / best['images_per_s']:.2f}" if best else "-"
        ratio_same = f"{b['images_per_s'] / same['images_per_s']:.2f}" if same else "-"
        several = b["timed_epochs"] and len(b["epochs"]) > 1
        blocks.append(Table(["measure", "value"], [
            [f"train images/s (train_epoch's own figure, epochs 2-{b['epochs'][-1]['epoch']})"
             if several else "train images/s (epoch 1 only)", f"{b['images_per_s']:,.0f}"],
            ["... against the fastest (a) mode with torch.compile off", ratio],
            [f"... against (a) in the same mode ({b['mode']}, compile off)", ratio_same],
            [f"val_acc after {len(b['epochs'])} epoch(s)", f"{b['epochs'][-1]['val_acc']:.4f}"],
            ["peak memory allocated, MiB", fmt(b.get("peak_mib"))],
            ["wall seconds of the part", f"{b['wall_s']:.1f}"]]))
        blocks.append(Table(["epoch", "train_loss", "val_loss", "val_acc", "train images/s",
                             "train s", "eval s"],
                            [[e["epoch"], f"{e['train_loss']:.4f}", f"{e['val_loss']:.4f}",
                              f"{e['val_acc']:.4f}", f"{e['images_per_s']:,.0f}", f"{e['train_s']:.2f}",
                              f"{e['eval_s']:.2f}"] for e in b["epochs"]]))

    # (c)
    blocks.append("### (c) Trials sharing one GPU")
    if c is None:
        blocks.append("Not measured: " + (_notes_for("c", notes) or "no data"))
    else:
        window = c[0]["window_s"] if c else 0
        threads = ", ".join(f"{rnd['threads']} at N = {rnd['n']}" for rnd in c)
        blocks.append(
            f"N OS processes (multiprocessing, spawn) at once on the same device, as Ray runs trials "
            f"with fractional GPUs (no MPS): each one sets up (b)'s trial, runs one warm-up epoch, then "
            f"all start together and train, evaluating after every epoch as the trial does, for "
            f"{window:.0f} s; each keeps training, uncounted, until every one has finished its window, "
            f"so they share the GPU throughout. Train images/s is train_epoch's figure (what the trial "
            f"reports); window images/s counts the evaluation time too. The ratio is to the mean of "
            f"the N = 1 round. Torch CPU threads per process: {threads}. Peak memory is torch's "
            f"allocator per process (its CUDA context, some hundreds of MiB, comes on top); GPU in use "
            f"is the whole device's, read half-way through the window.")
        lone = _lone_rate(c)
        rows = []
        for rnd in c:
            for i, row in sorted(rnd["rows"].items(), key=lambda kv: int(kv[0])):
                rows.append([rnd["n"], i, f"{row['images_per_s']:,.0f}",
                             f"{row['images_per_s'] / lone:.2f}" if lone else "-",
                             f"{row['window_images_per_s']:,.0f}", row["epochs"],
                             fmt(row["val_acc"], ".3f"), fmt(row.get("peak_alloc_mib")),
                             fmt(row.get("peak_reserved_mib"))])
            for i, err in sorted(rnd["errors"].items(), key=lambda kv: int(kv[0])):
                rows.append([rnd["n"], i if int(i) >= 0 else "-", f"failed: {err}", "", "", "", "",
                             "", ""])
        blocks.append(Table(["N", "process", "train images/s", "ratio to lone", "window images/s",
                             "epochs", "val_acc", "peak allocated MiB", "peak reserved MiB"], rows))
        summary = []
        for rnd in c:
            rates = [row["images_per_s"] for row in rnd["rows"].values()]
            if not rates:
                summary.append([rnd["n"], "-", "-", "-", "-", "-", "-"])
                continue
            mean, total = sum(rates) / len(rates), sum(rates)
            summary.append([rnd["n"], f"{mean:,.0f}", fmt(min(rates) / lone if lone else None, ".2f"),
                            fmt(mean / lone if lone else None, ".2f"), f"{total:,.0f}",
                            fmt(total / lone if lone else None, ".2f"), fmt(rnd.get("gpu_used_mib"))])
        blocks.append(Table(["N", "mean train images/s per process", "min ratio to lone",
                             "mean ratio", "all N together, images/s", "together / lone",
                             "GPU memory in use, MiB"], summary))

    # (d)
    blocks.append("### (d) Out of memory")
    if d is None:
        blocks.append("Not measured: " + (_notes_for("d", notes) or ("no GPU" if not cuda else "-")))
    else:
        blocks.append(f"A trial's first epoch (`build_trial` and `run_epoch` in {d['mode']}, as the "
                      f"trainable runs them) with batches too big for the device; tried: "
                      f"{'; '.join(d['tries'])}.")
        if "first_line" in d:
            blocks += [f"Caught `{d['error_type']}` from {d['what']} after {d['seconds']:.1f} s. Its "
                       f"first line, as torch words it:", f"```\n{d['first_line']}\n```"]
            if "trial_message" in d:
                blocks += ["What a user of tune-run sees (the trial's own error, raised by "
                           "`Trial.run_epoch`):", f"```\n{d['trial_message']}\n```"]
            else:
                blocks.append("The error came outside the trial's training steps (or from the "
                              "plain allocation), so the trial did not word it.")
            if d["message"] != d["first_line"]:
                blocks += ["torch's whole message:", f"```\n{d['message']}\n```"]
        else:
            blocks.append("No out-of-memory error: every try fitted on this device.")
        blocks.append(f"Afterwards: {d['after']}; torch memory still allocated: "
                      f"{d['allocated_after_mib']:,.0f} MiB.")
    # (e)
    blocks.append("### (e) Each kind of model: a trial against its bare train step")
    if not g.get("e"):
        blocks.append("Not measured: " + (_notes_for("e", notes) or "-"))
    else:
        from benchmarks.sections.models import models_report

        part = models_report(g["e"], "", f"On {g['device']}, every mode (no layout probe on a "
                                         f"GPU), batch {sizes.batch}.")
        blocks += part.blocks
        verdicts += part.verdicts
    # (f)
    blocks.append("### (f) The mapped path: batches streamed to the GPU")
    f = g.get("f")
    if not f or not b:
        blocks.append("Not measured: " + (_notes_for("f", notes) or "no data"))
    else:
        ratio = f["images_per_s"] / b["images_per_s"] if b["images_per_s"] else 0.0
        blocks += [
            "(b)'s trial again, on the same arrays memory-mapped from .npy files as a trial maps "
            "the node's decoded cache when the data set was too big to ship: the images stay in "
            "host memory and each batch is gathered into pinned memory and copied on a side "
            "stream while the previous batch computes (core/streamed.py).",
            Table(["data", "data path", "train images/s", "peak MiB", "val_acc"],
                  [[label, r["data_path"], f"{r['images_per_s']:,.0f}", fmt(r.get("peak_mib")),
                    f"{r['epochs'][-1]['val_acc']:.4f}"]
                   for label, r in (("arrays in memory (b)", b), ("memory-mapped (f)", f))])]
        if f["data_path"] == "streamed":
            verdicts.append(MAPPED_GPU.check(ratio, f"{ratio:.2f} ({f['images_per_s']:,.0f} / "
                                                    f"{b['images_per_s']:,.0f})"))
    return Report("The GPU check: (a) compute limit, (b) a trial's epochs, (c) a shared GPU, (d) out of "
                  "memory, (e) each kind of model, (f) the mapped path",
                  blocks, verdicts)


SECTIONS = (
    Section("gpu", "one GPU, with torch and core/ only: compute limit, a trial's epochs, 1-8 trials "
            "sharing it, out of memory", RESULTS, run_gpu, report_gpu, (SHARED_GPU, MAPPED_GPU, IN_TIME),
            FULL, QUICK, default=False),
)
