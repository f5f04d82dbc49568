"""What tune-run's own logic costs per decision as a search grows (section `search`, part 7).

A rung decision is `PromotionRules.at_rung` (a trial reports at a rung) and `free_worker` (a
worker is free), over rungs that already hold `n` trials spread as promotion ASHA spreads them (all
at the first rung, a 1/eta share at each next one), every promotable one promoted and the rest
waiting: the worst case, in which a decision looks through every rung and finds nothing. A
suggestion is the spec's search algorithm (`make_search_alg`) asked for its next configuration
after `n` trials were told to the searcher inside it (below its concurrency limit) through Ray's
Searcher API, with each trial's configuration in its results (the way a resumed search tells a
searcher of trials it did not suggest), at every rung it reached.
"""

from __future__ import annotations

import random
import time
from typing import Any

from benchmarks.virtual.methods import Problem, replay_spec, result_of, search_algorithm

TIMED_CALLS = 20  # decisions (or suggestions) timed at each size, after the fill


def rung_decision_ms(n: int, problem: Problem, seed: int = 0) -> dict[str, float]:
    """Milliseconds per `at_rung` and per `free_worker` with `n` trials in the rungs."""
    from search.scheduling.promotion import PromotionRules, Rungs, spec_rungs

    spec = replay_spec(problem, "random", "asha")
    milestones = list(spec_rungs(spec))
    rules = PromotionRules(Rungs(milestones, spec.reduction_factor, spec.mode))
    rng = random.Random(seed)
    waiting = set()
    for i in range(n):
        trial_id = f"t{i}"
        for level, epoch in enumerate(milestones):
            if rng.random() > spec.reduction_factor ** -level:
                break
            rules.rungs.record(trial_id, epoch, rng.random())
            if level:
                rules.rungs.promote(trial_id, milestones[level - 1])
        waiting.add(trial_id)
    while (job := rules.rungs.next_promotion(waiting)) is not None:  # the steady state: nothing
        rules.rungs.promote(*job)  # promotable waits, so a decision looks through every rung
        waiting.discard(job[0])
    start = time.perf_counter()
    for i in range(TIMED_CALLS):
        rules.at_rung(f"new{i}", milestones[0], rng.random(), (), waiting)
    at_rung = (time.perf_counter() - start) / TIMED_CALLS
    start = time.perf_counter()
    for _ in range(TIMED_CALLS):
        job = rules.free_worker(waiting, lambda: None, idle=False, finished=lambda: False)
        if job.kind == "promote":
            waiting.discard(job.trial_ids[0])
    free = (time.perf_counter() - start) / TIMED_CALLS
    return {"at_rung_ms": 1e3 * at_rung, "free_worker_ms": 1e3 * free}


def suggestion_ms(search: str, n: int, problem: Problem, seed: int = 0) -> float:
    """Milliseconds per suggestion of the spec's search algorithm after `n` trials."""
    from search.scheduling.promotion import spec_rungs
    from search.scheduling.tuner import make_search_alg

    spec = replay_spec(problem, search, "asha")
    alg = search_algorithm(make_search_alg(spec), spec)
    rungs = [*spec_rungs(spec), spec.max_epochs]
    sampler = search_algorithm(make_search_alg(replay_spec(problem, "random", "asha")), spec)
    rng = random.Random(seed)
    told_to = _innermost(alg)
    for i in range(n if told_to is not None else 0):
        config = sampler.next_trial().config
        told: dict[str, Any] = {f"config/{k}": v for k, v in config.items()}
        result = None
        for level, epoch in enumerate(rungs):
            if level and rng.random() > spec.reduction_factor ** -1:
                break
            result = result_of(epoch, rng.random(), **told)
            told_to.on_trial_result(f"fill{i}", result)
        told_to.on_trial_complete(f"fill{i}", result=result)
    start = time.perf_counter()
    for _ in range(TIMED_CALLS):
        trial = alg.next_trial()
        if trial is None:
            raise RuntimeError(f"search {search!r} suggested nothing after {n} trials")
        alg.on_trial_complete(trial.trial_id)
    return 1e3 * (time.perf_counter() - start) / TIMED_CALLS


def _innermost(alg):
    """The model-holding Searcher inside a SearchGenerator and its concurrency limit (which drops
    what it is told of trials it did not start); None for random search, which learns nothing."""
    searcher = getattr(alg, "searcher", None)
    while hasattr(searcher, "searcher"):
        searcher = searcher.searcher
    return searcher
