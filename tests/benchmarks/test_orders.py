"""Tests of benchmarks/virtual/orders.py: the scheduler's decisions replayed on known curves."""

from __future__ import annotations

from benchmarks.virtual.orders import replay_many, replay_order

# Four trials, each worse than the one before at every epoch; every epoch takes 1 s.
CURVES = [[0.5 - 0.1 * i + 0.01 * e for e in range(4)] for i in range(4)]
SECONDS = [[1.0] * 4 for _ in range(4)]


def test_one_worker_in_order_trains_what_successive_halving_trains():
    # Rungs at epochs 1 and 2: 4 trials reach rung 1, the best 2 rung 2, the best 1 goes to 4.
    epochs, best = replay_order(CURVES, SECONDS, [0, 1, 2, 3], workers=1, grace_period=1,
                          reduction_factor=2, max_epochs=4)
    assert epochs == 4 + 2 * 1 + 1 * 2
    assert best == CURVES[0][3]


def test_the_best_trial_arriving_last_still_reaches_the_end():
    epochs, best = replay_order(CURVES, SECONDS, [3, 2, 1, 0], workers=1, grace_period=1,
                          reduction_factor=2, max_epochs=4)
    assert best == CURVES[0][3]
    assert 8 <= epochs <= 16  # early promotions, judged among fewer trials, cost extra epochs


def test_many_orders_summarise_epochs_and_accuracy_against_fifo():
    trials = [{"val_acc_by_epoch": c, "epoch_seconds_by_epoch": s} for c, s in zip(CURVES, SECONDS)]
    out = replay_many(trials, workers=2, grace_period=1, reduction_factor=2, max_epochs=4,
                      orders=50, seed=1)
    assert out["fifo_epochs"] == 16 and out["orders"] == 50
    assert sum(out["epochs_counts"].values()) == 50
    assert 8 <= out["min_epochs"] <= out["mean_epochs"] <= out["max_epochs"] <= 16
    assert out["mean_share"] == out["mean_epochs"] / 16
    # The best trial is in the top half at every rung, and a second trial always joins it there.
    assert out["worst_points_below_fifo"] == 0 and out["orders_within_1_point"] == 1
