"""The methods section `search` replays, each as a `Policy` of benchmarks/virtual/replay.py.

tune-run's own methods are built from a search spec exactly as a real search builds them:
`search.scheduling.tuner.make_scheduler(spec)` and `make_search_alg(spec)`, wrapped as Ray's
`tune.run` wraps a Searcher (`SearchGenerator`, `set_search_properties`, `add_configurations`), and
driven through Ray's SearchAlgorithm API (`next_trial`, `on_trial_result`, `on_trial_complete`);
promotion ASHA's decisions are `PromotionASHA.decision_rules()`, the object the scheduler itself
calls. `BasicVariantGenerator` samples without `ray.init` (its trials are plain `Trial` objects).

The baselines are their libraries' own code where one exists: Ray's stopping `ASHAScheduler`
(tune-run's `SnapshotASHA`, its `on_trial_result` given a stand-in of the two things it reads from
the controller); BOHB's model is Ray's `TuneBOHB` (hpbandster's KDE), DEHB the `dehb` package's
`DEHB` by ask and tell, SMAC-HB SMAC3's `MultiFidelityFacade` (its `Hyperband` intensifier) by ask
and tell. Hyperband itself (Li et al. 2018, Algorithm 1; η = 3) is `Brackets` below, since Ray's
`HyperBandScheduler` needs a live controller to pause and unpause trials; BOHB pairs TuneBOHB with
the same brackets, as Ray pairs it with `HyperBandForBOHB`. With k workers a free worker takes the
next job of the oldest bracket with one ready, else opens the next bracket (as hpbandster does).
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

from benchmarks.virtual.replay import Work
from benchmarks.virtual.surrogate import Curve, configuration_space

NUM_SAMPLES = 100_000  # trials a replayed search may start (the epoch budget ends it first)
REPLAY_METRIC = "val_acc"  # the spec's metric name the surrogate's metric is reported under


@dataclass(frozen=True)
class Problem:
    """What a method is built for: the searched space (ConfigSpace JSON hyperparameters and Ray
    domains), epochs, workers, seed, and the metric's mode."""

    hyperparameters: list[dict]
    space: dict[str, Any]
    min_epochs: int
    max_epochs: int
    workers: int
    seed: int
    mode: str
    curve_of: Callable[[dict[str, Any]], Curve]
    grace_period: int = 1  # ASHA's first rung: tune-run's default
    reduction_factor: float = 3.0  # ASHA's and Hyperband's η: tune-run's default


@dataclass(frozen=True)
class Method:
    name: str
    about: str
    build: Callable[[Problem], Any]  # -> Policy
    library: str = ""  # a module the method needs (skipped with a note where it does not import)
    search: str = ""  # tune-run's methods: the `search` setting it replays


# ---------------------------------------------------------------------------------------------------
# tune-run's methods: a spec, then what the Tuner gets from it.


def replay_spec(problem: Problem, search: str, scheduler: str):
    """The search spec of a real search of this problem: `search` and `scheduler` as a space file
    sets them, `max_concurrent` the workers (validated by tune-run's door)."""
    from search.door.spec import build_spec

    settings = {"name": "replay", "search": search, "scheduler": scheduler,
                "max_epochs": problem.max_epochs, "grace_period": problem.grace_period,
                "reduction_factor": problem.reduction_factor, "max_concurrent": problem.workers,
                "seed": problem.seed, "num_samples": NUM_SAMPLES, "metric": REPLAY_METRIC,
                "mode": problem.mode}
    return build_spec(Path("surrogate.py"), settings, problem.space, check_model=False)


def search_algorithm(alg, spec):
    """A search algorithm as Ray's `tune.run` sets it up: a Searcher in a SearchGenerator, told
    the metric, mode and space, then given the experiment."""
    from ray.tune.experiment import Experiment
    from ray.tune.search import Searcher, SearchGenerator

    if isinstance(alg, Searcher):
        alg = SearchGenerator(alg)
    alg.set_search_properties(spec.metric, spec.mode, spec.space)
    alg.add_configurations([Experiment("replay", run=_never_run, config=spec.space,
                                       num_samples=spec.num_samples)])
    return alg


def _never_run(config):  # the trainable Ray's experiment names; the replay trains nothing
    raise RuntimeError("a replayed trial is never run")


def result_of(epoch: int, value: float, **more) -> dict:
    from trainables.metrics import EPOCH

    return {REPLAY_METRIC: value, EPOCH: epoch, **more}


class PromotionReplay:
    """tune-run's promotion ASHA: `PromotionASHA.decision_rules()` decide, the spec's search
    algorithm proposes; paused trials are told to the searcher as PromotionASHA tells them."""

    def __init__(self, spec):
        from search.scheduling.tuner import make_scheduler, make_search_alg

        self.spec = spec
        scheduler = make_scheduler(spec)
        scheduler.set_search_properties(spec.metric, spec.mode)
        self.scheduler = scheduler
        self.rules = scheduler.decision_rules()
        self.search_alg = search_algorithm(make_search_alg(spec), spec)
        self.configs: dict[str, dict] = {}
        self.waiting: set[str] = set()  # paused at a rung
        self.running: set[str] = set()

    def next_work(self) -> Work | None:
        from search.scheduling.promotion import tell_paused

        while True:
            job = self.rules.free_worker(self.waiting, self._new_trial, idle=not self.running,
                                         finished=self.search_alg.is_finished)
            if job.kind == "end":  # as Ray stops a paused trial: the searcher hears no result
                for trial_id in job.trial_ids:
                    self.waiting.discard(trial_id)
                    self.search_alg.on_trial_complete(trial_id)
                continue
            if job.kind == "idle":
                return None
            trial_id = job.trial_ids[0]
            if job.kind == "promote":
                self.waiting.discard(trial_id)
                tell_paused(self._searcher, "on_unpause", trial_id)
            self.running.add(trial_id)
            return Work(trial_id, self.configs[trial_id])

    @property
    def _searcher(self):
        return getattr(self.search_alg, "searcher", None)

    def _new_trial(self) -> str | None:
        trial = self.search_alg.next_trial()
        if trial is None:
            return None
        self.configs[trial.trial_id] = trial.config
        return trial.trial_id

    def on_epoch(self, key: str, epoch: int, value: float) -> bool:
        from search.scheduling.promotion import tell_paused

        result = result_of(epoch, value)
        self.search_alg.on_trial_result(key, result)
        if epoch >= self.spec.max_epochs:
            self.running.discard(key)
            self.search_alg.on_trial_complete(key, result=result)
            return False
        if epoch not in self.rules.rungs.milestones:
            return True
        if self.rules.at_rung(key, epoch, value, (), self.waiting):
            return True
        tell_paused(self._searcher, "on_pause", key)
        self.running.discard(key)
        self.waiting.add(key)
        return False


class _Controller:
    """What Ray's schedulers read from the TuneController in `on_trial_add` and
    `on_trial_result`: tune-run's snapshot cadence (search/scheduling/snapshots.py) and nothing
    else for FIFO and stopping ASHA."""

    def __init__(self):
        self._checkpoint_manager = SimpleNamespace(_sync_every_n_trial_checkpoints=None)


class SchedulerReplay:
    """A Ray scheduler that continues or stops trials (FIFO, Ray's stopping ASHA), as
    `make_scheduler(spec)` builds it, with the spec's search algorithm."""

    def __init__(self, spec):
        from search.scheduling.tuner import make_scheduler, make_search_alg

        self.spec = spec
        self.scheduler = make_scheduler(spec)
        self.scheduler.set_search_properties(spec.metric, spec.mode)
        self.search_alg = search_algorithm(make_search_alg(spec), spec)
        self.controller = _Controller()
        self.trials: dict[str, Any] = {}

    def next_work(self) -> Work | None:
        trial = self.search_alg.next_trial()
        if trial is None:
            return None
        self.trials[trial.trial_id] = trial
        self.scheduler.on_trial_add(self.controller, trial)
        return Work(trial.trial_id, trial.config)

    def on_epoch(self, key: str, epoch: int, value: float) -> bool:
        from ray.tune.schedulers import TrialScheduler

        trial, result = self.trials[key], result_of(epoch, value)
        decision = self.scheduler.on_trial_result(self.controller, trial, result)
        self.search_alg.on_trial_result(key, result)
        if decision == TrialScheduler.CONTINUE and epoch < self.spec.max_epochs:
            return True
        self.scheduler.on_trial_complete(self.controller, trial, result)
        self.search_alg.on_trial_complete(key, result=result)
        return False


def tune_run(name: str, about: str, search: str, scheduler: str = "asha", library: str = "") -> Method:
    """A method of tune-run's own: the spec's `search` with its `scheduler`."""
    def build(problem: Problem):
        spec = replay_spec(problem, search, scheduler)
        return PromotionReplay(spec) if scheduler == "asha" else SchedulerReplay(spec)
    return Method(name, about, build, library, search if scheduler == "asha" else "")


# ---------------------------------------------------------------------------------------------------
# Ask-and-tell methods: Hyperband's brackets, DEHB, SMAC-HB.


@dataclass
class Ask:
    """A job of an ask-and-tell optimizer: train `key` (a trial that trains again continues from
    the epoch it reached) with `config` to `epochs`; `handle` is what the optimizer is told with."""

    key: str
    config: dict[str, Any]
    epochs: int
    handle: Any


class AskTellReplay:
    """A Policy over an optimizer with `ask() -> Ask | None` and `tell(handle, value, seconds)`.
    A job whose trial already trained that far (or trains now on another worker) costs nothing
    new, or starts afresh, as a real worker that keeps checkpoints per configuration would."""

    def __init__(self, optimizer, curve_of: Callable[[dict], Curve]):
        self.optimizer, self.curve_of = optimizer, curve_of
        self.reached: dict[str, int] = {}
        self.running: dict[str, Ask] = {}
        self.copies = 0

    def next_work(self) -> Work | None:
        while True:
            job = self.optimizer.ask()
            if job is None:
                return None
            if job.key in self.running:
                self.copies += 1
                job.key = f"{job.key}#{self.copies}"
            done = self.reached.get(job.key, 0)
            if done >= job.epochs:  # trained that far already: its value is known
                self.optimizer.tell(job.handle, self.curve_of(job.config).values[job.epochs - 1], 0.0)
                continue
            self.running[job.key] = job
            return Work(job.key, job.config)

    def on_epoch(self, key: str, epoch: int, value: float) -> bool:
        self.reached[key] = epoch
        job = self.running[key]
        if epoch < job.epochs:
            return True
        del self.running[key]
        self.optimizer.tell(job.handle, value, sum(self.curve_of(job.config).seconds[:epoch]))
        return False


def hyperband_budgets(min_epochs: int, max_epochs: int, eta: float) -> list[list[tuple[int, int]]]:
    """Hyperband's brackets (Li et al. 2018, Algorithm 1), most aggressive first: each a list of
    (trials, epochs) per rung. s_max = floor(log_eta(R / r_min)); bracket s starts
    n = ceil((s_max + 1) / (s + 1) * eta**s) trials at r = R * eta**-s epochs; each rung keeps the
    best floor(n_i / eta) for eta times the epochs. Epochs are rounded to whole ones."""
    s_max = int(math.floor(math.log(max_epochs / min_epochs, eta) + 1e-9))
    brackets = []
    for s in range(s_max, -1, -1):
        n = int(math.ceil((s_max + 1) / (s + 1) * eta ** s - 1e-9))
        rungs = [(int(n * eta ** -i + 1e-9), max(min_epochs, int(round(max_epochs * eta ** (i - s)))))
                 for i in range(s + 1)]
        brackets.append(rungs)
    return brackets


class Brackets:
    """Hyperband's successive-halving brackets as an ask-and-tell optimizer; the configurations of
    each bracket's first rung come from a Ray search algorithm (random, or TuneBOHB's model),
    which is told each rung's result with its budget as Ray's HyperBandForBOHB tells it."""

    def __init__(self, search_alg, min_epochs: int, max_epochs: int, eta: float, mode: str):
        self.search_alg, self.sign = search_alg, 1.0 if mode == "max" else -1.0
        self.plan = hyperband_budgets(min_epochs, max_epochs, eta)
        self.max_epochs = max_epochs
        self.opened = 0
        self.active: list[dict] = []
        self.configs: dict[str, dict] = {}

    def ask(self) -> Ask | None:
        for bracket in self.active:
            if bracket["todo"]:
                return self._job(bracket, bracket["todo"].pop(0))
        bracket = self._open()
        return self._job(bracket, bracket["todo"].pop(0)) if bracket["todo"] else None

    def _open(self) -> dict:
        rungs = self.plan[self.opened % len(self.plan)]
        self.opened += 1
        todo = []
        for _ in range(rungs[0][0]):
            trial = self.search_alg.next_trial()
            if trial is None:
                break
            self.configs[trial.trial_id] = trial.config
            todo.append(trial.trial_id)
        bracket = {"rungs": rungs, "rung": 0, "todo": todo, "results": {}, "out": len(todo)}
        self.active.append(bracket)
        return bracket

    def _job(self, bracket: dict, trial_id: str) -> Ask:
        epochs = bracket["rungs"][bracket["rung"]][1]
        return Ask(trial_id, self.configs[trial_id], epochs, (id(bracket), trial_id, epochs))

    def tell(self, handle, value: float, seconds: float) -> None:
        bracket_id, trial_id, epochs = handle
        bracket = next(b for b in self.active if id(b) == bracket_id)
        self.search_alg.on_trial_result(trial_id, result_of(
            epochs, value, hyperband_info={"budget": epochs}))
        bracket["results"][trial_id] = value
        if len(bracket["results"]) < bracket["out"]:
            return
        ranked = sorted(bracket["results"], key=lambda t: self.sign * bracket["results"][t],
                        reverse=True)
        bracket["rung"] += 1
        last = bracket["rung"] >= len(bracket["rungs"])
        keep = [] if last else ranked[:bracket["rungs"][bracket["rung"]][0]]
        for trial_id in ranked:
            if trial_id not in keep:
                self.search_alg.on_trial_complete(trial_id, result=result_of(
                    epochs, bracket["results"][trial_id]))
        bracket.update(todo=keep, results={}, out=len(keep))
        if last or not keep:
            self.active.remove(bracket)


def hyperband(problem: Problem):
    """Hyperband with random configurations: Ray's BasicVariantGenerator, as random search."""
    from ray.tune.search.basic_variant import BasicVariantGenerator

    spec = replay_spec(problem, "random", "fifo")
    alg = search_algorithm(BasicVariantGenerator(random_state=problem.seed), spec)
    return AskTellReplay(Brackets(alg, problem.min_epochs, problem.max_epochs,
                                  problem.reduction_factor, problem.mode), problem.curve_of)


def bohb(problem: Problem):
    """BOHB: Ray's TuneBOHB (hpbandster's BOHB model: top 15 %, a third random, bandwidth factor
    3, 64 samples) proposing, Hyperband's brackets deciding."""
    from ray.tune.search.bohb import TuneBOHB

    spec = replay_spec(problem, "random", "fifo")
    alg = search_algorithm(TuneBOHB(seed=problem.seed), spec)
    return AskTellReplay(Brackets(alg, problem.min_epochs, problem.max_epochs,
                                  problem.reduction_factor, problem.mode), problem.curve_of)


def _config_key(config: dict) -> str:
    return repr(sorted(config.items()))


class DEHBAskTell:
    """The dehb package's DEHB by ask and tell (one process: k workers are k asks before the
    first tell, DEHB's asynchronous mode); it minimises, so it is told -value."""

    def __init__(self, problem: Problem):
        from dehb import DEHB

        self.sign = 1.0 if problem.mode == "max" else -1.0
        self.folder = tempfile.TemporaryDirectory(prefix="dehb-")  # its log; removed with it
        self.dehb = DEHB(cs=configuration_space(problem.hyperparameters, problem.seed),
                         min_fidelity=problem.min_epochs, max_fidelity=problem.max_epochs,
                         eta=problem.reduction_factor, n_workers=1, seed=problem.seed,
                         output_path=self.folder.name, log_level="ERROR", save_freq=None)

    def ask(self) -> Ask:
        job = self.dehb.ask()
        config = dict(job["config"])
        epochs = max(1, int(round(job["fidelity"])))
        return Ask(_config_key(config), config, epochs, job)

    def tell(self, handle, value: float, seconds: float) -> None:
        self.dehb.tell(handle, {"fitness": -self.sign * value, "cost": seconds})


def dehb(problem: Problem):
    return AskTellReplay(DEHBAskTell(problem), problem.curve_of)


class SMACHyperband:
    """SMAC3's multi-fidelity facade (a random forest proposing, its Hyperband intensifier
    deciding), by ask and tell; it minimises, so it is told -value."""

    def __init__(self, problem: Problem):
        from smac import MultiFidelityFacade, Scenario
        from smac.intensifier.hyperband import Hyperband

        # SMAC's forest builds its trees on every core (joblib, n_jobs=-1): the replays run one
        # process per core, so it gets one.
        os.environ.setdefault("LOKY_MAX_CPU_COUNT", "1")
        self.sign = 1.0 if problem.mode == "max" else -1.0
        self.folder = tempfile.TemporaryDirectory(prefix="smac-")  # its run history; removed with it
        scenario = Scenario(configuration_space(problem.hyperparameters, problem.seed),
                            deterministic=True, n_trials=NUM_SAMPLES, seed=problem.seed,
                            min_budget=problem.min_epochs, max_budget=problem.max_epochs,
                            output_directory=Path(self.folder.name))
        intensifier = Hyperband(scenario, eta=int(problem.reduction_factor), seed=problem.seed)
        self.smac = MultiFidelityFacade(scenario, _never_train, intensifier=intensifier,
                                        overwrite=True, logging_level=40)

    def ask(self) -> Ask:
        info = self.smac.ask()
        config = dict(info.config)
        return Ask(_config_key(config), config, max(1, int(round(info.budget))), info)

    def tell(self, handle, value: float, seconds: float) -> None:
        from smac.runhistory.dataclasses import TrialValue

        self.smac.tell(handle, TrialValue(cost=-self.sign * value, time=seconds))


def _never_train(config, seed: int = 0, budget: float = 0.0):  # SMAC checks its arguments
    raise RuntimeError("a replayed trial is never run")


def smac_hyperband(problem: Problem):
    return AskTellReplay(SMACHyperband(problem), problem.curve_of)


# ---------------------------------------------------------------------------------------------------
# The one list.


def default_search() -> str:
    """tune-run's default searcher: the `search` setting's default (search/door/spec.py)."""
    from search.door.spec import SETTINGS

    return SETTINGS["search"].default


METHODS: tuple[Method, ...] = (
    tune_run("random", "random search, every trial to the last epoch (FIFO)", "random", "fifo"),
    tune_run("random+asha", "tune-run: random search + promotion ASHA", "random"),
    tune_run("tpe+asha", "tune-run: Optuna TPE + promotion ASHA", "optuna"),
    tune_run("tune-run", "tune-run's multi-fidelity searcher + promotion ASHA", "multifidelity",
             library="search.scheduling.multifidelity"),
    tune_run("random+ray-asha", "random search + Ray's stopping ASHAScheduler", "random",
             "asha_stopping"),
    Method("hyperband", "Hyperband, eta 3 (random configurations)", hyperband),
    Method("bohb", "BOHB: Ray's TuneBOHB (hpbandster) on Hyperband's brackets", bohb, "hpbandster"),
    Method("dehb", "DEHB, the dehb package (ask and tell, asynchronous)", dehb, "dehb"),
    Method("smac-hb", "SMAC3's multi-fidelity facade, Hyperband intensifier", smac_hyperband, "smac"),
)
BY_NAME = {m.name: m for m in METHODS}


def default_method() -> str:
    """The method that replays tune-run's default searcher with promotion ASHA."""
    search = default_search()
    return next(m.name for m in METHODS if m.search == search)


# ---------------------------------------------------------------------------------------------------
# Promotion ASHA alone, its trials arriving in a given order (section `searches`).


class PromotionInOrder:
    """Promotion ASHA's decisions (the scheduler's own `PromotionRules`) over trials that arrive
    in a fixed `order`, with no searcher: a FIFO search's measured curves replayed."""

    def __init__(self, order: list[int], milestones: list[int], reduction_factor: float,
                 max_epochs: int):
        from search.scheduling.promotion import PromotionRules, Rungs

        self.rules = PromotionRules(Rungs(milestones, reduction_factor, "max"))
        self.queue, self.max_epochs = [str(i) for i in order], max_epochs
        self.waiting: set[str] = set()
        self.running: set[str] = set()

    def next_work(self) -> Work | None:
        while True:
            job = self.rules.free_worker(self.waiting, self._next_new, idle=not self.running,
                                         finished=lambda: not self.queue)
            if job.kind == "end":  # the trials still paused end at their rung
                self.waiting -= set(job.trial_ids)
                continue
            if job.kind == "idle":
                return None
            self.waiting.discard(job.trial_ids[0])
            self.running.add(job.trial_ids[0])
            return Work(job.trial_ids[0], {"index": int(job.trial_ids[0])})

    def _next_new(self) -> str | None:
        return self.queue.pop(0) if self.queue else None

    def on_epoch(self, key: str, epoch: int, value: float) -> bool:
        if epoch >= self.max_epochs:
            self.running.discard(key)
            return False
        if epoch not in self.rules.rungs.milestones or self.rules.at_rung(key, epoch, value, (),
                                                                           self.waiting):
            return True
        self.running.discard(key)
        self.waiting.add(key)
        return False
