"""Whether channels-last is safe for one model on this CPU: a few train steps in a child process.

torch 2.14.1's fp32 channels-last backward crashes ("double free or corruption") or hangs on an AMD
EPYC with AVX2 only, for convolutions of 4 or 6 channels (../shared/repro/); NCHW runs there. Which
shapes die depends on the CPU, the threads and oneDNN's kernels, so no list written on one machine
can say. The probe runs the trial's own model, at its batch and image shape, its precision and its
threads, in a child process: two NCHW steps (the second times the model), then three channels-last
steps on the model as built and, where the trial removes channels, three more on the model pruned
to its final ratio (the narrowest shapes the trial will meet), on one thread and then on the
trial's threads. A child that gets through in time says the layout is safe; a crash, a hang or an
error says it is not, and the trial trains NCHW. The answer is kept per CPU, torch version and
model spec under the cache folder, so a search probes each shape once.

    python -m core.layout_probe  < probe.json    # the child's side; exit 0 when the steps ran
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.cache import cache_root

# Importing torch and one NCHW step: a slow machine's first import can take a while.
START_TIMEOUT_S = 180.0
# The channels-last steps may take this many NCHW steps' time (plus a margin for oneDNN's kernel
# generation) before the child counts as hung: a hang is told in seconds, not minutes.
HANG_STEPS, HANG_MARGIN_S = 30, 15.0
STEPS = 3


@dataclass(frozen=True)
class ProbeAnswer:
    safe: bool
    why: str  # for an unsafe layout: what the child did (a signal, a hang, an error)


def channels_last_is_safe(model_spec: dict[str, Any], shape: tuple[int, int, int], batch: int,
                          precision: str, threads: int) -> ProbeAnswer:
    """The (cached) answer for this model spec, image shape (C, H, W), batch, precision, threads."""
    job = {"model_spec": model_spec, "shape": list(shape), "batch": min(batch, 64),
           "precision": precision, "threads": threads}
    kept = _answer_file(job)
    if kept.exists():
        try:
            return ProbeAnswer(**json.loads(kept.read_text()))
        except (ValueError, TypeError, OSError):
            pass
    answer = _probe(job)
    _keep(kept, answer)
    return answer


def train_steps(model, layout: str, precision: str, shape: tuple[int, int, int], batch: int,
                num_classes: int, steps: int) -> None:
    """`steps` optimizer steps of `model` in `layout` and `precision` on random uint8 images made
    into batches the way a trial makes them (core/augment.py: its crop, flip and strides)."""
    import torch

    from core.augment import BatchAugment
    from core.precision import Mode
    from core.train import train_step

    mode = Mode(precision, layout)
    model = model.train().to(memory_format=mode.memory_format)
    c, h, w = shape
    augment = BatchAugment((0.5,) * c, (0.25,) * c, 4 if h >= 16 else 0, True, mode.memory_format)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3,
                                momentum=0.9)
    for _ in range(steps):
        x = torch.randint(0, 256, (batch, c, h, w), dtype=torch.uint8)
        y = torch.randint(0, num_classes, (batch,))
        train_step(model, augment.train(x), y, optimizer, None, 0.0, mode.autocast_dtype)


def _probe(job: dict[str, Any]) -> ProbeAnswer:
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root),
                                                                     os.environ.get("PYTHONPATH")]))}
    child = subprocess.Popen([sys.executable, "-m", "core.layout_probe"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_read_lines, args=(child.stdout, lines), daemon=True).start()
    errors: list[str] = []
    reader = threading.Thread(target=lambda: errors.extend(child.stderr), daemon=True)
    reader.start()
    child.stdin.write(json.dumps(job))
    child.stdin.close()
    try:
        nchw = lines.get(timeout=START_TIMEOUT_S)
        if nchw is not None:
            deadline = HANG_MARGIN_S + HANG_STEPS * float(nchw.split()[1])
            done = lines.get(timeout=deadline)
            if done is not None:
                lines.get(timeout=deadline)  # the end of output: the child is exiting
        child.wait(timeout=30)
    except (queue.Empty, subprocess.TimeoutExpired):
        child.kill()
        child.wait()
        return ProbeAnswer(False, "channels-last probe hung (no answer within "
                                  f"{HANG_STEPS} NCHW steps' time)")
    if child.returncode == 0:
        return ProbeAnswer(True, "")
    if child.returncode < 0:
        import signal

        return ProbeAnswer(False, f"channels-last probe died of "
                                  f"{signal.Signals(-child.returncode).name}")
    reader.join(timeout=5)  # the child has exited: its stderr ends
    last = ("".join(errors).strip().splitlines() or [f"exit {child.returncode}"])[-1][:200]
    return ProbeAnswer(False, f"channels-last probe failed: {last}")


def _read_lines(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _answer_file(job: dict[str, Any]) -> Path:
    import torch

    identity = json.dumps({"job": job, "cpu": _cpu_identity(), "torch": torch.__version__},
                          sort_keys=True, default=str)
    key = hashlib.sha1(identity.encode()).hexdigest()[:20]
    return cache_root() / "layout-probes" / f"{key}.json"


def _cpu_identity() -> str:
    from core.precision import cpu_flags, cpu_model

    return f"{cpu_model()} {' '.join(sorted(cpu_flags()))}"


def _keep(path: Path, answer: ProbeAnswer) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps({"safe": answer.safe, "why": answer.why}))
        os.replace(partial, path)
    except OSError:
        pass  # an unwritable cache only costs a probe next time


def _run_steps(job: dict[str, Any]) -> None:
    """The child: a timed NCHW step, then channels-last on the model as built and as pruned, on one
    thread and then on the trial's threads."""
    import copy

    import torch

    from core.trial import build_from_spec

    torch.manual_seed(0)
    spec, shape, batch = job["model_spec"], tuple(job["shape"]), job["batch"]
    model, _ = build_from_spec(spec)
    args = (job["precision"], shape, batch, spec["num_classes"])
    torch.set_num_threads(job["threads"])
    warm = copy.deepcopy(model)
    train_steps(warm, "nchw", *args, steps=1)  # the first step imports torch._dynamo: seconds
    start = time.perf_counter()
    train_steps(warm, "nchw", *args, steps=1)
    print("nchw", time.perf_counter() - start, flush=True)
    shapes = [model]
    if spec["prune_method"] == "channel" and spec["prune_ratio"] > 0:
        narrow, pruner = build_from_spec(spec)
        pruner.step(1)  # epochs=1: the final ratio, the narrowest layers
        shapes.append(narrow)
    # oneDNN's crash is heap corruption: on one thread it aborts every time, on several it may
    # pass, hang or abort. One thread first makes the answer the same on every run.
    for threads in sorted({1, job["threads"]}):
        torch.set_num_threads(threads)
        for net in shapes:
            train_steps(net, "channels_last", *args, steps=STEPS)
    print("ok", flush=True)


if __name__ == "__main__":
    _run_steps(json.loads(sys.stdin.read()))
