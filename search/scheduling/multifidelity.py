"""A model-based multi-fidelity searcher: TPE fit on promotion ASHA's rungs, as they fill.

BOHB (Falkner, Klein, Hutter, ICML 2018) fits a TPE-style pair of densities (the good and the bad
configurations) on the highest budget that has enough results, samples candidates from the good
density and takes the one where good / bad is largest, with a third of its trials drawn at random.
This searcher does the same on promotion ASHA's asynchronous rungs instead of Hyperband's brackets,
and differs where the LCBench surrogate showed it to matter (numbers in the README, `search`):

- it learns from each rung as results arrive (`on_trial_result` at each rung epoch), not only from
  finished trials: with promotion ASHA most trials end at the first rung, and a model that waits for
  full runs (tune-run's `optuna`) waits for most of the budget;
- it never models the first rung when there are others: one epoch can rank trials nearly at random
  (LCBench task 167168: a rank correlation of 0.16 between epochs 1 and 52; 0.87 for epoch 3). Until
  a higher rung holds d + 2 results (d: the searched dimensions), suggestions are random;
- each density holds the uniform prior as one more point (as Optuna's TPE does), kernels are at
  least MIN_BANDWIDTH wide, and candidates reflect at the cube's faces: with BOHB's narrow kernels
  the good density collapsed onto a few points of the first rung.
Measured and left out: pooling the lower rungs into the densities (weighted by how well each rung's
ranking agrees with the top one's) and counting trials stopped below the top rung as bad both did
worse at the full budget.

Values live in the unit cube: a float or integer range maps linearly (or on a log scale for log
domains), a choice maps to its index. Several objectives rank a rung's trials by how many others
beat them in every objective, then by the first objective. The state (every observation and the
random generator) is saved and restored through Ray's `Searcher.save` / `restore`.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
from ray.tune.search import Searcher
from ray.tune.search.sample import Categorical, Domain, Float, Integer, Normal, Quantized

from search.door.domains import is_grid, is_log, value_set
from search.scheduling.pareto import Objective
from trainables.metrics import EPOCH

# The narrowest kernel, in the unit cube: below it, the good points' basin collapses to a point.
MIN_BANDWIDTH = 0.05
# Points each density keeps (evenly spaced in rank): what a suggestion costs in a big search.
KERNEL_POINTS = 200
# Candidates are drawn from kernels this much wider than the density's (BOHB's bandwidth_factor):
# the model then picks among points beyond the good ones, not only on top of them.
SAMPLING_SPREAD = 3.0
# Results per rung the model keeps (the latest): bounds the cost of a suggestion in big searches.
MAX_POINTS_PER_RUNG = 2000


@dataclass(frozen=True)
class _Dimension:
    """One searched hyperparameter and its map from the unit interval (or a choice's index)."""

    name: str
    domain: Domain

    @property
    def categories(self) -> list | None:
        return list(self.domain.categories) if isinstance(self.domain, Categorical) else None

    def value(self, u: float) -> Any:
        """The domain's value at unit coordinate `u` (a choice: at index `u`)."""
        if self.categories is not None:
            return self.categories[int(u)]
        sampler = self.domain.get_sampler()
        q = sampler.q if isinstance(sampler, Quantized) else None
        base = sampler.get_sampler() if isinstance(sampler, Quantized) else sampler
        if isinstance(base, Normal):  # unbounded: the normal's quantile at u
            x = base.mean + base.sd * NormalDist().inv_cdf(min(max(u, 1e-9), 1 - 1e-9))
            return self._snapped(x, q, -math.inf, math.inf)
        values = value_set(self.domain)
        low, high = self._ends(values.low, values.high, q)
        t = low + u * (high - low)
        x = math.exp(t) if is_log(self.domain) else t
        return self._snapped(x, q, values.low, values.high)

    def unit(self, value: Any) -> float:
        """The unit coordinate of a value of the domain (a choice: its index)."""
        if self.categories is not None:
            return float(self.categories.index(value))
        sampler = self.domain.get_sampler()
        base = sampler.get_sampler() if isinstance(sampler, Quantized) else sampler
        if isinstance(base, Normal):
            return NormalDist(base.mean, base.sd).cdf(float(value))
        values = value_set(self.domain)
        q = sampler.q if isinstance(sampler, Quantized) else None
        low, high = self._ends(values.low, values.high, q)
        t = math.log(value) if is_log(self.domain) else float(value)
        return min(max((t - low) / (high - low), 0.0), 1.0) if high > low else 0.5

    def _ends(self, low: float, high: float, q: float | None) -> tuple[float, float]:
        """The interval the unit coordinate spans: a whole integer (or step) around each end, so
        every value is as likely as a uniform draw makes it; on the log scale for log domains."""
        half = 0.5 * (q or 1.0) if isinstance(self.domain, Integer) or q else 0.0
        low, high = low - half, high + half
        if is_log(self.domain):
            low = low if low > 0 else low + half  # log domains have positive values only
            return math.log(low), math.log(high)
        return low, high

    def _snapped(self, x: float, q: float | None, low: float, high: float) -> Any:
        if q:
            x = round(x / q) * q
        if isinstance(self.domain, Integer):
            return int(min(max(round(x), low), high))
        # A float range never yields its upper end (Ray's rule): the largest float below it.
        return float(min(max(x, low), math.nextafter(high, -math.inf) if not q else high))


class MultiFidelitySearcher(Searcher):
    """TPE on the rungs of promotion ASHA (see the module's docstring); a Ray Tune Searcher.

    `fidelities`: the epochs whose results teach the model (the rungs and max_epochs; with no early
    stopping, max_epochs alone). `gamma`: the share of a rung's trials that count as good.
    `random_fraction`: the share of suggestions drawn uniformly. `space`: Ray Tune domains and
    fixed values, when Ray's Tuner does not pass them (`set_search_properties`).
    """

    def __init__(self, objectives: list[Objective], fidelities: tuple[int, ...], seed: int = 0,
                 gamma: float = 0.15, random_fraction: float = 1 / 3, candidates: int = 64,
                 space: dict[str, Any] | None = None):
        super().__init__(metric=objectives[0].metric, mode=objectives[0].mode)
        self.objectives = list(objectives)
        self.fidelities = tuple(sorted(set(fidelities)))
        self.gamma, self.random_fraction, self.candidates = gamma, random_fraction, candidates
        self.rng = np.random.default_rng(seed)
        self.dims: list[_Dimension] = []
        self.points: dict[str, list[float]] = {}  # trial -> unit coordinates
        # rung epoch -> trial -> the objectives' values, each signed to be maximised
        self.results: dict[int, dict[str, tuple[float, ...]]] = {b: {} for b in self.fidelities}
        if space:
            self._take_space(space)

    # --- Ray's Searcher interface ---------------------------------------------------------------

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec) -> bool:
        if config:
            self._take_space(config)
        return True  # the objectives are the searcher's own (several, or the Tuner's one)

    def suggest(self, trial_id: str) -> dict | None:
        if not self.dims:
            raise RuntimeError("MultiFidelitySearcher has no search space: pass space= or a Tuner "
                               "param_space")
        point = self._next_point()
        self.points[trial_id] = point
        return {d.name: d.value(u) for d, u in zip(self.dims, point)}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self._record(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if result and not error:
            self._record(trial_id, result)

    def get_state(self) -> dict:
        return {"points": self.points, "results": self.results,
                "rng": self.rng.bit_generator.state}

    def set_state(self, state: dict) -> None:
        self.points = dict(state["points"])
        self.results = {b: dict(state["results"].get(b, {})) for b in self.fidelities}
        self.rng.bit_generator.state = state["rng"]

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))

    # --- observations -----------------------------------------------------------------------------

    def _take_space(self, space: dict[str, Any]) -> None:
        for name, value in space.items():  # the door refused these already; a caller may not
            if is_grid(value) or (isinstance(value, Domain)
                                  and not isinstance(value, (Float, Integer, Categorical))):
                raise ValueError(f"space.{name}: MultiFidelitySearcher searches ranges and choices "
                                 "only (no grid_search or sample_from)")
        self.dims = [_Dimension(n, v) for n, v in space.items() if isinstance(v, Domain)]

    def _record(self, trial_id: str, result: dict) -> None:
        epoch = int(result.get(EPOCH, 0))
        if epoch not in self.results:
            return
        if trial_id not in self.points and not self._adopt(trial_id, result):
            return
        self.results[epoch][trial_id] = tuple(_signed(result.get(o.metric), o.mode)
                                              for o in self.objectives)

    def _adopt(self, trial_id: str, result: dict) -> bool:
        """Learns the point of a trial it did not suggest, from the configuration in its result
        (a driver killed while Ray copied its snapshot can leave this state older than the
        trials)."""
        values = [result.get(f"config/{d.name}", (result.get("config") or {}).get(d.name))
                  for d in self.dims]
        if not self.dims or any(v is None for v in values):
            return False
        try:
            self.points[trial_id] = [d.unit(v) for d, v in zip(self.dims, values)]
        except (ValueError, TypeError):  # a value outside this space: not one of its trials
            return False
        return True

    # --- the model --------------------------------------------------------------------------------

    def _next_point(self) -> list[float]:
        model = None if self.rng.random() < self.random_fraction else self._model()
        if model is None:
            return self._uniform(1)[0].tolist()
        good, bad = model
        candidates = self._sample_near(good, self.candidates)
        score = self._log_density(candidates, good) - self._log_density(candidates, bad)
        return candidates[int(np.argmax(score))].tolist()

    def _model(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The good and the bad points of the highest rung with at least d + 2 results, unless
        that is the first of several rungs (see the module's docstring); None: none yet."""
        enough = len(self.dims) + 2
        usable = [b for b in self.fidelities if len(self.results[b]) >= enough]
        if not usable or (usable[-1] == self.fidelities[0] and len(self.fidelities) > 1):
            return None
        return self._split(usable[-1])

    def _split(self, fidelity: int) -> tuple[np.ndarray, np.ndarray]:
        """The rung's trials (the latest MAX_POINTS_PER_RUNG) split into its best `gamma` and the
        rest, as unit points (each side thinned to KERNEL_POINTS)."""
        results = list(self.results[fidelity].items())[-MAX_POINTS_PER_RUNG:]
        order = _best_first([v for _, v in results])
        n_good = max(2, int(math.ceil(self.gamma * len(order))))

        def points(ranked: list[int]) -> np.ndarray:
            return np.array([self.points[results[i][0]] for i in _thinned(ranked)],
                            dtype=float).reshape(-1, len(self.dims))

        return points(order[:n_good]), points(order[n_good:])

    def _is_choice(self) -> np.ndarray:
        return np.array([d.categories is not None for d in self.dims])

    def _sizes(self) -> np.ndarray:
        return np.array([len(d.categories) if d.categories is not None else 0 for d in self.dims])

    def _uniform(self, n: int) -> np.ndarray:
        u = self.rng.random((n, len(self.dims)))
        sizes = self._sizes()
        return np.where(sizes > 0, np.floor(u * np.maximum(sizes, 1)), u)

    def _bandwidths(self, points: np.ndarray) -> np.ndarray:
        """Per dimension: Scott's rule in the unit cube for ranges (at least MIN_BANDWIDTH), and
        for choices the probability of moving to another value."""
        n, d = points.shape
        spread = points.std(axis=0) if n > 1 else np.full(d, 0.3)
        bw = np.clip(spread * n ** (-1.0 / (d + 4)), MIN_BANDWIDTH, 0.5)
        return np.where(self._is_choice(), np.clip(bw, 0.05, 0.5), bw)

    def _sample_near(self, good: np.ndarray, n: int) -> np.ndarray:
        """n candidates from the good density: a good point, moved by its kernel made
        SAMPLING_SPREAD times wider (a choice: switched to another value with its probability)."""
        bw = self._bandwidths(good)
        base = good[self.rng.integers(len(good), size=n)]
        moved = base + self.rng.normal(size=base.shape) * bw * SAMPLING_SPREAD
        moved = np.abs(moved)  # reflected at 0 and 1: stays in the cube
        moved = np.where(moved > 1, 2 - moved, moved).clip(0, 1)
        switch = self.rng.random(base.shape) < bw
        sizes = self._sizes()
        other = np.floor(self.rng.random(base.shape) * np.maximum(sizes, 1))
        return np.where(self._is_choice(), np.where(switch, other, base), moved)

    def _log_density(self, x: np.ndarray, points: np.ndarray) -> np.ndarray:
        """log of the product-kernel density of `points` at x, the uniform prior counted as one
        more point (Optuna's TPE does the same), so a few close points never make a region look
        certain."""
        choice, sizes = self._is_choice(), np.maximum(self._sizes(), 2)
        prior = np.full((len(x), 1), -np.where(choice, np.log(sizes), 0.0).sum())
        if not len(points):
            return prior[:, 0]
        bw = self._bandwidths(points)
        diff = x[:, None, :] - points[None, :, :]  # (candidates, points, dims)
        gauss = -0.5 * (diff / bw) ** 2 - np.log(bw * math.sqrt(2 * math.pi))
        cat = np.where(diff == 0, np.log1p(-bw), np.log(bw / (sizes - 1)))
        per_point = np.concatenate([np.where(choice, cat, gauss).sum(axis=2), prior], axis=1)
        return _logmeanexp(per_point, axis=1)


def _best_first(values: list[tuple[float, ...]]) -> list[int]:
    """Indices of `values` (tuples to maximise) best first: by the first value alone; with several,
    by how many others beat them in every value, then by the first value."""
    v = np.array(values, dtype=float)
    first = v[:, 0]
    if v.shape[1] == 1:
        return list(np.argsort(-first, kind="stable"))
    at_least = (v[None, :, :] >= v[:, None, :]).all(axis=2)  # [i, j]: j at least as good as i
    better = (v[None, :, :] > v[:, None, :]).any(axis=2)
    beaten_by = (at_least & better).sum(axis=1)
    return list(np.lexsort((-first, beaten_by)))


def _thinned(ranked: list[int]) -> list[int]:
    """At most KERNEL_POINTS of `ranked` (best first), evenly spaced in rank: a density of
    thousands of points costs what it gains nothing from."""
    if len(ranked) <= KERNEL_POINTS:
        return ranked
    return [ranked[i] for i in np.linspace(0, len(ranked) - 1, KERNEL_POINTS).round().astype(int)]


def _logmeanexp(a: np.ndarray, axis: int) -> np.ndarray:
    top = a.max(axis=axis, keepdims=True)
    return (top + np.log(np.exp(a - top).mean(axis=axis, keepdims=True))).squeeze(axis)


def _signed(value: Any, mode: str) -> float:
    """The value to maximise (None or NaN: -inf, the worst)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return -math.inf
    return float(value) if mode == "max" else -float(value)
