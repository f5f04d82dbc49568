"""Tests of core/mixup.py: batch Mixup, the same as torchvision's transforms v2 `MixUp`."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from core.mixup import make_mixup


def test_alpha_zero_turns_mixup_off():
    assert make_mixup(0.0, 10) is None


def test_negative_alpha_raises():
    with pytest.raises(ValueError, match="alpha=-0.5"):
        make_mixup(-0.5, 10)


def test_gives_what_torchvision_mixup_gives_from_the_same_seed():
    x = torch.rand(8, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    ours, theirs = make_mixup(0.4, 10), v2.MixUp(alpha=0.4, num_classes=10)
    for seed in range(3):
        torch.manual_seed(seed)
        expected = theirs(x, y)
        torch.manual_seed(seed)
        got = ours(x, y)
        torch.testing.assert_close(got[0], expected[0])
        torch.testing.assert_close(got[1], expected[1])


def test_mixes_images_and_targets_with_one_lambda():
    # The rule: out = lam * x + (1 - lam) * x.roll(1, 0), and the same for one-hot targets.
    k = 5
    mixup = make_mixup(1.0, k)
    x = torch.rand(6, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3, 4, 1])  # y[i] != y[i - 1] for every i
    x_before = x.clone()
    torch.manual_seed(0)
    lams = []
    for _ in range(3):
        images, targets = mixup(x, y)
        lam = targets[0, y[0]].item()  # y[0] differs from its partner y[-1]
        assert 0 < lam < 1
        lams.append(lam)
        onehot = F.one_hot(y, k).float()
        torch.testing.assert_close(images, lam * x + (1 - lam) * x.roll(1, 0))
        torch.testing.assert_close(targets, lam * onehot + (1 - lam) * onehot.roll(1, 0))
        torch.testing.assert_close(targets.sum(1), torch.ones(6))
    assert len(set(lams)) == 3  # a new lambda each call
    assert torch.equal(x, x_before)  # the input is not mixed in place


@pytest.mark.parametrize("alpha", [0.2, 1.0, 4.0])
def test_lambda_is_beta_alpha_alpha(alpha):
    # Beta(a, a) has mean 1/2 and variance 1 / (4 (2a + 1)).
    mixup = make_mixup(alpha, 2)
    x, y = torch.zeros(2, 1, 1, 1), torch.tensor([0, 1])
    torch.manual_seed(1)
    lams = torch.tensor([mixup(x, y)[1][0, 0].item() for _ in range(1000)])
    assert lams.mean().item() == pytest.approx(0.5, abs=0.04)
    assert lams.var().item() == pytest.approx(1 / (4 * (2 * alpha + 1)), rel=0.15)
