"""No combination of width, threads, layout, precision and convolution crashes oneDNN.

Round 1 saw torch 2.14's oneDNN convolution backward die (SIGSEGV, double free) on channels-last CPU
batches of few channels with one thread. Each combination here trains one step, forward and
backward, on batches made the way a trial makes them (core.augment's crop, flip and normalise, so
the same strides), in a process of its own: a crash fails that one test instead of the suite.
"""

from __future__ import annotations

import itertools
import multiprocessing

import pytest

from core.precision import LAYOUTS
from tests.core import train_step_probe

WIDTHS = (0.125, 0.25, 0.5, 1.0)
THREADS = (1, 2)
PRECISIONS = ("fp32", "bf16")
CONVS = ("standard", "separable")
CHANNELS = (1, 3)  # grey (digits) and colour images
COMBINATIONS = list(itertools.product(WIDTHS, THREADS, LAYOUTS, PRECISIONS, CONVS, CHANNELS))


@pytest.fixture(scope="module")
def context():
    # A fork server that imported torch once: each combination forks from it in milliseconds,
    # and no child inherits OpenMP threads already started (forking those can deadlock).
    ctx = multiprocessing.get_context("forkserver")
    # torch.optim imports torch._dynamo on first use: 3 s a process unless the server holds it.
    ctx.set_forkserver_preload(["tests.core.train_step_probe", "torch._dynamo"])
    return ctx


@pytest.mark.parametrize("width,threads,layout,precision,conv,channels", COMBINATIONS,
                         ids=lambda v: str(v))
def test_train_step_runs_in_its_own_process(context, width, threads, layout, precision, conv,
                                            channels):
    process = context.Process(target=train_step_probe.one_step,
                              args=(width, threads, layout, precision, conv, channels))
    process.start()
    process.join(timeout=120)
    if process.is_alive():
        process.kill()
        pytest.fail("hung for 120 s")
    # A signal shows as a negative exit code (-11: SIGSEGV, -6: SIGABRT from a double free).
    assert process.exitcode == 0, f"exit code {process.exitcode}"
