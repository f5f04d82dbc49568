"""Whether channels-last is safe for one model on this CPU: a few train steps in a child process.

torch 2.14.1's fp32 channels-last backward crashes ("double free or corruption") or hangs on an AMD
EPYC with AVX2 only, for convolutions of 4 or 6 channels (../shared/repro/); NCHW runs there. Which
shapes die depends on the CPU, the threads and oneDNN's kernels, so no list written on one machine
can say. The probe runs the trial's own model, at its batch and image shape, its precision and its
threads, for three steps, forward and backward, in a child process: one that exits 0 in time says
the layout is safe; a crash, a hang or an error says it is not, and the trial trains NCHW. The
answer is kept per CPU, torch version and model shape under the cache folder, so a search probes
each shape once.

    python -m core.layout_probe  < probe.json    # the child's side; exit 0 when the steps ran
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.cache import cache_root

PROBE_TIMEOUT_S = 120.0
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


def _probe(job: dict[str, Any]) -> ProbeAnswer:
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root),
                                                                     os.environ.get("PYTHONPATH")]))}
    try:
        done = subprocess.run([sys.executable, "-m", "core.layout_probe"], input=json.dumps(job),
                              capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        return ProbeAnswer(False, f"channels-last probe hung (no answer in {PROBE_TIMEOUT_S:.0f} s)")
    if done.returncode == 0:
        return ProbeAnswer(True, "")
    if done.returncode < 0:
        import signal

        name = signal.Signals(-done.returncode).name
        return ProbeAnswer(False, f"channels-last probe died of {name}")
    last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1][:200]
    return ProbeAnswer(False, f"channels-last probe failed: {last}")


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
    import torch

    from core.models import build_model

    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    spec = job["model_spec"]
    model = build_model(spec["name"], spec["num_classes"], spec["in_channels"], **spec["options"])
    model = model.train().to(memory_format=torch.channels_last)
    c, h, w = job["shape"]
    x = torch.randn(job["batch"], c, h, w).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, job["model_spec"]["num_classes"], (job["batch"],))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    dtype = torch.bfloat16 if job["precision"] == "bf16" else None
    for _ in range(STEPS):
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


if __name__ == "__main__":
    _run_steps(json.loads(sys.stdin.read()))
