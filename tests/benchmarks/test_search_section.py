"""Tests of benchmarks/sections/search.py: the budget, the normalized regret, the report."""

from __future__ import annotations

import pytest

from benchmarks.sections.search import CURVE_POINTS, regret, report_search, summarise, yahpo_budget


def test_the_budget_is_yahpo_s_20_plus_40_sqrt_d_full_evaluations_in_epochs():
    assert yahpo_budget(7, 52) == 6543  # 125.83 full evaluations of 52 epochs


def test_regret_is_0_at_the_best_and_1_at_the_worst_either_way():
    assert regret(90.0, 90.0, 40.0, 1.0) == 0.0 and regret(40.0, 90.0, 40.0, 1.0) == 1.0
    assert regret(0.2, 0.2, 1.0, -1.0) == 0.0 and regret(0.6, 0.2, 1.0, -1.0) == pytest.approx(0.5)


def _replay(method, task, final, lowest, seed=0):
    return {"method": method, "task": task, "workers": 1, "seed": seed,
            "curve": [final] * CURVE_POINTS, "lowest": lowest, "highest": final, "trials": 1,
            "virtual_hours": 1.0, "wall_s": 0.1, "epochs": 10}


def test_pooled_regret_spans_every_method_s_evaluations_of_a_task_and_tasks_are_averaged():
    replays = [_replay("a", "t1", 90.0, 10.0), _replay("b", "t1", 50.0, 50.0),
               _replay("a", "t2", 1.0, 0.0), _replay("b", "t2", 0.5, 0.5)]
    reference = {"t1": {"best": 100.0, "worst": 0.0}, "t2": {"best": 1.0, "worst": 0.0}}
    out = summarise(replays, reference, "max")
    assert out["pooled"]["t1"] == {"best": 90.0, "worst": 10.0}
    row = next(r for r in out["rows"] if r["method"] == "b" and r["share"] == 1.0
               and r["normalisation"] == "pooled")
    # t1: (90 - 50) / (90 - 10) = 0.5; t2: (1 - 0.5) / (1 - 0) = 0.5
    assert row["mean"] == pytest.approx(0.5) and row["se"] == pytest.approx(0.0)
    fixed = next(r for r in out["rows"] if r["method"] == "b" and r["share"] == 1.0
                 and r["normalisation"] == "fixed")
    assert fixed["mean"] == pytest.approx(0.5)  # t1: (100 - 50) / 100; t2: 0.5


def test_the_report_renders_its_tables_and_a_verdict_per_target_without_the_searcher():
    replays = [_replay(m, "t1", v, 0.0) for m, v in (("random", 50.0), ("bohb", 80.0),
                                                      ("dehb", 70.0), ("random+asha", 60.0))]
    reference = {"t1": {"best": 100.0, "worst": 0.0, "configs": 10}}
    raw = {"surrogate": "s", "metric": "acc", "mode": "max", "budget_epochs": 100,
           "full_budget_epochs": 100, "dimensions": 2, "max_epochs": 10, "tasks": ["t1"],
           "all_tasks": ["t1", "t2"], "seeds": [0], "workers": [1],
           "methods": ["random", "bohb", "dehb", "random+asha"], "skipped": {"tune-run": "absent"},
           "default_searcher": "random", "default_method": "random+asha", "reference": reference,
           "costs": {"rung_decision": {"100": {"at_rung_ms": 0.1, "free_worker_ms": 0.2}},
                     "suggestion": {"random": {"100": 1.0}}},
           **summarise(replays, reference, "max"), "replays": replays}
    report = report_search({"search": raw})
    text = "\n".join(b if isinstance(b, str) else " ".join(b.header) for b in report.blocks)
    assert "A reduced protocol" in text and "`tune-run` (absent)" in text
    assert all(v.met is None for v in report.verdicts)  # no tune-run searcher, no 5,000 trials
