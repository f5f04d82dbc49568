"""Tests of trainables/metrics.py: what a reported value is, for ranking, plots and the console."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainables.metrics import finite, finite_float


@pytest.mark.parametrize("value", [0, 0.5, -3, np.float64(0.25)])
def test_a_number_is_finite_and_a_float(value):
    assert finite(value) and finite_float(value) == float(value)
    assert type(finite_float(value)) is float


@pytest.mark.parametrize("value", [None, True, False, math.nan, math.inf, -math.inf, "0.5", [1]])
def test_anything_else_is_not_ranked(value):
    # A diverged trial reports NaN; a bool is not a score even though Python counts it an int.
    assert not finite(value) and finite_float(value) is None


def test_every_metric_the_door_accepts_is_reported_by_an_epoch():
    # METRICS (what a search may rank by and MLflow logs) and core/trial.py's report are two lists
    # of one fact: a metric renamed in one of them fails here. latency_ms_gpu comes from GPUs only.
    from tests.core.test_trial import _data, _trial
    from trainables.metrics import METRICS

    reported = _trial(_data()).run_epoch(1).metrics()
    assert set(METRICS) - {"latency_ms_gpu"} <= set(reported)
