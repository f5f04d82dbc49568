"""Tests of core/trial.py: one trial's set-up from plain arguments, and its epoch."""

from __future__ import annotations

import inspect
import io
import math

import numpy as np
import pytest
import torch

from core.data import Dataset
from core.hparams import HPARAMS, resolve
from core.pruning import ChannelPruner
from core.trial import TrialOutOfMemory, build_trial

SETTINGS = {"data", "device", "model_name", "max_epochs", "precision", "compile", "model_options",
            "model_extras", "augment"}


def _data(n: int = 48, val: int = 16) -> Dataset:
    """(N, 1, 8, 8) uint8 noise: class 0 dark, class 1 bright."""
    rng = np.random.default_rng(0)
    y = np.arange(n + val) % 2
    x = (rng.integers(0, 100, (n + val, 1, 8, 8)) + 156 * y[:, None, None, None]).astype(np.uint8)
    return Dataset("toy", ["dark", "bright"], x[:n], y[:n].astype(np.int64), x[n:],
                   y[n:].astype(np.int64), x[:0], y[:0].astype(np.int64), (0.5,), (0.3,), True)


def _trial(data: Dataset, max_epochs: int = 3, **config):
    hp = resolve({"width": 0.0625, "batch_size": 16, "lr": 0.05} | config)
    return build_trial(data, torch.device("cpu"), model_name="resnet18", max_epochs=max_epochs,
                       precision="fp32", **hp)


def test_its_hyperparameter_arguments_are_the_table_of_hyperparameters():
    # One table: a hyperparameter added to core/hparams.py without reaching the trial fails here.
    parameters = inspect.signature(build_trial).parameters
    assert set(parameters) - SETTINGS == set(HPARAMS)
    assert all(parameters[name].default is inspect.Parameter.empty for name in HPARAMS)


def test_an_epoch_trains_evaluates_and_reports_what_the_trainable_reports():
    trial = _trial(_data())
    assert trial.steps_per_epoch == 3 and trial.eval_batch == 128  # 48 // 16 on a CPU
    result = trial.run_epoch(1)
    metrics = result.metrics()
    for key in ("epoch", "train_loss", "val_loss", "val_acc", "lr", "sparsity", "epoch_seconds",
                "images_per_s", "params", "macs", "latency_ms", "precision", "layout", "device"):
        assert key in metrics, key
    assert metrics["epoch"] == 1 and metrics["lr"] == pytest.approx(0.05)
    assert result.stats.images == 48 and not result.diverged
    assert (metrics["precision"], metrics["device"]) == ("fp32", "cpu")
    # Channels-last unless this CPU's probe refused it for 4 channels (AVX2-only EPYCs do).
    assert metrics["layout"] == "channels_last" or trial.mode.why.startswith("channels-last probe")


def test_the_same_arguments_give_the_same_trial():
    first, second = _trial(_data()).run_epoch(1), _trial(_data()).run_epoch(1)
    assert first.stats.loss == second.stats.loss and first.val_acc == second.val_acc


def test_its_training_state_resumes_it_where_it_was():
    # Epoch 2 after a restore from epoch 1's state trains as epoch 2 without the interruption.
    data = _data()
    trial = _trial(data, prune_method="channel", prune_ratio=0.5)
    trial.run_epoch(1)
    buffer = io.BytesIO()
    torch.save(trial.training_state(), buffer)  # as a checkpoint file holds it
    straight = trial.run_epoch(2)

    resumed = _trial(data, prune_method="channel", prune_ratio=0.5)
    buffer.seek(0)
    resumed.load_training_state(torch.load(buffer, weights_only=False))
    again = resumed.run_epoch(2)
    assert isinstance(resumed.pruner, ChannelPruner)
    assert again.stats.loss == pytest.approx(straight.stats.loss, rel=1e-5)
    assert again.sparsity == pytest.approx(straight.sparsity)
    assert again.lr == pytest.approx(straight.lr)


def test_a_diverged_epoch_is_not_pruned():
    trial = _trial(_data(), prune_ratio=0.5)

    def poison():
        with torch.no_grad():
            next(trial.model.parameters()).fill_(math.nan)

    result = trial.run_epoch(1, before=poison)
    assert result.diverged and result.sparsity == 0.0


def test_out_of_memory_names_the_batch_size_and_model():
    trial = _trial(_data())

    def too_big():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(TrialOutOfMemory, match=r"epoch 3 with batch_size=16, model resnet18 "
                       r"width=0.0625 conv=standard.*Tried to allocate"):
        trial.run_epoch(3, before=too_big)
