"""Tests of benchmarks/sections/gpu.py: it runs with torch and core/ alone, as on the GPU machine, and
its trial is the trainable's trial (core.trial's set-up and epoch), not a copy of it."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import core.trial
from benchmarks.sections import gpu
from core.data import Dataset
from tests.conftest import REPO

# What the GPU machine lacks; search/ and trainables/ need Ray, so they must not be imported either.
BLOCKED = ("ray", "mlflow", "optuna", "search", "trainables")

BLOCKER = f"""
import sys

class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not on the GPU machine)")
        return None

sys.meta_path.insert(0, Blocked())
"""


def _without_ray(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_the_blocker_blocks():
    done = _without_ray("import ray")
    assert done.returncode != 0 and "not on the GPU machine" in done.stderr


def test_the_driver_and_the_gpu_section_import_and_train_without_ray_or_mlflow():
    done = _without_ray("""
        import dataclasses
        import torch
        from benchmarks import run
        from benchmarks.sections import gpu

        assert run.main(["--list"]) == 0
        sizes = dataclasses.replace(gpu.QUICK, batch=16, epochs=1)
        plan = gpu.Plan.from_budget(60)
        b = gpu.part_b(gpu.load_subset(48, 16), torch.device("cpu"), sizes, plan)
        assert b["epochs"][0]["images"] == 48 and b["mode"].endswith("channels_last"), b
        print("trained", b["epochs"][0]["train_loss"])
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "gpu  " in done.stdout and "trained" in done.stdout


def _data(n: int = 32, val: int = 16) -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n + val, 3, 8, 8), dtype=np.uint8)
    y = (np.arange(n + val) % 2).astype(np.int64)
    return Dataset("toy", ["a", "b"], x[:n], y[:n], x[n:], y[n:], x[:0], y[:0], (0.5,) * 3,
                   (0.25,) * 3, True)


@pytest.fixture
def trials_built(monkeypatch):
    """Every core.trial.Trial built, and every epoch it ran, whoever built it."""
    built, epochs = [], []
    init, run_epoch = core.trial.Trial.__init__, core.trial.Trial.run_epoch

    def spy_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        built.append(self)

    def spy_run_epoch(self, epoch, before=None):
        result = run_epoch(self, epoch, before)
        epochs.append((self, result))
        return result

    monkeypatch.setattr(core.trial.Trial, "__init__", spy_init)
    monkeypatch.setattr(core.trial.Trial, "run_epoch", spy_run_epoch)
    return built, epochs


def _fake_ray(monkeypatch, reports: list) -> None:
    """Ray's calls the trainable makes, answered in this process: no checkpoint to resume from,
    one CPU, and every report kept."""
    from trainables import classifier

    resources = SimpleNamespace(required_resources={"CPU": 1})
    fake_tune = SimpleNamespace(
        get_checkpoint=lambda: None,
        get_context=lambda: SimpleNamespace(get_trial_resources=lambda: resources),
        report=lambda metrics, checkpoint=None: reports.append(metrics),
        Checkpoint=SimpleNamespace(from_directory=lambda folder: folder))
    fake_ray = SimpleNamespace(get_gpu_ids=lambda: [],
                               get_runtime_context=lambda: SimpleNamespace(get_node_id=lambda: "n"))
    monkeypatch.setattr(classifier, "tune", fake_tune)
    monkeypatch.setattr(classifier, "ray", fake_ray)


def test_the_gpu_check_trains_the_trial_the_trainable_trains(monkeypatch, trials_built):
    # The same hyperparameters and data through the trainable and through the GPU section's trial
    # build a core.trial.Trial each, run its epochs, and give the same numbers.
    from trainables.classifier import TrialSettings, train_classifier

    built, epochs = trials_built
    threads = torch.get_num_threads()
    sizes = dataclasses.replace(gpu.QUICK, width=0.0625, batch=16, epochs=2)
    hp = gpu.trial_hparams(sizes)
    data = _data()
    reports: list = []
    _fake_ray(monkeypatch, reports)
    try:
        train_classifier(dict(hp), data, TrialSettings("resnet18", max_epochs=sizes.epochs))
        assert len(built) == 1 and len(epochs) == 2 and len(reports) == 2

        trial = gpu.new_trial(data, torch.device("cpu"), hp, sizes.epochs)
        rows = [gpu.run_epoch(trial, epoch) for epoch in (1, 2)]
    finally:
        torch.set_num_threads(threads)
    assert len(built) == 2 and built[1] is trial and len(epochs) == 4
    for report, row in zip(reports, rows):
        assert row["train_loss"] == pytest.approx(report["train_loss"], rel=1e-6)
        assert row["val_acc"] == report["val_acc"]
    assert trial.eval_batch == built[0].eval_batch and trial.mode == built[0].mode
    assert trial.steps_per_epoch == built[0].steps_per_epoch == 2


def test_out_of_memory_is_the_trials_own_error(monkeypatch):
    # Part (d) records what Trial.run_epoch raises, and torch's error under it.
    def out_of_memory():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")

    def too_big(hp):
        gpu.new_trial(_data(), torch.device("cpu"), hp, 1).run_epoch(1, before=out_of_memory)

    monkeypatch.setattr(gpu, "reset_peak", lambda device: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: 0)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    result = {"tries": []}
    hp = gpu.trial_hparams(dataclasses.replace(gpu.QUICK, width=0.0625, batch=16))
    message = gpu._try_oom(result, 16, 0.0625, lambda: too_big(hp))
    assert message == "CUDA out of memory. Tried to allocate 9.00 GiB"
    assert result["error_type"] == "torch.OutOfMemoryError"
    assert result["trial_message"].startswith("TrialOutOfMemory: out of memory on cpu at epoch 1 "
                                              "with batch_size=16, model resnet18 width=0.0625")
