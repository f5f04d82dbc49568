"""Tests of core/cost.py: parameters, MACs and measured latency of the model a trial would ship."""

from __future__ import annotations

import pytest
import torch

from core.cost import CostMeter, latency_ms, macs, measure_cost, nonzero_parameters, parameter_counts
from core.inference import final_weights
from core.models import build_model
from core.pruning import ChannelPruner, GradualPruner


def _net(width=0.125):
    torch.manual_seed(0)
    return build_model("resnet18", 10, 3, width=width)


def test_parameter_counts_see_pruning():
    net = build_model("resnet18", 3, 3, width=0.0625)
    GradualPruner(net, 0.5, epochs=4).step(4)
    nonzero, total = parameter_counts(final_weights(net))
    assert total == sum(p.numel() for p in net.parameters())
    assert nonzero < 0.7 * total


def test_nonzero_parameters_read_masked_weights_without_making_pruning_permanent():
    net = _net()
    GradualPruner(net, 0.5, epochs=4).step(4)
    assert nonzero_parameters(net) == parameter_counts(final_weights(_copy_of(net)))[0]
    assert hasattr(net.conv1, "weight_orig")  # still under pruning


def _copy_of(net):
    copy = _net()
    GradualPruner(copy, 0.5, epochs=4)
    copy.load_state_dict(net.state_dict())
    return copy


def test_macs_of_a_linear_layer_and_a_convolution():
    # Conv 3 -> 5, 3x3, on 4x4 (padding 1): 5*4*4 outputs x 27 = 2160; then
    # Linear 80 -> 4: 320.
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3, padding=1), torch.nn.Flatten(),
                               torch.nn.Linear(80, 4))
    assert macs(conv, 3, 4) == 5 * 4 * 4 * 27 + 80 * 4


def test_resnet18_macs_are_the_known_figure():
    # ResNet-18 for 32x32 images (3x3 stem, no max-pool): 0.56 GMACs, as published for CIFAR.
    assert macs(_net(width=1.0).eval(), 3, 32) == pytest.approx(556e6, rel=0.01)


def test_channel_pruning_shows_in_every_figure():
    dense, pruned = _net(width=0.5), _net(width=0.5)
    pruner = ChannelPruner(pruned, 0.5, 4, in_channels=3)
    for epoch in range(1, 5):
        pruner.step(epoch)
    a, b = measure_cost(dense, 3, 32), measure_cost(pruned, 3, 32)
    assert b.params < 0.6 * a.params and b.macs < 0.6 * a.macs
    assert b.latency_ms < a.latency_ms
    assert a.latency_ms_gpu is None and set(a.metrics()) == {"params", "macs", "latency_ms"}


def test_measuring_leaves_the_model_as_it_was():
    net = _net().to(memory_format=torch.channels_last).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    measure_cost(net, 3, 32)
    assert net.training and net.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_the_meter_times_again_only_when_shapes_change():
    net = _net()
    meter = CostMeter(3, 32)
    first = meter.measure(net)
    assert meter.measure(net).latency_ms == first.latency_ms  # unchanged model: same figure
    pruner = ChannelPruner(net, 0.5, 4, in_channels=3)
    pruner.step(4)
    after = meter.measure(net)
    assert after.macs < first.macs and after.params < first.params


def test_latency_is_a_median_in_milliseconds():
    net = _net().eval()
    assert 0 < latency_ms(net, 2, 3, 8, budget_s=0.05) < 10_000
    assert torch.get_num_threads() >= 1  # threads restored
