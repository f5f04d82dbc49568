"""Every Ray Tune domain is checked against a hyperparameter's range with its own bounds."""

from __future__ import annotations

import pytest
from ray import tune

from core.hparams import HPARAMS, HParam
from search.door.domains import (
    MODEL_SEARCHERS,
    ValueSet,
    describe,
    domain_choices,
    domain_problem,
    is_grid,
    largest_value,
    value_set,
)
from tests.search.conftest import refuse_space_file, space_file

# A float range [0, 1) and an integer range [1, 10], as the table declares ranges.
UNIT = HParam("unit", 0.0, "test", low=0.0, high=1.0, high_open=True)
OPEN_LOW = HParam("open_low", 1.0, "test", low=0.0, high=10.0, low_open=True)  # like lr: (0, 10]
COUNT = HParam("count", 1, "test", kind=int, low=1, high=10)


@pytest.mark.parametrize("domain,expected", [
    (tune.uniform(0.0, 1.0), ValueSet(0.0, 1.0, False)),  # Ray never draws a float's upper bound
    (tune.loguniform(1e-3, 1.0), ValueSet(1e-3, 1.0, False)),
    (tune.quniform(0.0, 1.0, 0.25), ValueSet(0.0, 1.0, True)),  # quantized: upper included
    (tune.qloguniform(0.1, 1.0, 0.1), ValueSet(0.1, 1.0, True)),
    (tune.randint(1, 10), ValueSet(1, 9, True)),  # integers exclude their upper bound
    (tune.lograndint(1, 10), ValueSet(1, 9, True)),
    (tune.qrandint(0, 10, 2), ValueSet(0, 10, True)),  # q > 1: upper included
    (tune.qrandint(1, 10, 1), ValueSet(1, 9, True)),  # q == 1: as randint
    (tune.qlograndint(2, 10, 2), ValueSet(2, 10, True)),
    (tune.randn(0.0, 1.0), None),
    (tune.qrandn(0.0, 1.0, 0.5), None),
])
def test_value_set_follows_rays_bounds(domain, expected):
    assert value_set(domain) == expected


@pytest.mark.parametrize("domain", [
    tune.uniform(0.0, 1.0),  # 1.0 itself is never drawn, and [0, 1) excludes it: fine
    tune.quniform(0.0, 0.75, 0.25),
    tune.choice([0.0, 0.5]),
    tune.grid_search([0.0, 0.9]),
    tune.sample_from(lambda _: 0.5),
])
def test_domains_inside_the_range_pass(domain):
    assert domain_problem(UNIT, domain, "random") is None


@pytest.mark.parametrize("domain,fragment", [
    (tune.quniform(0.0, 1.0, 0.25), "[0, 1]"),  # can draw 1.0, which [0, 1) excludes
    (tune.uniform(-0.1, 0.5), "[-0.1, 0.5)"),
    (tune.uniform(0.0, 1.5), "[0, 1.5)"),
    (tune.randn(0.0, 0.1), "any number"),
    (tune.qrandn(0.5, 0.1, 0.1), "any number"),
    (tune.choice([]), "nothing to choose"),
    (tune.choice([0.5, 1.0]), "must be in [0, 1)"),
    (tune.choice([0.5, tune.uniform(0, 1)]), "plain values"),
    (tune.grid_search([]), "non-empty list"),
    (tune.sample_from(lambda _: 2.0), "returned a bad value"),
    (tune.sample_from(lambda spec: spec.config.lr * 2), "failed when called"),
    ({"a": 1}, "nested dicts"),
    (tune.uniform(0.5, 0.5), "holds no value"),
])
def test_domains_that_can_leave_the_range_are_refused(domain, fragment):
    problem = domain_problem(UNIT, domain, "random")
    assert problem is not None and fragment in problem, problem


def test_an_open_lower_end_refuses_a_range_starting_on_it():
    assert "(0, 10]" not in (domain_problem(OPEN_LOW, tune.uniform(0.01, 10.0), "random") or "")
    assert domain_problem(OPEN_LOW, tune.uniform(0.0, 1.0), "random") is not None
    assert domain_problem(OPEN_LOW, tune.loguniform(1e-4, 10.0), "random") is None
    assert domain_problem(OPEN_LOW, tune.quniform(0.0, 1.0, 0.5), "random") is not None


@pytest.mark.parametrize("domain,ok", [
    (tune.randint(1, 11), True),  # 1..10
    (tune.randint(1, 12), False),  # can draw 11
    (tune.randint(0, 5), False),  # can draw 0
    (tune.qrandint(2, 10, 2), True),  # 2..10, upper included
    (tune.qrandint(2, 12, 2), False),  # can draw 12
    (tune.lograndint(1, 11), True),
    (tune.qlograndint(2, 12, 2), False),
])
def test_integer_domains_at_their_bounds(domain, ok):
    assert (domain_problem(COUNT, domain, "random") is None) is ok


def test_float_ranges_are_refused_for_whole_numbers():
    problem = domain_problem(COUNT, tune.uniform(1, 5), "random")
    assert "whole numbers" in problem


def test_numeric_ranges_are_refused_for_choices():
    problem = domain_problem(HPARAMS["optimizer"], tune.uniform(0, 1), "random")
    assert "tune.choice" in problem


@pytest.mark.parametrize("search", MODEL_SEARCHERS)
def test_model_searchers_refuse_grids_and_functions(search):
    assert "grid_search" in domain_problem(UNIT, tune.grid_search([0.1]), search)
    assert repr(search) in domain_problem(UNIT, tune.sample_from(lambda _: 0.1), search)


def test_largest_value_and_description():
    assert largest_value(tune.randint(0, 5)) == 4
    assert largest_value(tune.qrandint(0, 6, 3)) == 6
    assert largest_value(tune.grid_search([1, 3])) == 3
    assert largest_value(2) == 2
    assert describe(tune.loguniform(1e-3, 0.1)) == "float loguniform [0.001, 0.1)"
    assert describe(tune.qrandint(0, 6, 3)) == "integer uniform q=3 [0, 6]"
    assert describe(tune.randn(0, 1)) == "float normal (unbounded)"


# Every Ray domain in a space file, checked at the door with its own bounds:
# (id, space file text, CLI flags, fragments the error must name)
BAD_DOMAINS = [
    ("empty-choice", space_file(space='{"lr": tune.choice([])}'), [],
     ["space.lr", "nothing to choose"]),
    ("randn-for-a-bounded-range", space_file(space='{"lr": tune.randn(0.1, 0.01)}'), [],
     ["space.lr", "any number"]),
    ("qrandn-for-a-bounded-range", space_file(space='{"dropout": tune.qrandn(0.2, 0.1, 0.1)}'), [],
     ["space.dropout", "any number"]),
    ("quniform-reaches-an-open-end", space_file(space='{"dropout": tune.quniform(0.0, 1.0, 0.5)}'),
     [], ["space.dropout", "[0, 1]"]),
    ("qrandint-reaches-its-upper-bound",
     space_file(space='{"batch_size": tune.qrandint(16, 65552, 16)}'), [], ["space.batch_size"]),
    ("randint-below-the-range", space_file(space='{"batch_size": tune.randint(0, 64)}'), [],
     ["space.batch_size", "[0, 63]"]),
    ("lograndint-for-a-choice", space_file(space='{"optimizer": tune.lograndint(1, 4)}'), [],
     ["space.optimizer", "tune.choice"]),
    ("qloguniform-above-the-range",
     space_file(space='{"weight_decay": tune.qloguniform(0.1, 2.0, 0.1)}'), [],
     ["space.weight_decay"]),
    ("empty-range", space_file(space='{"lr": tune.uniform(0.1, 0.1)}'), [],
     ["space.lr", "holds no value"]),
    ("nested-dict", space_file(space='{"lr": {"low": 0.01, "high": 0.1}}'), [],
     ["space.lr", "nested dicts"]),
    ("sample-from-bad-value", space_file(space='{"lr": tune.sample_from(lambda _: -1.0)}'), [],
     ["space.lr", "tune.sample_from returned a bad value"]),
    ("sample-from-raises", space_file(space='{"lr": tune.sample_from(lambda _: 1 / 0)}'), [],
     ["space.lr", "ZeroDivisionError"]),
    ("choice-of-domains", space_file(space='{"lr": tune.choice([tune.uniform(0.1, 0.2)])}'), [],
     ["space.lr", "plain values"]),
    ("ray-refuses-at-import", space_file(space='{"lr": tune.quniform(0.01, 0.1, 0.03)}'), [],
     ["bad.py:4", "ValueError"]),
]


@pytest.mark.bad_input
@pytest.mark.parametrize("case_id,text,flags,fragments", BAD_DOMAINS, ids=[c[0] for c in BAD_DOMAINS])
def test_bad_domain_in_a_space_file_is_refused(case_id, text, flags, fragments, workdir, capsys):
    refuse_space_file(text, flags, fragments, workdir, capsys)


def test_a_grid_and_a_choice_have_choices_and_nothing_else_does():
    # One test of a grid (is_grid) for the door, the --dry-run samples, the objectives and the report.
    assert is_grid(tune.grid_search([1, 2])) and not is_grid({"grid_search": [1], "x": 2})
    assert domain_choices(tune.grid_search(["sgd", "adamw"])) == ["sgd", "adamw"]
    assert domain_choices(tune.choice([0.1, 0.2])) == [0.1, 0.2]
    for other in (tune.uniform(0, 1), 0.1, "sgd", {"grid_search": [1], "x": 2}):
        assert domain_choices(other) is None
