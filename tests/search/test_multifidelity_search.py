"""A real search with `search: multifidelity` and promotion ASHA: the CLI in a subprocess, its
driver SIGKILLed once a trial has finished, then `--resume`. The searcher's saved observations
(Ray's searcher-state file) come back: what it had learnt before the kill is still there at the end,
though the trials that had finished never report again."""

from __future__ import annotations

import pickle

import pytest

from tests.search.cli_search import (
    MAX_EPOCHS,
    NUM_SAMPLES,
    Search,
    sigkill_driver,
    wait_while_running,
)

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

    def learnt_a_whole_trial() -> dict | None:
        state = _searcher_state(search.folder)
        return state if state and state["results"].get(MAX_EPOCHS) else None

    before = wait_while_running(proc, learnt_a_whole_trial,
                                "saved a searcher state holding a trial that ran all its epochs")
    sigkill_driver(proc)

    resumed = search.run("--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert len(search.result_rows()) == NUM_SAMPLES
    after = _searcher_state(search.folder)
    for epoch, trials in before["results"].items():
        for trial, values in trials.items():
            assert after["results"][epoch].get(trial) == values, (epoch, trial)
    assert set(after["points"]) >= set(search.result_rows())  # every trial is in its model
