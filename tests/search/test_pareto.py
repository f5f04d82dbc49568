"""Tests of search/scheduling/pareto.py: the front, the best model within a latency budget, and what Optuna is
told about trials that did not run to the end."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pytest
from optuna.samplers import TPESampler
from optuna.trial import TrialState
from ray import tune

from search.door.spec import build_spec
from search.scheduling.pareto import (
    DOMINATED,
    EARLY,
    NO_VALUE,
    ON_FRONT,
    FinalResultsOptuna,
    Objective,
    best_row,
    front,
    hypervolume_2d,
    judged_on_last_epoch,
    pareto_rows,
    write_front,
)

ACC, LAT = Objective("val_acc", "max"), Objective("latency_ms", "min")
BOTH = [ACC, LAT]


def test_dominance_needs_at_least_as_good_everywhere_and_better_somewhere():
    # Of two points, the front drops one only where the other dominates it.
    a = {"val_acc": 0.9, "latency_ms": 2.0}

    def kept_beside(b: dict[str, float]) -> set[str]:
        return front({"a": a, "b": b}, BOTH)

    assert kept_beside({"val_acc": 0.8, "latency_ms": 2.0}) == {"a"}
    assert kept_beside({"val_acc": 0.8, "latency_ms": 3.0}) == {"a"}
    assert kept_beside({"val_acc": 0.95, "latency_ms": 3.0}) == {"a", "b"}  # a trade-off
    assert kept_beside(dict(a)) == {"a", "b"}  # equal points do not dominate each other


def test_the_front_is_every_point_nothing_dominates():
    points = {"fast": {"val_acc": 0.6, "latency_ms": 1.0}, "mid": {"val_acc": 0.8, "latency_ms": 2.0},
              "slow": {"val_acc": 0.9, "latency_ms": 5.0}, "bad": {"val_acc": 0.7, "latency_ms": 3.0},
              "twin": {"val_acc": 0.8, "latency_ms": 2.0}}
    assert front(points, BOTH) == {"fast", "mid", "slow", "twin"}
    assert front(points, [ACC]) == {"slow"}  # one objective: the best alone


def test_hypervolume_of_a_known_front():
    # Points (acc, ms) (0.9, 5), (0.8, 2) against reference (0, 10): as minimisation of (-acc, ms),
    # the union of [−0.9, 0] x [5, 10] and [−0.8, 0] x [2, 10]: 0.9*5 + 0.8*3 = 6.9.
    pts = [{"val_acc": 0.9, "latency_ms": 5.0}, {"val_acc": 0.8, "latency_ms": 2.0},
           {"val_acc": 0.5, "latency_ms": 6.0}]  # dominated: adds nothing
    assert hypervolume_2d(pts, BOTH, {"val_acc": 0.0, "latency_ms": 10.0}) == pytest.approx(6.9)
    assert hypervolume_2d([], BOTH, {"val_acc": 0.0, "latency_ms": 10.0}) == 0


def test_nondominated_sorting_peels_fronts_in_layers():
    from search.scheduling.pareto import nondominated_layers

    # Every coordinate maximised.
    points = {"a": (3, 1), "b": (1, 3), "c": (2, 2), "d": (1, 1), "e": (0, 0), "f": (2, 2)}
    assert nondominated_layers(points) == {"a": 1, "b": 1, "c": 1, "f": 1, "d": 2, "e": 3}


def test_crowding_distance_favours_the_ends_and_sparse_parts_of_a_layer():
    from search.scheduling.pareto import crowding_distances

    points = {"a": (0.0, 4.0), "b": (1.0, 3.0), "c": (3.0, 1.0), "d": (4.0, 0.0)}
    distance = crowding_distances(points, dict.fromkeys(points, 1))
    assert distance["a"] == distance["d"] == math.inf
    # b's neighbours span 3 of 4 in each coordinate; c's too: equal, and finite.
    assert distance["b"] == pytest.approx(1.5) and distance["c"] == pytest.approx(1.5)


# --- a search's trials --------------------------------------------------------------------------

@dataclass
class FakeTrial:  # what pareto_rows reads of Ray's Trial
    trial_id: str
    config: dict = field(default_factory=dict)


def _spec(tmp_path, settings=None, space=None):
    settings = {"objectives": {"val_acc": "max", "latency_ms": "min"}, "max_epochs": 4,
                "storage": str(tmp_path)} | (settings or {})
    return build_spec(Path("space.py"), settings, space or {"lr": tune.uniform(0.01, 0.1)})


def _history(epochs, acc, ms, **last):
    rows = [{"training_iteration": e, "val_acc": acc * e / epochs, "latency_ms": ms * 2}
            for e in range(1, epochs)]
    return rows + [{"training_iteration": epochs, "val_acc": acc, "latency_ms": ms, **last}]


def test_trials_stopped_early_are_never_on_the_front(tmp_path):
    histories = [
        (FakeTrial("a"), _history(4, 0.9, 5.0)),
        (FakeTrial("b"), _history(4, 0.7, 2.0)),
        (FakeTrial("c"), _history(4, 0.6, 3.0)),  # dominated by b
        (FakeTrial("early"), _history(2, 0.95, 0.5)),  # would dominate all, at epoch 2 of 4
        (FakeTrial("diverged"), _history(4, 0.99, 0.1, diverged=1)),
        (FakeTrial("none"), []),
    ]
    rows = {r["trial"]: r for r in pareto_rows(_spec(tmp_path), histories)}
    assert {t: r["pareto"] for t, r in rows.items()} == {
        "a": ON_FRONT, "b": ON_FRONT, "c": DOMINATED, "early": EARLY, "diverged": EARLY,
        "none": NO_VALUE}
    # Values are those of the last epoch: the model the trial ships.
    assert rows["b"]["latency_ms"] == 2.0 and rows["b"]["val_acc"] == 0.7


def test_the_best_model_is_the_most_accurate_front_trial_within_the_budget(tmp_path):
    histories = [(FakeTrial("slow"), _history(4, 0.9, 5.0)), (FakeTrial("mid"), _history(4, 0.8, 2.0)),
                 (FakeTrial("fast"), _history(4, 0.6, 1.0)), (FakeTrial("early"), _history(1, 0.85, 1.5))]
    rows = pareto_rows(_spec(tmp_path), histories)
    assert best_row(rows, BOTH, None)[0]["trial"] == "slow"
    assert best_row(rows, BOTH, 3.0)[0]["trial"] == "mid"
    assert best_row(rows, BOTH, 1.0)[0]["trial"] == "fast"  # the budget is inclusive
    row, why = best_row(rows, BOTH, 0.5)
    assert row is None and "fastest takes 1 ms" in why


def test_ties_in_the_first_objective_go_to_the_faster(tmp_path):
    histories = [(FakeTrial("x"), _history(4, 0.8, 3.0)), (FakeTrial("y"), _history(4, 0.8, 2.0))]
    rows = pareto_rows(_spec(tmp_path), histories)
    assert best_row(rows, BOTH, None)[0]["trial"] == "y"


def test_the_front_files(tmp_path):
    spec = _spec(tmp_path)
    histories = [(FakeTrial("a"), _history(4, 0.9, 5.0)), (FakeTrial("b"), _history(4, 0.7, 2.0)),
                 (FakeTrial("c"), _history(2, 0.5, 1.0))]
    files = write_front(spec, pareto_rows(spec, histories), tmp_path)
    assert [f.name for f in files] == ["pareto.csv", "pareto.png"]
    lines = (tmp_path / "pareto.csv").read_text().splitlines()
    assert lines[0].startswith("trial,pareto,epochs,val_acc,latency_ms")
    assert [line.split(",")[1] for line in lines[1:]] == [ON_FRONT, ON_FRONT, EARLY]
    assert (tmp_path / "pareto.png").stat().st_size > 10_000


def test_which_searches_judge_trials_at_their_last_epoch(tmp_path):
    single = {"objectives": None}
    assert judged_on_last_epoch(_spec(tmp_path))  # several objectives
    assert not judged_on_last_epoch(_spec(tmp_path, single))
    channel = {"lr": 0.1, "prune_method": "channel", "prune_ratio": tune.choice([0.0, 0.5])}
    assert judged_on_last_epoch(_spec(tmp_path, single, channel))  # the model shrinks late
    unpruned = {"lr": tune.choice([0.1]), "prune_method": "channel", "prune_ratio": 0.0}
    assert not judged_on_last_epoch(_spec(tmp_path, single, unpruned))
    either = {"lr": 0.1, "prune_method": tune.choice(["unstructured", "channel"]), "prune_ratio": 0.5}
    assert judged_on_last_epoch(_spec(tmp_path, single, either))


# --- Optuna -------------------------------------------------------------------------------------

def _searcher(objectives, max_epochs=4):
    searcher = FinalResultsOptuna(objectives, max_epochs, sampler=TPESampler(seed=0))
    # What Ray's Tuner does: the Tuner's single metric (the first objective, for early stopping).
    assert searcher.set_search_properties("val_acc", "max", {"lr": tune.uniform(0.01, 0.1)})
    return searcher


def _states(searcher) -> list[tuple[TrialState, list[float] | None]]:
    study = searcher._ot_study  # Ray's OptunaSearch exposes no getter of its study
    return [(t.state, t.values) for t in study.trials]


def test_a_trial_stopped_early_is_told_to_optuna_as_pruned_not_complete():
    # Ray calls on_trial_complete with the last result of a trial ASHA stopped: epoch 2 of 4.
    searcher = _searcher(BOTH)
    for trial_id in ("early", "full", "failed"):
        assert searcher.suggest(trial_id)["lr"] > 0
    searcher.on_trial_complete("early", {"training_iteration": 2, "val_acc": 0.99, "latency_ms": 0.1})
    searcher.on_trial_complete("full", {"training_iteration": 4, "val_acc": 0.7, "latency_ms": 2.0})
    searcher.on_trial_complete("failed", {"training_iteration": 4, "val_acc": 0.1}, error=True)
    assert _states(searcher) == [(TrialState.PRUNED, None), (TrialState.COMPLETE, [0.7, 2.0]),
                                 (TrialState.FAIL, None)]


def test_several_objectives_make_a_multi_objective_study_whatever_the_tuner_says():
    study = _searcher(BOTH)._ot_study
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE,
                                optuna.study.StudyDirection.MINIMIZE]


def test_one_objective_prunes_low_fidelity_results_too():
    searcher = _searcher([ACC], max_epochs=3)
    searcher.suggest("a"), searcher.suggest("b"), searcher.suggest("c")
    searcher.on_trial_result("a", {"training_iteration": 1, "val_acc": 0.3})
    searcher.on_trial_complete("a", {"training_iteration": 1, "val_acc": 0.3})
    searcher.on_trial_complete("b", {"training_iteration": 3, "val_acc": 0.6})
    searcher.on_trial_complete("c", {"training_iteration": 3, "val_acc": math.nan, "diverged": 1})
    states = _states(searcher)
    assert states[0][0] == TrialState.PRUNED and states[1] == (TrialState.COMPLETE, [0.6])
    assert states[2][0] == TrialState.PRUNED  # diverged: not a finished value either
    assert len(searcher._ot_study.directions) == 1


def test_a_trial_the_restored_study_never_asked_for_is_adopted_with_its_own_configuration():
    # A searcher state saved before the experiment state: the restored study lacks trial "late".
    searcher = _searcher([ACC], max_epochs=2)
    searcher.suggest("known")
    late = {"config/lr": 0.042}
    searcher.on_trial_result("late", {"training_iteration": 1, "val_acc": 0.3, **late})
    searcher.on_trial_complete("late", {"training_iteration": 2, "val_acc": 0.5, **late})
    searcher.on_trial_complete("never-reported")  # nothing known of it: nothing told, no error
    adopted = searcher._ot_study.trials[-1]
    assert adopted.params == {"lr": 0.042} and adopted.state == TrialState.COMPLETE
    assert adopted.values == [0.5] and adopted.intermediate_values == {1: 0.3}
    assert len(searcher._ot_study.trials) == 2


# --- a real multi-objective search --------------------------------------------------------------

@pytest.mark.slow
def test_a_search_for_accuracy_against_latency(image_folder, tmp_path):
    import pickle
    import subprocess
    import sys

    from tests.conftest import REPO, search_runs, write_space

    settings = {"dataset": "imagefolder", "data_dir": str(image_folder), "num_samples": 8,
                "max_epochs": 3, "grace_period": 1, "reduction_factor": 2, "search": "optuna",
                "objectives": {"val_acc": "max", "latency_ms": "min"}, "seed": 3,
                "promote_by": "pareto",
                "storage": str(tmp_path / "results"), "experiment": "pareto", "name": "pareto"}
    space = write_space(tmp_path / "pareto.py", settings, """
        "width": tune.choice([0.0625, 0.125, 0.25]),
        "prune_method": "channel",
        "prune_ratio": tune.choice([0.0, 0.5]),
        "lr": tune.loguniform(0.02, 0.2),
        "batch_size": 16,
    """)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = subprocess.run([sys.executable, "-m", "search.cli", str(space), "--tracking-uri", uri,
                           "--max-latency-ms", "1000"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Pareto front (" in proc.stdout

    client, parents, children = search_runs(uri, "pareto")
    assert len(children) == 8
    last = {c.data.tags["tune_run.trial_id"]: c for c in children}
    standing = {t: c.data.tags["tune_run.pareto"] for t, c in last.items()}
    epochs = {t: int(c.data.metrics["epoch"]) if "epoch" in c.data.metrics else
              len(client.get_metric_history(c.info.run_id, "val_acc")) for t, c in last.items()}
    # A trial stopped early is marked so, never on the front; every trial that ran all 3 epochs is
    # on the front or dominated, and the front is exactly what nothing dominates.
    for t in last:
        assert (standing[t] == EARLY) == (epochs[t] < 3), (t, standing[t], epochs[t])
    full = {t: {"val_acc": c.data.metrics["val_acc"], "latency_ms": c.data.metrics["latency_ms"]}
            for t, c in last.items() if epochs[t] == 3}
    assert {t for t, s in standing.items() if s == ON_FRONT} == front(full, BOTH)

    # The parent run holds the front, and the best model is the most accurate front trial.
    parent = parents[0]
    files = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/pareto.csv", "report/pareto.png"} <= files
    best = parent.data.tags.get("tune_run.best_trial_id") or parent.data.params.get("best_trial_id")
    on_front = [t for t, s in standing.items() if s == ON_FRONT]
    assert best == max(on_front, key=lambda t: (full[t]["val_acc"], -full[t]["latency_ms"]))
    assert "Pareto front" in parent.data.tags["mlflow.note.content"]
    # The model MLflow holds is that trial's last, as small as it reported (pruned channels gone).
    assert parent.data.metrics["model_params_nonzero"] == last[best].data.metrics["params"]

    # Optuna learnt only from trials that ran to the end: the others are PRUNED, not COMPLETE.
    state_file = next((tmp_path / "results" / "pareto").glob("searcher-state-*.pkl"))
    study = pickle.loads(state_file.read_bytes())["_ot_study"]
    told = {t.number: t for t in study.trials}
    assert len(study.directions) == 2
    assert sum(t.state == TrialState.COMPLETE for t in told.values()) == len(full)
    assert all(len(t.values) == 2 for t in told.values() if t.state == TrialState.COMPLETE)
    assert sum(t.state == TrialState.PRUNED for t in told.values()) == 8 - len(full)
