"""What a Ray Tune domain in a space file can yield, checked against a hyperparameter's range.

Every domain a space file can hold is either checked here or refused with one line: choice,
grid_search, uniform, quniform, loguniform, qloguniform, randn, qrandn, randint, qrandint,
lograndint, qlograndint and sample_from. Each is checked twice: its whole value set, worked out from
its bounds with Ray's own rules (float samplers never return their upper bound; integer ones exclude
it; quantized ones snap both bounds inwards to multiples of q and then include the upper one, except
integers with q == 1), and a few hundred samples drawn from it, so a domain that could yield an
invalid value is refused before anything starts. Only Ray's public sampler classes are used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ray.tune.search.sample import (
    Categorical,
    Domain,
    Float,
    Function,
    Integer,
    LogUniform,
    Normal,
    Quantized,
)

from core.hparams import HParam

# Search algorithms that sample every value from a model of their own: they cannot cross a grid
# or call a function (settings.search, search/door/spec.py).
MODEL_SEARCHERS = ("optuna", "multifidelity")
SAMPLES = 200  # values drawn from each domain at the door
SAMPLE_FROM_CALLS = 20  # calls of a sample_from function at the door


@dataclass(frozen=True)
class ValueSet:
    """The values a numeric domain yields: from `low` to `high`, `high` itself included or not."""

    low: float
    high: float
    high_included: bool

    def __str__(self) -> str:
        return f"[{self.low:g}, {self.high:g}{']' if self.high_included else ')'}"

    @property
    def empty(self) -> bool:
        return self.high < self.low or (self.high == self.low and not self.high_included)


def is_grid(value: Any) -> bool:
    """Whether `value` is a tune.grid_search (a dict {"grid_search": [...]}): the one test of it."""
    return isinstance(value, dict) and set(value) == {"grid_search"}


def domain_choices(value: Any) -> list | None:
    """The values a tune.choice or a tune.grid_search can take; None for any other value."""
    if is_grid(value):
        return list(value["grid_search"])
    return list(value.categories) if isinstance(value, Categorical) else None


def may_take(value: Any, wanted: Any) -> bool:
    """Whether a space entry (a fixed value, a choice, a grid) can take the value `wanted`."""
    choices = domain_choices(value)
    if choices is not None:
        return wanted in choices
    return value == wanted or isinstance(value, Domain)  # a sample_from: it may


def is_dimension(value: Any) -> bool:
    return isinstance(value, Domain) or is_grid(value)


def domain_problem(h: HParam, value: Any, search: str) -> str | None:
    """What is wrong with a domain (or grid) of hyperparameter `h` for search algorithm `search`,
    or None when every value it can yield is allowed."""
    if is_grid(value):
        return _grid_problem(h, value["grid_search"], search)
    if isinstance(value, dict):
        return "nested dicts are not supported here; give one value or one Ray Tune domain"
    if isinstance(value, Categorical):
        return _choice_problem(h, value)
    if isinstance(value, Function):
        return _sample_from_problem(h, value, search)
    if isinstance(value, (Float, Integer)):
        return _numeric_problem(h, value)
    if isinstance(value, Domain):
        return f"the Ray Tune domain {type(value).__name__} is not supported for {h.name}"
    return None


def _grid_problem(h: HParam, values: Any, search: str) -> str | None:
    if search in MODEL_SEARCHERS:
        return (f"tune.grid_search needs settings.search = 'random'; {search!r} samples its "
                "values, use tune.choice")
    if not isinstance(values, list) or not values:
        return "tune.grid_search needs a non-empty list"
    return _first(_fixed_problem(h, v, "tune.grid_search") for v in values)


def _choice_problem(h: HParam, domain: Categorical) -> str | None:
    if not domain.categories:
        return "tune.choice([]) has nothing to choose from; give it at least one value"
    return _first(_fixed_problem(h, v, "tune.choice") for v in domain.categories)


def _fixed_problem(h: HParam, value: Any, where: str) -> str | None:
    if isinstance(value, (Domain, dict)):
        return f"{where} values must be plain values, not {type(value).__name__}"
    return h.check(value)


def _sample_from_problem(h: HParam, domain: Function, search: str) -> str | None:
    if search in MODEL_SEARCHERS:
        return (f"tune.sample_from cannot be searched by settings.search = {search!r}; use "
                "tune.choice or a range")
    for _ in range(SAMPLE_FROM_CALLS):
        try:
            value = domain.sample(config={})
        except Exception as e:  # the function is user code
            return (f"tune.sample_from failed when called at the door with an empty config: "
                    f"{type(e).__name__}: {e}; it may not read other hyperparameters")
        problem = _fixed_problem(h, value, "tune.sample_from")
        if problem:
            return f"tune.sample_from returned a bad value: {problem}"
    return None


def value_set(domain: Float | Integer) -> ValueSet | None:
    """The values a Float or Integer domain can yield; None when unbounded (randn, qrandn)."""
    sampler = domain.get_sampler()
    q = sampler.q if isinstance(sampler, Quantized) else None
    base = sampler.get_sampler() if isinstance(sampler, Quantized) else sampler
    if isinstance(base, Normal):
        return None
    low, high = domain.lower, domain.upper
    if q is None:
        if isinstance(domain, Integer):
            return ValueSet(low, high - 1, True)
        return ValueSet(low, high, False)
    low, high = _snap(low, q, math.ceil) * q, _snap(high, q, math.floor) * q
    if isinstance(domain, Integer) and q == 1:
        return ValueSet(low, high - 1, True)
    return ValueSet(low, high, True)


def _snap(bound: float, q: float, round_fn) -> float:
    """`bound`'s index on the grid of multiples of q, rounded inwards (as Ray's Quantized does)."""
    scaled = bound / q
    return round(scaled) if math.isclose(scaled, round(scaled)) else round_fn(scaled)


def _numeric_problem(h: HParam, domain: Float | Integer) -> str | None:
    if h.choices is not None or h.kind is str:
        allowed = ", ".join(repr(c) for c in h.choices) if h.choices else "a string"
        return f"takes {allowed}; use tune.choice([...]) instead of a numeric range"
    if h.kind is int and isinstance(domain, Float):
        return "takes whole numbers; use tune.randint or tune.choice instead of a float range"
    values = value_set(domain)
    if values is None:
        if h.low == -math.inf and h.high == math.inf:
            return None
        return (f"tune.randn and tune.qrandn can yield any number, but {h.name} must lie in "
                f"{h.range_text()}; use tune.uniform or tune.loguniform")
    if any(math.isnan(b) for b in (values.low, values.high)):
        return "a range bound is NaN"
    if values.empty:
        return f"the range {values} holds no value; give a lower bound below the upper one"
    if not _within(h, values):
        return f"yields values in {values}, which must lie in {h.range_text()}"
    return _sampled_problem(h, domain)


def _within(h: HParam, values: ValueSet) -> bool:
    if not h.in_range(values.low):
        return False
    if values.high_included:
        return h.in_range(values.high)
    # The upper bound itself is never drawn: it may sit on the range's end, open or closed.
    return values.high <= h.high and (h.in_range(values.high) or values.high == h.high)


def _sampled_problem(h: HParam, domain: Float | Integer) -> str | None:
    try:
        samples = domain.sample(size=SAMPLES, random_state=0)
    except Exception as e:  # Ray refuses some degenerate domains only when sampling
        return f"Ray Tune cannot sample this domain: {type(e).__name__}: {e}"
    for value in _as_python(samples):
        problem = h.check(value)
        if problem:
            return f"a value drawn from it is not allowed: {problem}"
    return None


def _as_python(samples: Any) -> list:
    """Ray's samples (a list, a NumPy array or one value) as plain Python numbers."""
    values = samples.tolist() if hasattr(samples, "tolist") else samples
    values = values if isinstance(values, list) else [values]
    return [v.item() if hasattr(v, "item") else v for v in values]


def largest_value(value: Any) -> float | None:
    """The largest value a numeric domain, grid or fixed number can take (None if not numeric)."""
    choices = domain_choices(value)
    if choices is not None:
        numbers = [v for v in choices if isinstance(v, (int, float))]
        return max(numbers) if numbers else None
    if isinstance(value, (Float, Integer)):
        values = value_set(value)
        return None if values is None else values.high
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return None


def example_value(value: Any) -> Any:
    """One value a fixed value, grid or domain can take: itself, the first choice, or the lower end
    of a range (what the door builds a model with to probe it)."""
    choices = domain_choices(value)
    if choices is not None:
        return choices[0]
    if isinstance(value, (Float, Integer)):
        values = value_set(value)
        return value.lower if values is None else values.low
    return value


def _first(problems) -> str | None:
    return next((p for p in problems if p), None)


def is_log(domain: Float | Integer) -> bool:
    """Whether a numeric domain samples on a log scale (loguniform, qloguniform, lograndint...)."""
    sampler = domain.get_sampler()
    base = sampler.get_sampler() if isinstance(sampler, Quantized) else sampler
    return isinstance(base, LogUniform)


def grid_points(space: dict[str, Any]) -> int:
    """How many configurations the grid searches of a space make (1 without any)."""
    points = 1
    for value in space.values():
        if is_grid(value):
            points *= len(value["grid_search"])
    return points


def describe(value: Any) -> str:
    """A domain in words, with the values it yields: 'float loguniform [0.001, 0.1)'."""
    if is_grid(value):
        return f"grid_search {value['grid_search']}"
    if isinstance(value, Categorical):
        return f"choice {value.categories}"
    if isinstance(value, Function):
        return "sample_from (a function)"
    if isinstance(value, (Float, Integer)):
        sampler = value.get_sampler()
        base = sampler.get_sampler() if isinstance(sampler, Quantized) else sampler
        kind = ("normal" if isinstance(base, Normal) else "loguniform" if is_log(value)
                else "uniform") + (f" q={sampler.q:g}" if isinstance(sampler, Quantized) else "")
        values = value_set(value)
        return f"{type(value).__name__.lower()} {kind} {values or '(unbounded)'}"
    return type(value).__name__


def with_values_mapped(value: Any, fn) -> Any:
    """A fixed value, tune.choice or tune.grid_search with `fn` applied to each value it can take
    (any other domain as it is)."""
    if is_grid(value):
        return {"grid_search": [fn(v) for v in value["grid_search"]]}
    if isinstance(value, Categorical):
        import copy

        mapped = copy.copy(value)
        mapped.categories = [fn(v) for v in value.categories]
        return mapped
    return value if isinstance(value, Domain) else fn(value)
