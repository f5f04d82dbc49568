"""Tests of core/optim.py: optimizers and learning-rate schedules by name."""

from __future__ import annotations

import inspect
import itertools

import pytest
import torch

from core.hparams import HPARAMS, OPTIMIZERS, SCHEDULES
from core.optim import make_optimizer, make_schedule

EXPECTED_CLASS = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "adagrad": torch.optim.Adagrad,
    "adadelta": torch.optim.Adadelta,
    "rmsprop": torch.optim.RMSprop,
}
LR = 0.5


def _params():
    return [torch.nn.Parameter(torch.ones(3))]


def test_every_optimizer_name_is_tested():
    assert set(EXPECTED_CLASS) == set(OPTIMIZERS)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_class_and_settings(name):
    opt = make_optimizer(name, _params(), lr=0.03, momentum=0.8, weight_decay=1e-3, nesterov=True)
    assert type(opt) is EXPECTED_CLASS[name]
    group = opt.param_groups[0]
    assert group["lr"] == 0.03 and group["weight_decay"] == 1e-3
    if name in ("sgd", "rmsprop"):
        assert group["momentum"] == 0.8
    if name in ("adam", "adamw"):
        assert group["betas"] == (0.8, 0.999)
    assert group.get("nesterov", False) == (name == "sgd")


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_takes_a_step(name):
    params = _params()
    opt = make_optimizer(name, params, lr=0.1)
    params[0].grad = torch.ones(3)
    opt.step()
    assert (params[0] < 1).all()  # moved against the gradient


def test_sgd_nesterov_needs_momentum():
    # torch refuses nesterov without momentum; it is then plain SGD.
    opt = make_optimizer("sgd", _params(), lr=0.1, momentum=0.0, nesterov=True)
    assert opt.param_groups[0]["nesterov"] is False
    opt = make_optimizer("sgd", _params(), lr=0.1, momentum=0.9, nesterov=False)
    assert opt.param_groups[0]["nesterov"] is False


@pytest.mark.parametrize("factory", [make_optimizer, make_schedule])
def test_defaults_are_the_tables(factory):
    # A caller that leaves weight_decay out gets the table's 5e-4, not a second default (was 0.0).
    defaults = {name: p.default for name, p in inspect.signature(factory).parameters.items()
                if p.default is not inspect.Parameter.empty}
    assert defaults and defaults == {name: HPARAMS[name].default for name in defaults}


def test_a_default_optimizer_decays_weights_as_the_table_says():
    group = make_optimizer("sgd", _params(), lr=0.1).param_groups[0]
    assert group["weight_decay"] == HPARAMS["weight_decay"].default == 5e-4


def test_unknown_optimizer_lists_choices():
    with pytest.raises(ValueError) as e:
        make_optimizer("lamb", _params(), lr=0.1)
    assert "'lamb'" in str(e.value)
    for name in OPTIMIZERS:
        assert name in str(e.value)


def _trajectory(name, epochs=4, steps_per_epoch=6, warmup_epochs=0, optimizer="sgd"):
    """The lr of each of the epochs * steps_per_epoch optimizer steps, then the lr after them."""
    opt = make_optimizer(optimizer, _params(), lr=LR)
    schedule = make_schedule(name, opt, epochs, steps_per_epoch, warmup_epochs)
    lrs = []
    for _ in range(epochs * steps_per_epoch):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    return lrs, opt.param_groups[0]["lr"]


def _constant(lrs, final):
    assert lrs == pytest.approx([LR] * 24) and final == pytest.approx(LR)


def _step(lrs, final):  # x0.1 at each third of 24 steps
    assert lrs == pytest.approx([LR] * 8 + [LR / 10] * 8 + [LR / 100] * 8)


def _multistep(lrs, final):  # x0.1 at 50 % and 75 %
    assert lrs == pytest.approx([LR] * 12 + [LR / 10] * 6 + [LR / 100] * 6)


def _exponential(lrs, final):  # a constant ratio, down to 1 % at the end
    assert lrs[0] == pytest.approx(LR)
    ratios = [b / a for a, b in zip(lrs, lrs[1:] + [final])]
    assert ratios == pytest.approx([0.01 ** (1 / 24)] * 24)
    assert final == pytest.approx(0.01 * LR)


def _cosine(lrs, final):
    assert lrs[0] == pytest.approx(LR)
    assert lrs[12] == pytest.approx(LR / 2)
    assert all(b < a for a, b in itertools.pairwise(lrs))
    assert lrs[-1] < 0.01 * LR and final == pytest.approx(0, abs=1e-9)


def _onecycle(lrs, final):
    peak = max(range(24), key=lambda i: lrs[i])
    assert 3 <= peak <= 10  # near 30 % of the steps
    assert lrs[peak] == pytest.approx(LR, rel=0.02) and lrs[peak] <= LR
    assert all(b > a for a, b in itertools.pairwise(lrs[:peak + 1]))
    assert all(b < a for a, b in itertools.pairwise(lrs[peak:]))
    assert lrs[0] == pytest.approx(LR / 25)
    assert lrs[-1] < 0.01 * LR


SCHEDULE_CHECKS = {"constant": _constant, "step": _step, "multistep": _multistep,
                   "exponential": _exponential, "cosine": _cosine, "onecycle": _onecycle}


def test_every_schedule_name_is_tested():
    assert set(SCHEDULE_CHECKS) == set(SCHEDULES)


@pytest.mark.parametrize("name", SCHEDULES)
def test_schedule_trajectory(name):
    SCHEDULE_CHECKS[name](*_trajectory(name))


@pytest.mark.parametrize("name", [s for s in SCHEDULES if s != "onecycle"])
def test_warmup_ramps_from_a_tenth_to_lr(name):
    # 1 warm-up epoch of 6 steps: lr/10, then linear up to lr at step 6, then the schedule.
    lrs, final = _trajectory(name, epochs=5, steps_per_epoch=6, warmup_epochs=1)
    assert lrs[:7] == pytest.approx([LR * (0.1 + 0.9 * i / 6) for i in range(7)])
    # What follows is the schedule over the remaining 24 steps, as without warm-up.
    SCHEDULE_CHECKS[name](lrs[6:], final)


def test_warmup_longer_than_training_is_cut():
    lrs, _ = _trajectory("cosine", epochs=2, steps_per_epoch=3, warmup_epochs=5)
    assert lrs[0] == pytest.approx(LR / 10) and max(lrs) <= LR + 1e-9


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_onecycle_works_with_every_optimizer_and_keeps_momentum(optimizer):
    opt = make_optimizer(optimizer, _params(), lr=LR, momentum=0.7)
    before = {k: v for k, v in opt.param_groups[0].items() if k in ("momentum", "betas")}
    schedule = make_schedule("onecycle", opt, 2, 5)
    for _ in range(10):
        opt.step()
        schedule.step()
    after = {k: v for k, v in opt.param_groups[0].items() if k in ("momentum", "betas")}
    assert after == before


def test_unknown_schedule_lists_choices():
    with pytest.raises(ValueError) as e:
        make_schedule("linear", make_optimizer("sgd", _params(), lr=LR), 2, 3)
    assert "'linear'" in str(e.value)
    for name in SCHEDULES:
        assert name in str(e.value)
