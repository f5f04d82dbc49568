"""A CPU trial probes channels-last with its own model in a child process and trains NCHW where the
child dies (a real killed process: a model whose channels-last forward kills itself, as oneDNN's
crash does on some CPUs)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from core.data import Dataset
from core.hparams import resolve
from core.trial import build_trial

CRASHES_IN_CHANNELS_LAST = """
import os, signal
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self, num_classes, in_channels):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.head = nn.Linear(4, num_classes)

    def forward(self, x):
        x = self.conv(x)
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            os.kill(os.getpid(), signal.SIGSEGV)  # what oneDNN's double free does to a trial
        return self.head(x.mean((2, 3)))

def build(num_classes, in_channels):
    return Net(num_classes, in_channels)
"""


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNE_RUN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _data() -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (40, 3, 8, 8)).astype(np.uint8)
    y = (np.arange(40) % 2).astype(np.int64)
    return Dataset("toy", ["a", "b"], x[:32], y[:32], x[32:], y[32:], x[:0], y[:0],
                   (0.5,) * 3, (0.3,) * 3, True)


def _mode(model: str, **config):
    hp = resolve({"batch_size": 16, "lr": 0.05} | config)
    trial = build_trial(_data(), torch.device("cpu"), model_name=model, max_epochs=1,
                        precision="fp32", model_options=[], **hp)
    return trial.mode


def test_a_model_whose_channels_last_step_crashes_trains_nchw_and_says_why(tmp_path, cache):
    (tmp_path / "net.py").write_text(CRASHES_IN_CHANNELS_LAST)
    mode = _mode(f"{tmp_path / 'net.py'}:build")
    assert mode.layout == "nchw"
    assert "SIGSEGV" in mode.why
    assert len(list((cache / "layout-probes").glob("*.json"))) == 1  # kept: probed once


def test_a_model_whose_channels_last_step_hangs_trains_nchw_within_seconds(tmp_path, cache,
                                                                            monkeypatch):
    from core import layout_probe

    monkeypatch.setattr(layout_probe, "HANG_MARGIN_S", 3.0)
    (tmp_path / "net.py").write_text(CRASHES_IN_CHANNELS_LAST.replace(
        "os.kill(os.getpid(), signal.SIGSEGV)", "__import__('time').sleep(3600)"))
    start = time.monotonic()
    mode = _mode(f"{tmp_path / 'net.py'}:build")
    assert mode.layout == "nchw" and "hung" in mode.why
    assert time.monotonic() - start < 60


def test_a_model_that_runs_channels_last_keeps_it(cache):
    # Width 0.5: 32 channels, clear of the 4- and 6-channel shapes that oneDNN crashes on AVX2.
    mode = _mode("resnet18", width=0.5, prune_method="channel", prune_ratio=0.5)
    assert mode.layout == "channels_last" and mode.why == ""
    assert len(list((cache / "layout-probes").glob("*.json"))) == 1  # dense and pruned: one probe
