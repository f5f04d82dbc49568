"""Tests of core/hparams.py: the one table of hyperparameters and its checks."""

from __future__ import annotations

import math

import pytest

from core.hparams import FAULT_KEY, HPARAMS, OPTIMIZERS, defaults, resolve, suggest


def test_resolve_fills_every_default():
    # An empty config is the table's defaults, name for name.
    assert resolve({}) == defaults()
    assert set(resolve({})) == set(HPARAMS)


def test_resolve_keeps_given_values_over_defaults():
    full = resolve({"lr": 0.01, "optimizer": "adamw"})
    assert full["lr"] == 0.01 and full["optimizer"] == "adamw"
    assert full["momentum"] == HPARAMS["momentum"].default
    assert full["schedule"] == HPARAMS["schedule"].default


def test_resolve_rejects_unknown_name_with_suggestion():
    with pytest.raises(ValueError, match=r"unknown hyperparameter 'lrr'; did you mean 'lr'\?"):
        resolve({"lrr": 0.1})


def test_resolve_rejects_unknown_name_without_close_match():
    with pytest.raises(ValueError) as e:
        resolve({"zzzzzz": 1})
    assert "'zzzzzz'" in str(e.value) and "did you mean" not in str(e.value)


def test_check_suggests_close_choice():
    # The rule: a misspelt choice names every allowed one and the closest.
    message = HPARAMS["optimizer"].check("admaw")
    assert "did you mean 'adamw'?" in message
    for name in OPTIMIZERS:
        assert repr(name) in message
    with pytest.raises(ValueError, match=r"optimizer: .*did you mean 'adamw'"):
        resolve({"optimizer": "admaw"})


def test_suggest_is_empty_when_nothing_is_close():
    assert suggest("qqq", OPTIMIZERS) == ""
    assert suggest("sgdd", OPTIMIZERS) == "; did you mean 'sgd'?"


@pytest.mark.parametrize(
    "name, value",
    [
        ("lr", 0),  # low end is open
        ("lr", -0.1),
        ("lr", 10.5),
        ("dropout", 1.0),  # high end is open
        ("label_smoothing", -0.1),
        ("prune_ratio", 1),
        ("mixup_alpha", -1),
        ("batch_size", 1.5),  # must be whole
        ("batch_size", 0),
        ("momentum", 1.0),
        ("width", 0.0),
        ("warmup_epochs", -1),
        ("seed", 2**31),
        ("lr", math.nan),
        ("lr", math.inf),
    ],
)
def test_resolve_rejects_out_of_range(name, value):
    with pytest.raises(ValueError, match=rf"^{name}: "):
        resolve({name: value})


def test_range_message_names_the_interval():
    assert HPARAMS["lr"].check(0) == "must be in (0, 10], got 0"
    assert HPARAMS["dropout"].check(1.0) == "must be in [0, 1), got 1.0"
    assert HPARAMS["batch_size"].check(1.5) == "must be a whole number, got 1.5"


@pytest.mark.parametrize(
    "name, value",
    [
        ("lr", 10.0),
        ("lr", 1e-9),
        ("momentum", 0.0),
        ("dropout", 0.0),
        ("dropout", 0.999),
        ("label_smoothing", 0.0),
        ("prune_ratio", 0.0),
        ("prune_ratio", 0.99),
        ("mixup_alpha", 0.0),
        ("mixup_alpha", 100.0),
        ("width", 8.0),
        ("warmup_epochs", 0),
        ("warmup_epochs", 1000),
        ("batch_size", 1),
        ("batch_size", 65536),
        ("seed", 0),
        ("seed", 2**31 - 1),
        ("weights", None),
        ("weights", "/some/file.pt"),
        ("nesterov", True),
    ],
)
def test_resolve_accepts_allowed_boundaries(name, value):
    assert resolve({name: value})[name] == value


@pytest.mark.parametrize(
    "name, value",
    [
        ("lr", True),  # a bool is not a number here
        ("lr", "0.1"),
        ("nesterov", 1),  # choices are matched by type too
        ("optimizer", None),
        ("weights", 3),
    ],
)
def test_resolve_rejects_wrong_types(name, value):
    with pytest.raises(ValueError, match=rf"^{name}: "):
        resolve({name: value})


def test_integer_hparams_come_back_as_int():
    full = resolve({"batch_size": 64.0, "warmup_epochs": 2.0, "seed": 7.0})
    assert (full["batch_size"], full["warmup_epochs"], full["seed"]) == (64, 2, 7)
    assert all(type(full[k]) is int for k in ("batch_size", "warmup_epochs", "seed"))


def test_fault_key_is_allowed_but_not_returned():
    full = resolve({FAULT_KEY: {"epoch": 1}, "lr": 0.2})
    assert FAULT_KEY not in full and full["lr"] == 0.2


def test_every_default_passes_its_own_check():
    for h in HPARAMS.values():
        assert h.check(h.default) is None, h.name


@pytest.mark.parametrize("name", [n for n, h in HPARAMS.items() if h.kind is int])
def test_resolve_takes_a_whole_float_of_an_integer_hyperparameter_as_that_int(name):
    # Every integer of the table alike, by its declared kind (no hand-written list of names).
    full = resolve({name: 2.0})
    assert full[name] == 2 and type(full[name]) is int
