"""Tests of core/train.py: one training epoch and one evaluation pass."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from core.augment import BatchAugment
from core.mixup import make_mixup
from core.models import ResNet18
from core.optim import make_optimizer, make_schedule
from core.train import EpochStats, evaluate, steps_per_epoch, train_epoch


@pytest.mark.parametrize("n, batch_size, steps", [(100, 32, 3), (96, 32, 3), (64, 64, 1),
                                                  (10, 32, 1), (0, 8, 1)])
def test_steps_per_epoch_drops_the_last_partial_batch(n, batch_size, steps):
    assert steps_per_epoch(n, batch_size) == steps


def _brightness_problem(n=64, seed=0):
    """(n, 1, 8, 8) uint8 noise: class 0 dark (0..99), class 1 bright (156..255)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    noise = torch.randint(0, 100, (n, 1, 8, 8), generator=g)
    x = (noise + 156 * y.view(n, 1, 1, 1)).to(torch.uint8)
    return x, y


def _setup(epochs, batch_size=16, n=64, **model_options):
    torch.manual_seed(0)
    x, y = _brightness_problem(n)
    model = ResNet18(num_classes=2, in_channels=1, width=0.0625, **model_options)
    augment = BatchAugment((0.5,), (0.3,), padding=1, hflip=True)
    optimizer = make_optimizer("sgd", model.parameters(), lr=0.05, momentum=0.9, weight_decay=0.0)
    schedule = make_schedule("cosine", optimizer, epochs, steps_per_epoch(n, batch_size))
    return model, x, y, augment, optimizer, schedule


def test_training_reduces_loss_and_raises_accuracy():
    epochs = 4
    model, x, y, augment, optimizer, schedule = _setup(epochs)
    vx, vy = _brightness_problem(32, seed=1)
    _, acc_before = evaluate(model, vx, vy, augment)
    generator = torch.Generator().manual_seed(0)
    losses = [
        train_epoch(model, x, y, augment, optimizer, schedule, 16, 0.0, generator=generator).loss
        for _ in range(epochs)
    ]
    val_loss, acc_after = evaluate(model, vx, vy, augment)
    assert 0.0 <= acc_before <= 1.0 and 0.0 <= acc_after <= 1.0
    assert losses[-1] < 0.5 * losses[0]
    assert acc_after > acc_before and acc_after >= 0.9
    assert val_loss < math.log(2)


def test_epoch_stats_and_schedule_steps():
    model, x, y, augment, optimizer, schedule = _setup(epochs=2, batch_size=24)
    stats = train_epoch(model, x, y, augment, optimizer, schedule, 24, 0.1)
    assert isinstance(stats, EpochStats)
    assert stats.images == 48  # two full batches of 24; the last 16 images are dropped
    assert schedule.last_epoch == 2  # stepped once per optimizer step
    assert math.isfinite(stats.loss) and stats.loss > 0
    assert stats.seconds > 0 and stats.images_per_s == pytest.approx(48 / stats.seconds)
    assert model.training


def test_batch_larger_than_data_is_one_step():
    model, x, y, augment, optimizer, schedule = _setup(epochs=1, batch_size=100, n=20)
    stats = train_epoch(model, x, y, augment, optimizer, schedule, 100, 0.0)
    assert stats.images == 20 and schedule.last_epoch == 1


def test_train_epoch_with_mixup_and_smoothing():
    model, x, y, augment, optimizer, schedule = _setup(epochs=1)
    before = [p.detach().clone() for p in model.parameters()]
    stats = train_epoch(model, x, y, augment, optimizer, schedule, 16, 0.1,
                        mixup=make_mixup(0.4, 2), generator=torch.Generator().manual_seed(0))
    # Smoothing 0.1 over 2 classes puts a floor under the loss: the entropy of (0.95, 0.05).
    assert stats.loss > -(0.95 * math.log(0.95) + 0.05 * math.log(0.05))
    assert any(not torch.equal(p, b) for p, b in zip(model.parameters(), before))


def test_same_generator_same_epoch():
    results = []
    for _ in range(2):
        model, x, y, augment, optimizer, schedule = _setup(epochs=1, norm="none")
        stats = train_epoch(model, x, y, augment, optimizer, schedule, 16, 0.0,
                            generator=torch.Generator().manual_seed(3))
        results.append((stats.loss, model.fc.weight.detach().clone()))
    assert results[0][0] == results[1][0]
    assert torch.equal(results[0][1], results[1][1])


def test_evaluate_matches_cross_entropy_and_accuracy_by_hand():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x = torch.randint(0, 256, (11, 1, 4, 4), dtype=torch.uint8)
    y = torch.randint(0, 3, (11,))
    augment = BatchAugment((0.4,), (0.2,), padding=2, hflip=True)  # evaluate does not augment
    loss, acc = evaluate(model, x, y, augment, batch_size=4)  # batches of 4, 4, 3
    with torch.no_grad():
        logits = model((x.float() / 255 - 0.4) / 0.2)
    assert loss == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert acc == pytest.approx((logits.argmax(1) == y).float().mean().item())
    assert not model.training


def test_evaluate_counts_correct_answers():
    # A model that answers by brightness is right on every image.
    class Brightness(torch.nn.Module):
        def forward(self, x):
            m = x.mean((1, 2, 3))
            return torch.stack([-m, m], 1)

    x, y = _brightness_problem(20)
    augment = BatchAugment((0.5,), (0.3,), padding=0, hflip=False)
    assert evaluate(Brightness(), x, y, augment)[1] == 1.0
    assert evaluate(Brightness(), x, 1 - y, augment)[1] == 0.0


def test_streamed_images_train_and_evaluate_exactly_as_images_on_the_device(tmp_path):
    # The GPU's mapped path (core/streamed.py) run on the CPU: the batches it gathers from a
    # memory-mapped file must be the very batches indexing the tensor gives.
    import numpy as np

    from core.streamed import StreamedImages

    _, x, _, _, _, _ = _setup(epochs=1)
    np.save(tmp_path / "x.npy", x.numpy())
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    results = []
    for images in (x, StreamedImages(mapped, torch.device("cpu"))):
        model, _, y, augment, optimizer, schedule = _setup(epochs=1, norm="none")
        stats = train_epoch(model, images, y, augment, optimizer, schedule, 16, 0.0,
                            generator=torch.Generator().manual_seed(3))
        results.append((stats.loss, evaluate(model, images, y, augment, batch_size=24),
                        model.fc.weight.detach().clone()))
    assert results[0][:2] == results[1][:2]
    assert torch.equal(results[0][2], results[1][2])
