"""Tests of core/pruning.py: gradual global magnitude pruning."""

from __future__ import annotations

import itertools

import pytest
import torch

from core.models import ResNet18, build_model
from core.pruning import GradualPruner, prunable, sparsity_of

EPOCHS = 4  # pruning ends at epoch ceil(0.75 * 4) = 3


def _model(seed=0) -> ResNet18:
    torch.manual_seed(seed)
    return ResNet18(num_classes=10, width=0.125)


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.9])
def test_reaches_the_asked_sparsity(ratio):
    model = _model()
    pruner = GradualPruner(model, ratio, EPOCHS)
    reached = [pruner.step(epoch) for epoch in range(1, EPOCHS + 1)]
    assert abs(sparsity_of(model) - ratio) <= 0.005
    # Each epoch reaches its target of the cubic schedule, growing up to the end epoch.
    for epoch, s in enumerate(reached, start=1):
        assert abs(s - pruner.target(epoch)) <= 0.005
    assert all(b > a for a, b in itertools.pairwise(reached[:3]))  # up to the end epoch
    assert reached[2] == reached[3]  # nothing more after the end epoch


def test_sparsity_grows_monotonically_over_a_longer_run():
    model = _model()
    pruner = GradualPruner(model, 0.6, epochs=8)
    reached = [pruner.step(epoch) for epoch in range(1, 9)]
    assert all(b >= a for a, b in itertools.pairwise(reached))
    assert reached[0] > 0 and abs(reached[-1] - 0.6) <= 0.005


def test_cubic_schedule():
    pruner = GradualPruner(_model(), 0.8, epochs=8)  # end epoch 6
    assert pruner.end_epoch == 6
    assert pruner.target(3) == pytest.approx(0.8 * (1 - 0.5**3))
    assert pruner.target(6) == pytest.approx(0.8)
    assert pruner.target(8) == pytest.approx(0.8)


def test_ratio_zero_prunes_nothing():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruner = GradualPruner(model, 0.0, EPOCHS)
    assert [pruner.step(e) for e in range(1, EPOCHS + 1)] == [0.0] * EPOCHS
    after = model.state_dict()
    assert after.keys() == before.keys()  # no weight_orig / weight_mask
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_prunes_the_smallest_magnitudes_globally():
    model = _model()
    pruner = GradualPruner(model, 0.5, EPOCHS)
    pruner.step(EPOCHS)
    pruned, kept = [], []
    for module, _ in prunable(model):
        mask = module.weight_mask.bool()
        pruned.append(module.weight_orig[~mask].abs().flatten())
        kept.append(module.weight_orig[mask].abs().flatten())
    assert torch.cat(pruned).max() <= torch.cat(kept).min()
    # Global, not per layer: layers end up with different sparsities.
    per_layer = [float((m.weight == 0).float().mean()) for m, _ in prunable(model)]
    assert max(per_layer) - min(per_layer) > 0.1


def test_state_dict_of_pruned_model_loads_into_fresh_model():
    model = _model(seed=0).eval()
    pruner = GradualPruner(model, 0.5, EPOCHS)
    for epoch in range(1, EPOCHS + 1):
        pruner.step(epoch)
    state = model.state_dict()
    assert "layer1.0.conv1.weight_orig" in state and "layer1.0.conv1.weight_mask" in state
    assert "fc.weight_orig" in state and "fc.weight_mask" in state

    fresh = _model(seed=1).eval()
    GradualPruner(fresh, 0.5, EPOCHS)
    fresh.load_state_dict(state)  # strict: every key matches
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(fresh(x), model(x))
    assert sparsity_of(fresh) == sparsity_of(model)  # after a forward has applied the masks


@pytest.mark.parametrize("ratio", [-0.1, 1.0])
def test_bad_ratio_raises(ratio):
    with pytest.raises(ValueError, match="prune_ratio"):
        GradualPruner(_model(), ratio, EPOCHS)


def test_sparsity_of_counts_zero_weights():
    nn = torch.nn
    model = nn.Sequential(nn.Linear(4, 5), nn.Conv2d(1, 2, 2), nn.BatchNorm2d(2))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].weight[:2] = 0  # 8 of 20
        model[1].weight.fill_(1.0)  # 8 more weights, none zero; BatchNorm is not counted
    assert sparsity_of(model) == pytest.approx(8 / 28)


def test_pruning_works_on_channels_last_weights():
    # Trials train channels-last (core/precision.py); torch's global_unstructured fails on such
    # weights (view(-1) of a non-contiguous tensor).
    torch.manual_seed(0)
    model = build_model("resnet18", 10, 3, width=0.125)
    pruner = GradualPruner(model, 0.5, epochs=4)
    model = model.to(memory_format=torch.channels_last)
    for epoch in range(1, 5):
        pruner.step(epoch)
    assert abs(pruner.sparsity() - 0.5) < 0.005
    model(torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)).sum().backward()
