"""Tests of core/losses.py: cross-entropy with label smoothing, for hard and soft targets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from core.losses import classification_loss
from core.mixup import make_mixup

K = 4


def _logits(b=6, seed=0) -> torch.Tensor:
    return 3 * torch.randn(b, K, generator=torch.Generator().manual_seed(seed))


def _by_hand(logits: torch.Tensor, targets: torch.Tensor, eps: float) -> torch.Tensor:
    """-sum(((1 - eps) * t + eps / K) * log_softmax) averaged over the batch, with no torch loss."""
    logits = logits.double()
    log_softmax = logits - logits.exp().sum(1, keepdim=True).log()
    smoothed = (1 - eps) * targets.double() + eps / logits.shape[1]
    return -(smoothed * log_softmax).sum(1).mean()


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_hard_labels(eps):
    logits, y = _logits(), torch.tensor([0, 1, 2, 3, 3, 0])
    expected = _by_hand(logits, F.one_hot(y, K), eps)
    assert classification_loss(logits, y, eps).item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_soft_targets(eps):
    logits = _logits()
    targets = torch.softmax(torch.randn(6, K, generator=torch.Generator().manual_seed(1)), 1)
    expected = _by_hand(logits, targets, eps)
    loss = classification_loss(logits, targets, eps)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_mixup_targets(eps):
    torch.manual_seed(0)
    _images, targets = make_mixup(0.4, K)(torch.rand(6, 1, 2, 2), torch.tensor([0, 1, 2, 3, 3, 0]))
    assert targets.shape == (6, K)
    logits = _logits()
    expected = _by_hand(logits, targets, eps)
    loss = classification_loss(logits, targets, eps)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_known_value():
    # Two classes, equal logits: every class has probability 1/2, so the loss is log 2 for any eps.
    logits = torch.zeros(3, 2)
    for eps in (0.0, 0.5):
        loss = classification_loss(logits, torch.tensor([0, 1, 1]), eps)
        assert loss.item() == pytest.approx(0.6931472, rel=1e-6)


def test_smoothing_penalises_confidence():
    # A confident, correct prediction costs more with smoothing than without.
    logits = torch.tensor([[10.0, 0.0, 0.0, 0.0]])
    y = torch.tensor([0])
    smoothed, plain = classification_loss(logits, y, 0.1), classification_loss(logits, y, 0.0)
    assert smoothed.item() > 10 * plain.item()


def test_half_precision_logits_give_float32_loss():
    logits, y = _logits(), torch.tensor([0, 1, 2, 3, 3, 0])
    loss = classification_loss(logits.bfloat16(), y, 0.1)
    assert loss.dtype == torch.float32
    expected = _by_hand(logits.bfloat16().float(), F.one_hot(y, K), 0.1)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
