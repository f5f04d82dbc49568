"""No mode a trial can train in crashes or hangs on this CPU, whatever the model, width or pruned
shape: each combination of model, threads, layout and precision either runs one train step in a
process of its own, or is channels-last and refused by the trial's own probe (core/layout_probe.py),
so that the trial trains NCHW, which its own combination shows runs.

On an AMD EPYC with AVX2 only, torch 2.14.1's fp32 channels-last backward of a ResNet-18 with 4 or 6
channels dies ("double free or corruption") on one thread and hangs on two (../shared/repro/); the
narrow widths, the channel-pruned shapes and torchvision's small models here reach those shapes.
"""

from __future__ import annotations

import itertools
import multiprocessing
from pathlib import Path

import pytest

from core import layout_probe
from core.precision import LAYOUTS, cpu_has_fast_bf16
from core.trial import model_spec
from tests.core import train_step_probe

pytestmark = pytest.mark.slow  # about 3 min on an AVX2-only CPU, where crashes are probed

THREADS = (1, 2)
# bf16 where this CPU runs it natively: without AMX or AVX512-BF16 it is emulated, `auto` never picks
# it, and a width-1.0 step takes over 30 s.
PRECISIONS = ("fp32", "bf16") if cpu_has_fast_bf16() else ("fp32",)
TINY_USER_MODEL = f"{Path(__file__).resolve().parents[2] / 'spaces/models/tiny.py'}:build"
# A raw step that has not finished in this long counts as hung (the slowest case takes ~2 s).
HANG_S = 15
SLOW_S = 60  # a second wait for a case that is only slow (the machine is busy)


def _spec(name, channels=3, prune_ratio=0.0, **options):
    spec = model_spec(name, 10, channels, width=1.0, activation="relu", norm="batch",
                      conv="standard", dropout=0.0, init="default", prune_ratio=prune_ratio,
                      prune_method="channel" if prune_ratio else "unstructured", given=options)
    spec["options"] |= options
    return spec


def _models():
    """(id, spec, image shape): every kind, ResNet-18 from 4 channels up, channel-pruned shapes."""
    for width, conv, channels in itertools.product((0.0625, 0.09375, 0.125, 0.25, 1.0),
                                                   ("standard", "separable"), (1, 3)):
        yield (f"resnet18-w{width}-{conv}-c{channels}",
               _spec("resnet18", channels, width=width, conv=conv), (channels, 32, 32))
    for width in (0.125, 0.25):  # channel pruning to 0.75 keeps half: 4 and 8 first-stage channels
        yield (f"resnet18-w{width}-pruned", _spec("resnet18", prune_ratio=0.75, width=width),
               (3, 32, 32))
    yield "mobilenet_v3_small", _spec("mobilenet_v3_small"), (3, 32, 32)
    yield "mobilenet_v3_small-c1", _spec("mobilenet_v3_small", 1), (1, 32, 32)
    yield "mobilenet_v3_small-pruned", _spec("mobilenet_v3_small", prune_ratio=0.5), (3, 32, 32)
    yield "user-tiny-w0.125", _spec(TINY_USER_MODEL, width=0.125), (3, 16, 16)
    try:
        import timm  # noqa: F401
    except ImportError:
        return
    yield "timm-mobilenetv3_small_050", _spec("timm/mobilenetv3_small_050"), (3, 32, 32)
    yield "timm-resnet10t-pruned", _spec("timm/resnet10t", prune_ratio=0.5), (3, 32, 32)


CASES = [pytest.param(spec, threads, layout, precision, shape,
                      id=f"{name}-t{threads}-{layout}-{precision}")
         for (name, spec, shape), threads, layout, precision
         in itertools.product(list(_models()), THREADS, LAYOUTS, PRECISIONS)]


@pytest.fixture(scope="module")
def context():
    # A fork server that imported torch once: each combination forks from it in milliseconds,
    # and no child inherits OpenMP threads already started (forking those can deadlock).
    ctx = multiprocessing.get_context("forkserver")
    # torch.optim imports torch._dynamo on first use: 3 s a process unless the server holds it.
    ctx.set_forkserver_preload(["tests.core.train_step_probe", "torch._dynamo"])
    return ctx


@pytest.fixture
def probe_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNE_RUN_CACHE", str(tmp_path))
    monkeypatch.setattr(layout_probe, "HANG_MARGIN_S", 2.0)  # tiny models: a hang shows sooner


@pytest.mark.parametrize("spec,threads,layout,precision,shape", CASES)
def test_a_trial_never_trains_in_a_mode_that_crashes(context, probe_cache, spec, threads, layout,
                                                     precision, shape):
    process = context.Process(target=train_step_probe.one_step,
                              args=(spec, threads, layout, precision, shape))
    process.start()
    process.join(timeout=HANG_S)
    answer = None
    if process.is_alive() and layout == "channels_last":
        answer = probe(spec, threads, precision, shape)
        if answer.safe:  # a busy machine makes a step slow, not endless: give it longer once
            process.join(timeout=SLOW_S)
    if process.is_alive():
        process.kill()
        process.join()
        outcome = f"hung for {HANG_S} s" + (f" and {SLOW_S} s more" if answer and answer.safe else "")
    elif process.exitcode == 0:
        return
    else:  # a signal shows as a negative exit code (-11: SIGSEGV, -6: SIGABRT from a double free)
        outcome = f"exit code {process.exitcode}"
    assert layout == "channels_last", f"NCHW, the safe mode, failed: {outcome}"
    answer = answer or probe(spec, threads, precision, shape)
    assert not answer.safe, f"channels-last {outcome}, yet the trial's probe passed it"


def probe(spec, threads, precision, shape) -> layout_probe.ProbeAnswer:
    """The trial's own verdict on channels-last for the case."""
    return layout_probe.channels_last_is_safe(spec, shape, train_step_probe.BATCH, precision,
                                              threads)
