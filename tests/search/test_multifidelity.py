"""The multi-fidelity searcher (search/scheduling/multifidelity.py): it finds known optima sooner
than random search when driven through promotion ASHA's rungs, yields only values its domains can
take, and its saved state gives back the same next suggestions."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
from ray import tune

from search.door.domains import value_set
from search.door.spec import build_spec
from search.errors import SpecError
from search.scheduling.multifidelity import MultiFidelitySearcher, _best_first
from search.scheduling.pareto import Objective
from search.scheduling.promotion import PausedTrialsWait, Rungs
from trainables.metrics import EPOCH

SCORE = [Objective("score", "max")]
OPTIMUM = {"x1": 0.7, "x2": 0.3, "x3": 0.5, "x4": 0.2}
MILESTONES, MAX_EPOCHS = (1, 3), 9


def _score(config: dict, epoch: int, rng: np.random.Generator) -> float:
    """A 4-D quadratic whose optimum moves and whose noise shrinks as the epochs grow: a low
    rung ranks trials roughly, the last epoch well."""
    shift = 0.15 * (1 / epoch - 1 / MAX_EPOCHS)  # along x1; none at the last epoch
    distance = sum((config[k] - o) ** 2 for k, o in OPTIMUM.items())
    return -(distance + 2 * shift * (config["x1"] - OPTIMUM["x1"])) + rng.normal() * 0.02 / epoch


def _drive(searcher: MultiFidelitySearcher, trials: int, seed: int) -> float:
    """Runs `trials` trials, one at a time, through promotion ASHA's rules (Rungs): a trial at a
    rung goes on if it is the next promotion, else it waits; a free worker promotes first. Returns
    the distance to the optimum of the best trial that ran all its epochs."""
    rng = np.random.default_rng(seed)
    book = Rungs(list(MILESTONES), 3.0, "max")
    configs: dict[str, dict] = {}
    epochs: dict[str, int] = {}
    paused: set[str] = set()
    finished: dict[str, float] = {}

    def train(trial: str) -> None:
        while True:
            epochs[trial] += 1
            epoch = epochs[trial]
            result = {EPOCH: epoch, "score": _score(configs[trial], epoch, rng)}
            searcher.on_trial_result(trial, result)
            if epoch == MAX_EPOCHS:
                searcher.on_trial_complete(trial, result)
                finished[trial] = result["score"]
                return
            if epoch in MILESTONES:
                book.record(trial, epoch, result["score"])
                if book.next_promotion(paused | {trial}) != (trial, epoch):
                    paused.add(trial)
                    return
                book.promote(trial, epoch)

    while True:
        job = book.next_promotion(paused)
        if job is not None:
            book.promote(*job)
            paused.discard(job[0])
            train(job[0])
        elif len(configs) < trials:
            trial = f"t{len(configs)}"
            configs[trial], epochs[trial] = searcher.suggest(trial), 0
            train(trial)
        else:
            break
    best = configs[max(finished, key=finished.get)]
    return math.dist([best[k] for k in OPTIMUM], list(OPTIMUM.values()))


def _quadratic_searcher(seed: int, **kwargs) -> MultiFidelitySearcher:
    # Fixed values, a dict among them (tune-run's test hook _fault is one), are not searched.
    space = {k: tune.uniform(0.0, 1.0) for k in OPTIMUM} | {
        "fixed": 3, "_fault": {"kind": "slow", "seconds": 0.7}}
    return MultiFidelitySearcher(SCORE, (*MILESTONES, MAX_EPOCHS), seed=seed, space=space, **kwargs)


def test_it_ends_much_closer_to_a_known_optimum_than_random_search():
    seeds = range(6)  # over 8 seeds: 0.29 of random's distance at 120 trials
    model = [_drive(_quadratic_searcher(s), 120, s) for s in seeds]
    random = [_drive(_quadratic_searcher(s, random_fraction=1.0), 120, s) for s in seeds]
    assert np.mean(model) < 0.5 * np.mean(random), (model, random)


def test_the_same_seed_gives_the_same_search():
    assert _drive(_quadratic_searcher(4), 60, 0) == _drive(_quadratic_searcher(4), 60, 0)
    assert _drive(_quadratic_searcher(4), 60, 0) != _drive(_quadratic_searcher(5), 60, 0)


EVERY_KIND = {
    "lr": tune.loguniform(1e-4, 1e-1),
    "momentum": tune.uniform(0.5, 0.99),
    "label_smoothing": tune.quniform(0.0, 0.2, 0.05),
    "batch_size": tune.lograndint(16, 513),
    "warmup_epochs": tune.randint(0, 3),
    "width": tune.qloguniform(0.25, 2.0, 0.25),
    "seed": tune.qrandint(0, 20, 5),
    "optimizer": tune.choice(["sgd", "adamw", "rmsprop"]),
    "nesterov": tune.choice([False, True]),
    "mixup_alpha": tune.randn(0.0, 1.0),
    "dropout": 0.1,  # fixed: passes through Ray untouched, never suggested
}


def _fed(searcher: MultiFidelitySearcher, trials: int) -> list[dict]:
    """Suggestions, each told a result at every fidelity (so the model, not only random draws,
    proposes the later ones)."""
    configs = []
    for i in range(trials):
        config = searcher.suggest(f"t{i}")
        configs.append(config)
        for epoch in searcher.fidelities:
            searcher.on_trial_result(f"t{i}", {EPOCH: epoch, "val_acc": -abs(math.log(config["lr"]) + 5)})
    return configs


def test_every_value_suggested_is_one_its_domain_can_take():
    searcher = MultiFidelitySearcher([Objective("val_acc", "max")], (1, 3, 9), space=EVERY_KIND)
    configs = _fed(searcher, 200)
    assert all("dropout" not in c for c in configs)
    for name, domain in EVERY_KIND.items():
        if not hasattr(domain, "sample"):
            continue
        for value in (c[name] for c in configs):
            if hasattr(domain, "categories"):
                assert value in domain.categories, (name, value)
                continue
            expected = int if isinstance(domain, tune.search.sample.Integer) else float
            assert type(value) is expected, (name, value)
            values = value_set(domain)
            if values is not None:
                assert values.low <= value <= values.high, (name, value)
                assert values.high_included or value < values.high, (name, value)
            sampler = domain.get_sampler()
            if hasattr(sampler, "q"):
                assert math.isclose(value / sampler.q, round(value / sampler.q), abs_tol=1e-9)
    # Every choice and every integer end comes up; a log domain spreads over its decades.
    for name in ("optimizer", "nesterov"):
        assert {c[name] for c in configs} == set(EVERY_KIND[name].categories)
    assert {c["warmup_epochs"] for c in configs} == {0, 1, 2}
    assert {c["seed"] for c in configs} == {0, 5, 10, 15, 20}
    first = [math.log10(c["batch_size"]) for c in configs[:20]]  # random draws: before the model
    assert min(first) < 1.8 and max(first) > 2.3


def test_the_model_favours_the_region_that_scores_well():
    searcher = MultiFidelitySearcher([Objective("val_acc", "max")], (1, 3, 9), space=EVERY_KIND,
                                     random_fraction=0.0)
    configs = _fed(searcher, 200)
    late = [abs(math.log(c["lr"]) + 5) for c in configs[100:]]
    early = [abs(math.log(c["lr"]) + 5) for c in configs[:10]]
    assert np.median(late) < 0.5 * np.median(early)


def test_its_saved_state_gives_the_same_next_suggestions(tmp_path):
    searcher = _quadratic_searcher(7)
    _drive(searcher, 40, 0)
    path = tmp_path / "searcher-state.pkl"
    searcher.save(str(path))
    restored = _quadratic_searcher(99)  # another seed: the saved generator state replaces it
    restored.restore(str(path))
    for i in range(5):
        assert searcher.suggest(f"n{i}") == restored.suggest(f"n{i}")


def test_a_trial_it_never_suggested_is_learnt_from_its_result():
    # A state saved before the driver was killed can be older than the trials Ray restores.
    searcher = _quadratic_searcher(0)
    config = {f"config/{k}": 0.25 for k in OPTIMUM} | {"config/fixed": 3}
    searcher.on_trial_result("old", {EPOCH: 1, "score": -0.1, **config})
    assert searcher.points["old"] == pytest.approx([0.25] * 4)
    assert searcher.results[1]["old"] == (-0.1,)
    searcher.on_trial_result("stranger", {EPOCH: 1, "score": -0.1})  # no configuration: ignored
    assert "stranger" not in searcher.results[1]


def test_a_failed_or_diverged_trial_ranks_last():
    searcher = _quadratic_searcher(0)
    for i, value in enumerate([0.1, float("nan"), None, 0.3]):
        searcher.suggest(f"t{i}")
        searcher.on_trial_result(f"t{i}", {EPOCH: 1, "score": value})
    order = _best_first(list(searcher.results[1].values()))
    assert order[:2] == [3, 0]


def test_several_objectives_rank_by_how_many_beat_each_trial():
    # (accuracy, -latency): b and c are on the front, a is beaten by b, d by all.
    values = [(0.8, -5.0), (0.9, -4.0), (0.7, -1.0), (0.6, -9.0)]
    assert _best_first(values) == [1, 2, 0, 3]
    searcher = MultiFidelitySearcher([Objective("val_acc", "max"), Objective("latency_ms", "min")],
                                     (1, 4), space={"lr": tune.loguniform(1e-3, 1e-1)})
    searcher.suggest("t0")
    searcher.on_trial_result("t0", {EPOCH: 1, "val_acc": 0.5, "latency_ms": 2.0})
    assert searcher.results[1]["t0"] == (0.5, -2.0)


def test_a_suggestion_stays_cheap_at_5000_trials():
    rng = np.random.default_rng(0)
    searcher = MultiFidelitySearcher([Objective("val_acc", "max")], (1, 3, 9, 27, 52),
                                     space={k: v for k, v in EVERY_KIND.items() if k != "dropout"},
                                     random_fraction=1.0)  # random draws while it fills
    for i in range(5000):
        searcher.suggest(f"t{i}")
        for epoch in (1, 3, 9, 27, 52)[:int(rng.integers(1, 6))]:
            searcher.on_trial_result(f"t{i}", {EPOCH: epoch, "val_acc": float(rng.random())})
    searcher.random_fraction = 0.0
    start = time.perf_counter()
    for i in range(20):
        searcher.suggest(f"n{i}")
    per_suggestion = (time.perf_counter() - start) / 20
    assert per_suggestion < 0.2, per_suggestion  # 50 ms on an idle core; the CI shares its CPUs


def _spec(**settings):
    return build_spec(Path("s.py"), {"search": "multifidelity", "max_epochs": 27} | settings,
                      {"lr": tune.loguniform(1e-3, 1e-1), "optimizer": tune.choice(["sgd", "adamw"])})


def test_the_door_takes_it_and_the_tuner_pairs_it_with_promotion_asha():
    from search.scheduling.tuner import make_search_alg

    spec = _spec(max_concurrent=2)
    alg = make_search_alg(spec)
    assert isinstance(alg, PausedTrialsWait) and isinstance(alg.searcher, MultiFidelitySearcher)
    assert alg.searcher.fidelities == (1, 3, 9, 27)  # the rungs of grace 1, factor 3, and the end
    fifo = make_search_alg(_spec(scheduler="fifo"))
    assert isinstance(fifo, MultiFidelitySearcher) and fifo.fidelities == (27,)
    several = make_search_alg(_spec(objectives={"val_acc": "max", "latency_ms": "min"}))
    assert [o.metric for o in several.objectives] == ["val_acc", "latency_ms"]


@pytest.mark.parametrize("domain,fragment", [
    ({"grid_search": [0.01, 0.1]}, "tune.grid_search needs settings.search = 'random'; "
                                   "'multifidelity' samples its values"),
    (tune.sample_from(lambda _: 0.01), "tune.sample_from cannot be searched by settings.search "
                                       "= 'multifidelity'"),
], ids=["grid", "sample_from"])
def test_the_door_refuses_what_it_cannot_sample_in_one_line(domain, fragment):
    with pytest.raises(SpecError) as refused:
        build_spec(Path("s.py"), {"search": "multifidelity"}, {"lr": domain})
    assert fragment in str(refused.value) and "\n" not in str(refused.value)
    assert str(refused.value).startswith("s.py: space.lr: ")
