"""Tests of core/pruning.py: gradual pruning by weights (unstructured) and by channels."""

from __future__ import annotations

import itertools

import pytest
import torch

from core.models import ResNet18, build_model
from core.pruning import (
    ChannelPruner,
    GradualPruner,
    fit_to_state,
    make_pruner,
    prunable,
    rebind,
    sparsity_of,
)

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


# --- channel pruning: whole channels removed, the model physically smaller ---------------------

def _weights(model) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))


def _prune_channels(model, ratio=0.5, epochs=EPOCHS, until=EPOCHS, optimizer=None):
    pruner = ChannelPruner(model, ratio, epochs, in_channels=3)
    return pruner, [pruner.step(e, optimizer) for e in range(1, until + 1)]


@pytest.mark.parametrize("conv", ["standard", "separable"])
def test_channel_pruning_makes_the_model_smaller_and_it_still_runs(conv):
    model = build_model("resnet18", 10, 3, width=0.25, conv=conv)
    dense = _weights(model)
    _, reached = _prune_channels(model, 0.5)
    # prune_ratio is the fraction of weights removed, as for unstructured pruning
    assert 0.4 <= 1 - _weights(model) / dense <= 0.55
    assert reached[-1] == pytest.approx(1 - _weights(model) / dense)
    assert model.conv1.out_channels < 16 and model.fc.in_features < 128
    assert model.fc.out_features == 10  # the classes are never pruned
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)  # residual additions still line up


def test_channel_pruning_is_gradual_on_the_cubic_schedule():
    pruner, reached = _prune_channels(_model(), 0.5, epochs=8, until=8)
    assert all(b >= a for a, b in itertools.pairwise(reached))
    assert reached[0] < reached[3]  # not all at once
    for epoch, s in enumerate(reached, start=1):
        assert abs(s - pruner.target(epoch)) < 0.08  # whole channels: close to the weight target


def test_channel_pruning_keeps_the_largest_channels():
    model = _model()
    with torch.no_grad():  # the stem's channel 0 is by far the largest in its group
        model.conv1.weight[0].mul_(100)
    kept = model.conv1.weight[0].clone()
    _prune_channels(model, 0.5)
    assert any(torch.equal(w, kept) for w in model.conv1.weight)


def test_channel_pruning_points_the_optimizer_at_the_new_parameters():
    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    optimizer.step()
    _prune_channels(model, 0.5, until=1, optimizer=optimizer)
    params = list(model.parameters())
    assert [id(p) for p in optimizer.param_groups[0]["params"]] == [id(p) for p in params]
    assert all(optimizer.state[p]["momentum_buffer"].shape == p.shape for p in optimizer.state)
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    optimizer.step()  # no shape mismatch


def test_channel_pruning_keeps_frozen_layers_frozen_and_channels_last_weights():
    model = _model().to(memory_format=torch.channels_last)
    model.conv1.weight.requires_grad_(False)
    _prune_channels(model, 0.5, until=2)
    assert not model.conv1.weight.requires_grad and model.fc.weight.requires_grad
    assert model.layer1[0].conv1.weight.is_contiguous(memory_format=torch.channels_last)


def test_a_channel_pruned_checkpoint_reloads_and_pruning_continues_where_it_stopped():
    # Resume mid-pruning: the checkpoint of epoch 2 loads into a fresh dense model, and the rest of
    # the schedule gives the same shapes as an uninterrupted run.
    torch.manual_seed(0)
    straight = _model()
    pruner = ChannelPruner(straight, 0.5, EPOCHS, in_channels=3)
    for epoch in (1, 2):
        pruner.step(epoch)
    saved = {k: v.clone() for k, v in straight.state_dict().items()}
    x = torch.randn(2, 3, 32, 32)
    expected = straight.eval()(x)

    resumed = _model(seed=1)
    resumed_pruner = ChannelPruner(resumed, 0.5, EPOCHS, in_channels=3)
    resumed.load_state_dict(fit_to_state(resumed, saved).state_dict() | saved)
    assert torch.allclose(resumed.eval()(x), expected, atol=1e-5)
    for epoch in (3, 4):
        pruner.step(epoch)
        resumed_pruner.step(epoch)
    assert [p.shape for p in resumed.parameters()] == [p.shape for p in straight.parameters()]
    assert resumed_pruner.sparsity() == pytest.approx(pruner.sparsity())


def test_make_pruner_names_the_methods():
    assert isinstance(make_pruner(_model(), "channel", 0.5, 4, 3), ChannelPruner)
    assert isinstance(make_pruner(_model(), "unstructured", 0.5, 4, 3), GradualPruner)
    with pytest.raises(ValueError, match="unstructured or channel"):
        make_pruner(_model(), "filter", 0.5, 4, 3)


def test_rebind_keeps_the_state_of_unchanged_parameters():
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(1, 2)).sum().backward()
    optimizer.step()
    rebind(optimizer, model)
    assert set(optimizer.state) == set(model.parameters())
