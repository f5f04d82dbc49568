"""Tests of benchmarks/virtual/: the virtual clock, what the replay builds, the surrogate reader."""

from __future__ import annotations

import json

import pytest

from benchmarks.virtual.methods import (
    BY_NAME,
    METHODS,
    Brackets,
    Problem,
    PromotionReplay,
    SchedulerReplay,
    default_method,
    hyperband_budgets,
    replay_spec,
)
from benchmarks.virtual.replay import Work, replay
from benchmarks.virtual.surrogate import Curve, Surrogate, ray_space


class Scripted:
    """A policy that trains given trials to given epochs, pausing each at `pause_at` once and
    continuing it when a worker is free again after the queue is empty."""

    def __init__(self, trials: list[str], pause_at: dict[str, int] | None = None):
        self.queue = list(trials)
        self.pause_at = dict(pause_at or {})
        self.paused: list[str] = []
        self.calls: list[tuple[str, int, float]] = []

    def next_work(self):
        if self.queue:
            return Work(self.queue.pop(0), {"name": "x"})
        if self.paused:
            return Work(self.paused.pop(0), {"name": "x"})
        return None

    def on_epoch(self, key, epoch, value):
        self.calls.append((key, epoch, value))
        if self.pause_at.get(key) == epoch:
            del self.pause_at[key]
            self.paused.append(key)
            return False
        return True


CURVES = {"a": Curve((1.0, 2.0, 3.0), (1.0, 1.0, 1.0)), "b": Curve((5.0, 4.0, 0.5), (3.0, 0.5, 0.5))}


def curve_of(key):
    return lambda config: CURVES[key]


def test_two_workers_finish_each_epoch_at_its_curve_s_seconds_in_virtual_time_order():
    # a's epochs end at 1, 2, 3 s; b's at 3, 3.5, 4 s (b's first epoch takes 3 s): the arrivals
    # interleave by finish time; at a tie, the epoch that started first (b's, at 0 s) first.
    policy = Scripted(["a", "b"])
    keys = iter(["a", "b"])
    run = replay(policy, lambda config: CURVES[next(keys)], workers=2, budget=100,
                 keep_arrivals=True)
    assert [(t, k, e) for t, k, e in run.arrivals] == [
        (1.0, "a", 1), (2.0, "a", 2), (3.0, "b", 1), (3.0, "a", 3), (3.5, "b", 2), (4.0, "b", 3)]
    assert run.seconds == 4.0 and run.trials == 2
    assert run.best == [1.0, 2.0, 5.0, 5.0, 5.0, 5.0]  # the best after each epoch of budget
    assert (run.lowest, run.highest) == (0.5, 5.0)


def test_a_paused_trial_continues_from_its_epoch_and_is_charged_only_the_epochs_it_trains():
    # One worker: a trains epoch 1 (1 s) and pauses; b trains all 3 (4 s); a comes back at epoch 2.
    policy = Scripted(["a", "b"], pause_at={"a": 1})
    order = iter(["a", "b"])
    run = replay(policy, lambda config: CURVES[next(order)], workers=1, budget=100,
                 keep_arrivals=True)
    assert run.arrivals == [(1.0, "a", 1), (4.0, "b", 1), (4.5, "b", 2), (5.0, "b", 3),
                            (6.0, "a", 2), (7.0, "a", 3)]
    assert len(run.best) == 6  # 3 epochs each: a's first epoch is not trained again


def test_the_budget_counts_arrived_epochs():
    policy = Scripted(["a", "b"])
    order = iter(["a", "b"])
    run = replay(policy, lambda config: CURVES[next(order)], workers=2, budget=4, keep_arrivals=True)
    assert len(run.best) == 4 and run.arrivals[-1] == (3.0, "a", 3)


def test_a_minimised_metric_keeps_the_lowest():
    policy = Scripted(["b"])
    run = replay(policy, curve_of("b"), workers=1, budget=10, sign=-1.0)
    assert run.best == [5.0, 4.0, 0.5]


# ---------------------------------------------------------------------------------------------------
# The replay builds what a real search builds.


def _problem(workers: int = 2, seed: int = 0, curve=None) -> Problem:
    from ray import tune

    hyperparameters = [{"name": "x", "type": "uniform_float", "log": False, "lower": 0.0,
                        "upper": 1.0, "default": 0.5},
                       {"name": "n", "type": "uniform_int", "log": True, "lower": 1, "upper": 8,
                        "default": 2}]
    space = {"x": tune.uniform(0.0, 1.0), "n": tune.lograndint(1, 9)}
    return Problem(hyperparameters, space, 1, 9, workers, seed, "max",
                   curve or (lambda config: Curve(tuple(config["x"] * e for e in range(1, 10)),
                                                  (1.0,) * 9)))


@pytest.mark.parametrize("search", ["random", "optuna"])
def test_promotion_replay_drives_the_scheduler_s_rules_and_the_spec_s_searcher(search):
    from ray.tune.search import SearchGenerator

    from search.scheduling.promotion import PromotionASHA, PromotionRules
    from search.scheduling.tuner import make_scheduler, make_search_alg

    spec = replay_spec(_problem(), search, "asha")
    policy = PromotionReplay(spec)
    real_scheduler, real_alg = make_scheduler(spec), make_search_alg(spec)
    assert type(policy.scheduler) is type(real_scheduler) is PromotionASHA
    assert type(policy.rules) is PromotionRules
    assert policy.rules is policy.scheduler.decision_rules()
    assert policy.rules.rungs.milestones == real_scheduler.decision_rules().rungs.milestones == [1, 3]
    replayed = policy.search_alg.searcher if isinstance(policy.search_alg, SearchGenerator) \
        else policy.search_alg
    assert type(replayed) is type(real_alg)
    if search == "optuna":
        assert type(replayed.searcher) is type(real_alg.searcher)


def test_stopping_asha_and_fifo_replay_ray_s_schedulers_as_make_scheduler_builds_them():
    from search.scheduling.snapshots import SnapshotASHA, SnapshotFIFO
    from search.scheduling.tuner import make_scheduler

    for scheduler, kind in (("asha_stopping", SnapshotASHA), ("fifo", SnapshotFIFO)):
        spec = replay_spec(_problem(), "random", scheduler)
        policy = SchedulerReplay(spec)
        assert type(policy.scheduler) is type(make_scheduler(spec)) is kind


def test_promotion_asha_replayed_trains_fewer_epochs_per_trial_than_fifo():
    problem = _problem(workers=2)
    asha = replay(BY_NAME["random+asha"].build(problem), problem.curve_of, 2, 200)
    fifo = replay(BY_NAME["random"].build(problem), problem.curve_of, 2, 200)
    assert len(asha.best) == len(fifo.best) == 200
    assert asha.trials > 2 * fifo.trials  # most trials stop at the first rung


def test_the_default_searcher_comes_from_the_spec_s_default():
    from search.door.spec import SETTINGS

    assert BY_NAME[default_method()].search == SETTINGS["search"].default
    assert len({m.name for m in METHODS}) == len(METHODS)


# ---------------------------------------------------------------------------------------------------
# Hyperband's brackets.


def test_hyperband_s_brackets_are_li_et_al_s_for_r_52_and_eta_3():
    # s_max = floor(log3(52)) = 3: n = 27, 12, 6, 4 trials at r = 52/27, 52/9, 52/3, 52 epochs.
    assert hyperband_budgets(1, 52, 3) == [
        [(27, 2), (9, 6), (3, 17), (1, 52)], [(12, 6), (4, 17), (1, 52)], [(6, 17), (2, 52)],
        [(4, 52)]]


def test_one_worker_runs_a_bracket_s_rungs_in_order_and_promotes_the_best_third():
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from benchmarks.virtual.methods import search_algorithm

    problem = _problem(workers=1)
    spec = replay_spec(problem, "random", "fifo")
    brackets = Brackets(search_algorithm(BasicVariantGenerator(random_state=0), spec), 1, 9, 3,
                        "max")
    first = [brackets.ask() for _ in range(9)]  # s_max = 2: 9 trials at 1 epoch
    assert {job.epochs for job in first} == {1}
    for job in first:
        brackets.tell(job.handle, job.config["x"], 1.0)
    promoted = [brackets.ask() for _ in range(3)]
    best = sorted(first, key=lambda j: j.config["x"], reverse=True)[:3]
    assert [j.key for j in promoted] == [j.key for j in best] and {j.epochs for j in promoted} == {3}


# ---------------------------------------------------------------------------------------------------
# The surrogate reader on a tiny scenario folder.


def _scenario(folder):
    (folder / "scenario.json").write_text(json.dumps({
        "name": "tiny", "inputs": {"x_cat": ["task"], "x_cont": ["epoch", "x", "n"]},
        "outputs": ["time", "acc"], "instance": "task", "fidelity": "epoch", "metric": "acc",
        "mode": "max", "time": "time", "time_is_cumulative": True}))
    (folder / "config_space.json").write_text(json.dumps({"hyperparameters": [
        {"name": "task", "type": "categorical", "choices": ["7", "9"], "default": "7"},
        {"name": "epoch", "type": "uniform_int", "log": False, "lower": 1, "upper": 3, "default": 1},
        {"name": "x", "type": "uniform_float", "log": True, "lower": 0.01, "upper": 1.0,
         "default": 0.1},
        {"name": "n", "type": "uniform_int", "log": False, "lower": 1, "upper": 4, "default": 2}]}))
    (folder / "encoding.json").write_text(json.dumps({"task": {"#na#": 0, "7": 1, "9": 2}}))


def test_the_space_and_the_instances_come_from_the_folder_s_files(tmp_path):
    from ray.tune.search.sample import Float, Integer

    _scenario(tmp_path)
    s = Surrogate(tmp_path)
    assert s.instances == ["7", "9"] and (s.min_epochs, s.max_epochs) == (1, 3)
    assert [h["name"] for h in s.searched] == ["x", "n"]
    space = ray_space(s.searched)
    assert isinstance(space["x"], Float) and (space["x"].lower, space["x"].upper) == (0.01, 1.0)
    assert isinstance(space["n"], Integer) and (space["n"].lower, space["n"].upper) == (1, 5)


def test_a_curve_is_one_model_call_with_per_epoch_seconds(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    _scenario(tmp_path)
    # output = [time, acc] = [x_cont[:, 0] * (1 + task), x_cont[:, 1] * x_cont[:, 0]]:
    # cumulative time epoch * (1 + encoded task), acc x * epoch.
    nodes = [
        helper.make_node("Cast", ["x_cat"], ["cat_f"], to=TensorProto.FLOAT),
        helper.make_node("Slice", ["x_cont", "s0", "e1", "ax"], ["epoch"]),
        helper.make_node("Slice", ["x_cont", "e1", "e2", "ax"], ["x"]),
        helper.make_node("Add", ["cat_f", "one"], ["scale"]),
        helper.make_node("Mul", ["epoch", "scale"], ["time"]),
        helper.make_node("Mul", ["x", "epoch"], ["acc"]),
        helper.make_node("Concat", ["time", "acc"], ["output"], axis=1),
    ]
    consts = [helper.make_tensor("s0", TensorProto.INT64, [1], [0]),
              helper.make_tensor("e1", TensorProto.INT64, [1], [1]),
              helper.make_tensor("e2", TensorProto.INT64, [1], [2]),
              helper.make_tensor("ax", TensorProto.INT64, [1], [1]),
              helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x_cat", TensorProto.INT32, [None, 1]),
                        helper.make_tensor_value_info("x_cont", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, 2])], consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "model.onnx"))
    s = Surrogate(tmp_path)
    curve = s.curve("9", {"x": 0.5, "n": 2})  # task 9 is encoded 2: each epoch takes 3 s
    assert curve.values == pytest.approx((0.5, 1.0, 1.5))
    assert curve.seconds == pytest.approx((3.0, 3.0, 3.0))
    assert s.curve("9", {"n": 2, "x": 0.5}) is curve  # kept
    assert s.final_values("7", [{"x": 0.25, "n": 1}]).tolist() == pytest.approx([0.75])
