"""A real search with `search: multifidelity` and promotion ASHA: the CLI in a subprocess, its
driver SIGKILLed once a trial has finished, then `--resume`. The searcher's saved observations
(Ray's searcher-state file) come back: what it had learnt before the kill is still there at the end,
though the trials that had finished never report again."""

from __future__ import annotations

import os
import pickle
import signal
import time

import pytest

from tests.conftest import injected
from tests.search.cli_search import MAX_EPOCHS, NUM_SAMPLES, Search, kill_group

pytestmark = pytest.mark.slow


def _searcher_state(folder) -> dict | None:
    """The newest saved state of the multi-fidelity searcher in the experiment folder."""
    states = sorted(folder.glob("searcher-state-*.pkl"), key=lambda p: p.stat().st_mtime)
    if not states:
        return None
    try:
        return pickle.loads(states[-1].read_bytes())
    except (EOFError, pickle.UnpicklingError, OSError):  # being copied
        return None


def test_a_multifidelity_search_resumes_with_what_its_searcher_learnt(image_folder, tmp_path):
    search = Search(tmp_path, image_folder, search="multifidelity", scheduler="asha")
    proc = search.start()
    deadline = time.time() + 300
    while time.time() < deadline:
        before = _searcher_state(search.folder)
        if before and before["results"].get(MAX_EPOCHS):
            break
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    else:
        pytest.fail("the searcher's state never held a trial that ran all its epochs")
    os.killpg(proc.pid, signal.SIGKILL)
    injected("driver SIGKILL")
    proc.communicate(timeout=60)
    kill_group(proc)

    resumed = search.run("--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert len(search.result_rows()) == NUM_SAMPLES
    after = _searcher_state(search.folder)
    for epoch, trials in before["results"].items():
        for trial, values in trials.items():
            assert after["results"][epoch].get(trial) == values, (epoch, trial)
    assert set(after["points"]) >= set(search.result_rows())  # every trial is in its model
