"""Promotion ASHA (Li et al. 2020, Algorithm 2): rungs, promotions, and a real search with it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from ray.tune import ExperimentAnalysis

from search.place.experiment_folder import result_rows
from search.scheduling.promotion import Rungs, rung_milestones
from tests.conftest import REPO, search_runs, write_space


@pytest.mark.parametrize("grace,eta,max_epochs,expected", [
    (1, 2, 4, [1, 2]),  # the benchmark search: rungs at 1 and 2, the end at 4
    (1, 3, 9, [1, 3]),
    (1, 3, 30, [1, 3, 9, 27]),
    (2, 2, 6, [2, 4]),
    (3, 3, 3, []),  # grace period = max_epochs: nothing to judge before the end
    (1, 2.5, 20, [1, 2, 6, 16]),  # 2.5 and 6.25 round to whole epochs
])
def test_rungs_are_grace_times_powers_of_the_reduction_factor(grace, eta, max_epochs, expected):
    assert rung_milestones(grace, eta, max_epochs) == expected


def _rungs(values: dict[str, float], eta: float = 2, mode: str = "max") -> Rungs:
    rungs = Rungs([1, 2], eta, mode)
    for trial, value in values.items():
        rungs.record(trial, 1, value)
    return rungs


def test_the_top_fraction_of_a_rung_is_promotable():
    rungs = _rungs({"a": 0.3, "b": 0.5, "c": 0.1, "d": 0.4})
    assert rungs.top(1) == ["b", "d"]  # floor(4 / 2) = 2 of 4
    assert rungs.next_promotion({"a", "b", "c", "d"}) == ("b", 1)


def test_a_lone_trial_at_a_rung_waits_for_others():
    # floor(1 / 2) = 0: the first trial at a rung cannot know it is in the top half yet.
    assert _rungs({"a": 0.9}).next_promotion({"a"}) is None


def test_each_trial_is_promoted_once_from_a_rung():
    rungs = _rungs({"a": 0.3, "b": 0.5, "c": 0.1, "d": 0.4})
    rungs.promote("b", 1)
    assert rungs.next_promotion({"a", "b", "c", "d"}) == ("d", 1)
    rungs.promote("d", 1)
    assert rungs.next_promotion({"a", "b", "c", "d"}) is None


def test_more_trials_at_a_rung_make_more_promotable():
    rungs = _rungs({"a": 0.9, "b": 0.1})
    rungs.promote("a", 1)
    assert rungs.next_promotion({"b"}) is None
    rungs.record("c", 1, 0.2)
    rungs.record("d", 1, 0.3)
    assert rungs.next_promotion({"b", "c", "d"}) == ("d", 1)  # now the top 2 of 4: a and d


def test_higher_rungs_are_promoted_first():
    rungs = _rungs({"a": 0.9, "b": 0.8, "c": 0.1, "d": 0.2})
    rungs.promote("a", 1)
    rungs.promote("b", 1)
    rungs.record("a", 2, 0.95)
    rungs.record("b", 2, 0.85)
    assert rungs.next_promotion({"a", "d"}) == ("a", 2)


def test_min_mode_promotes_the_lowest():
    rungs = _rungs({"a": 0.3, "b": 0.5, "c": 0.1, "d": 0.4}, mode="min")
    assert rungs.top(1) == ["c", "a"]


def test_nan_and_missing_values_rank_last_and_are_never_promoted():
    rungs = _rungs({"a": float("nan"), "b": None, "c": 0.1, "d": 0.2})
    assert rungs.top(1) == ["d", "c"]
    rungs = _rungs({"a": float("nan"), "b": float("nan")})
    assert rungs.top(1) == []


def test_worst_waiting_is_the_lowest_rung_then_the_lowest_value():
    rungs = _rungs({"a": 0.9, "b": 0.8, "c": 0.1})
    rungs.record("a", 2, 0.2)
    assert rungs.worst_waiting({"a", "b", "c"}) == "c"
    assert rungs.worst_waiting({"a", "b"}) == "b"


def test_pareto_rank_lets_a_fast_trial_go_on_that_accuracy_alone_would_stop():
    # (val_acc max, latency_ms min) at a rung of 4: the best 2 go on. By accuracy alone: a and b.
    # By Pareto rank, "fast" is on the rung's front (nothing is both more accurate and faster),
    # and b is not (a beats it in both): a and fast go on.
    rungs = Rungs([1], 2, "max", also=("min",))
    for trial_id, acc, ms in [("a", 0.8, 4.0), ("b", 0.7, 5.0), ("fast", 0.5, 1.0), ("c", 0.4, 6.0)]:
        rungs.record(trial_id, 1, acc, (ms,))
    assert rungs.pareto_ranks(1) == {"a": 1, "fast": 1, "b": 2, "c": 3}
    assert rungs.top(1) == ["a", "fast"]  # within a rank, the first objective decides
    assert "Pareto rank 2 of the 4 trials at the rung, the best 2 go on" == rungs.standing("b", 1)
    by_accuracy = Rungs([1], 2, "max")
    for trial_id, acc in [("a", 0.8), ("b", 0.7), ("fast", 0.5), ("c", 0.4)]:
        by_accuracy.record(trial_id, 1, acc)
    assert by_accuracy.top(1) == ["a", "b"] and by_accuracy.standing("b", 1) == ""


def test_within_a_pareto_rank_the_ends_of_the_front_go_on_first():
    # Four trials all on the rung's front; 2 go on: the most accurate and the fastest (the front's
    # ends, infinite crowding distance), not the two most accurate.
    rungs = Rungs([1], 2, "max", also=("min",))
    for trial_id, acc, ms in [("acc", 0.8, 8.0), ("acc2", 0.78, 7.0), ("mid", 0.6, 3.0),
                              ("fast", 0.4, 1.0)]:
        rungs.record(trial_id, 1, acc, (ms,))
    assert set(rungs.pareto_ranks(1).values()) == {1}
    assert rungs.top(1) == ["acc", "fast"]


def test_pareto_rank_puts_a_missing_objective_last():
    rungs = Rungs([1], 2, "max", also=("min",))
    rungs.record("a", 1, 0.5, (2.0,))
    rungs.record("no-latency", 1, 0.9, (None,))
    rungs.record("no-acc", 1, None, (1.0,))
    rungs.record("b", 1, 0.4, (3.0,))
    # A trial missing an objective ranks after every trial that has them all.
    assert rungs.top(1) == ["a", "b"]


def test_the_cut_is_the_worst_value_still_in_the_top_fraction():
    assert _rungs({"a": 0.3, "b": 0.5, "c": 0.1, "d": 0.4}).cut(1) == 0.4  # top 2 of 4: b, d
    assert _rungs({"a": 0.3, "b": 0.5, "c": 0.1, "d": 0.4}, mode="min").cut(1) == 0.3
    assert _rungs({"a": 0.9}).cut(1) is None  # floor(1 / 2) = 0: no cut yet
    assert _rungs({"a": 0.9}).value("a", 1) == 0.9 and _rungs({"a": None}).value("a", 1) is None


# A real search through the CLI: 8 trials, rungs at epochs 1 and 2, at most 4 epochs, 2 at once.
NUM_SAMPLES, MAX_EPOCHS, ETA = 8, 4, 2


@pytest.fixture(scope="module")
def promotion_search(image_folder, tmp_path_factory):
    work = tmp_path_factory.mktemp("promotion")
    settings = {
        "dataset": "imagefolder", "data_dir": str(image_folder), "num_samples": NUM_SAMPLES,
        "max_epochs": MAX_EPOCHS, "grace_period": 1, "reduction_factor": ETA,
        "scheduler": "asha", "seed": 5, "experiment": "promotion", "name": "promo",
        "max_concurrent": 2,
        "storage": str(work / "results"),
    }
    space = write_space(work / "space.py", settings, """
        "lr": tune.loguniform(1e-4, 0.1),
        "width": 0.0625,
        "batch_size": 16,
        "_fault": {"kind": "slow", "seconds": 1.0},  # epochs long enough to see them overlap
    """)
    uri = f"sqlite:///{work}/mlflow.db"
    proc = subprocess.run(
        [sys.executable, "-m", "search.cli", str(space), "--tracking-uri", uri],
        cwd=work, capture_output=True, text=True, timeout=600,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(work),
             "TUNE_RUN_TEST_FAULTS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = ExperimentAnalysis(str(work / "results" / "promo")).trials
    return trials, {t.trial_id: result_rows(t.path) for t in trials}, uri


@pytest.mark.slow
def test_no_trial_is_left_paused_and_each_ends_at_a_rung_or_the_end(promotion_search):
    trials, rows, _ = promotion_search
    assert len(trials) == NUM_SAMPLES
    assert {t.status for t in trials} == {"TERMINATED"}
    for trial_id, history in rows.items():
        epochs = [int(r["training_iteration"]) for r in history]
        assert epochs == list(range(1, len(epochs) + 1)), (trial_id, epochs)  # none trained twice
        assert epochs[-1] in (1, 2, MAX_EPOCHS), (trial_id, epochs)


@pytest.mark.slow
def test_the_best_of_each_rung_were_promoted_and_the_rest_stopped_there(promotion_search):
    _, rows, _ = promotion_search
    for milestone in (1, 2):
        reached = {t: h[milestone - 1]["val_acc"] for t, h in rows.items() if len(h) >= milestone}
        went_on = {t for t in reached if len(rows[t]) > milestone}
        best = sorted(reached, key=reached.get, reverse=True)[:int(len(reached) / ETA)]
        # Values can tie; a trial tied with the last of the top may stand in for it.
        cut = reached[best[-1]] if best else float("inf")
        assert all(t in went_on or reached[t] == cut for t in best), (milestone, reached, went_on)


@pytest.mark.slow
def test_promotion_trains_about_successive_halvings_epochs_not_fifos(promotion_search):
    _, rows, _ = promotion_search
    epochs = sum(len(h) for h in rows.values())
    # Successive halving needs 8 + 4 + 2 * 2 = 16 epochs; FIFO 32. Asynchrony may promote a few
    # trials more than the final top half.
    assert 16 <= epochs <= 22, epochs


@pytest.mark.slow
def test_mlflow_records_the_rung_each_trial_stopped_at(promotion_search):
    _, rows, uri = promotion_search
    _, _, children = search_runs(uri, "promotion")
    assert len(children) == NUM_SAMPLES
    for child in children:
        tags = child.data.tags
        epochs = len(rows[tags["tune_run.trial_id"]])
        assert tags["tune_run.epochs"] == str(epochs)
        if epochs == MAX_EPOCHS:
            assert tags["tune_run.status"] == "completed"
        else:
            assert tags["tune_run.status"] == "stopped_early"
            assert tags["tune_run.stopped_at_rung"] == {1: "1", 2: "2"}[epochs]
        assert child.info.status == "FINISHED"
        assert tags["tune_run.precision"] in ("fp32", "bf16")
        # Channels-last, or NCHW with the reason where this CPU's probe refused 4 channels (AVX2).
        assert tags["tune_run.layout"] == "channels_last" or tags["tune_run.layout_reason"]


@pytest.mark.slow
def test_paused_trials_do_not_hold_a_worker(promotion_search):
    # With max_concurrent 2, two trials train at once even while others wait at rungs: some epoch
    # of one trial overlaps an epoch of another.
    _, rows, _ = promotion_search
    spans = [(trial, r["timestamp"] - r["time_this_iter_s"], r["timestamp"])
             for trial, history in rows.items() for r in history]
    overlapping = {(a, b) for a, start_a, end_a in spans for b, start_b, end_b in spans
                   if a < b and start_a < end_b - 0.5 and start_b < end_a - 0.5}
    assert len(overlapping) >= 3, overlapping
