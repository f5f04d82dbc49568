"""Tests of core/models.py: ResNet-18 for small images and its options."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn

from core.hparams import ACTIVATIONS, HPARAMS
from core.models import ResNet18, build_model, conv3x3

TINY = 0.125  # width multiplier: stages of 8, 16, 32, 64 channels


def _x(batch=2, channels=3, size=16):
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(0))


OPTIONS = (
    [("activation", a) for a in ACTIVATIONS]
    + [("norm", n) for n in HPARAMS["norm"].choices]
    + [("conv", c) for c in HPARAMS["conv"].choices]
    + [("init", i) for i in HPARAMS["init"].choices]
)


@pytest.mark.parametrize("option, value", OPTIONS)
def test_output_shape_for_every_option(option, value):
    torch.manual_seed(0)
    model = ResNet18(num_classes=7, width=TINY, **{option: value})
    out = model(_x(batch=3))
    assert out.shape == (3, 7)
    assert torch.isfinite(out).all()


def test_in_channels_and_image_size():
    model = ResNet18(num_classes=10, in_channels=1, width=TINY)
    assert model(_x(batch=2, channels=1, size=8)).shape == (2, 10)
    assert model.conv1.in_channels == 1


def test_separable_conv_is_depthwise_then_pointwise():
    conv = conv3x3("separable", 4, 8, stride=2)
    depthwise, pointwise = conv
    assert (depthwise.in_channels, depthwise.out_channels, depthwise.groups) == (4, 4, 4)
    assert depthwise.kernel_size == (3, 3) and depthwise.stride == (2, 2)
    assert (pointwise.in_channels, pointwise.out_channels, pointwise.groups) == (4, 8, 1)
    assert pointwise.kernel_size == (1, 1)
    assert conv(torch.randn(1, 4, 6, 6)).shape == (1, 8, 3, 3)


def test_separable_model_uses_separable_convs_in_every_block():
    model = ResNet18(num_classes=3, width=TINY, conv="separable")
    stages = (model.layer1, model.layer2, model.layer3, model.layer4)
    blocks = [block for stage in stages for block in stage]
    assert len(blocks) == 8
    for block in blocks:
        for conv in (block.conv1, block.conv2):
            depthwise, pointwise = conv
            assert depthwise.groups == depthwise.in_channels == depthwise.out_channels
            assert pointwise.kernel_size == (1, 1)
    standard = ResNet18(num_classes=3, width=TINY)
    n_sep = sum(p.numel() for p in model.parameters())
    assert n_sep < sum(p.numel() for p in standard.parameters())  # the point of separable convs


@pytest.mark.parametrize("width, channels", [(0.125, [8, 16, 32, 64]), (0.25, [16, 32, 64, 128]),
                                             (0.5, [32, 64, 128, 256])])
def test_width_scales_channels(width, channels):
    model = ResNet18(num_classes=5, width=width)
    assert model.conv1.out_channels == channels[0]
    stages = (model.layer1, model.layer2, model.layer3, model.layer4)
    assert [layer[1].conv2.out_channels for layer in stages] == channels
    assert model.fc.in_features == channels[3]


def test_defaults_match_torchvision_resnet18_except_stem_and_head():
    # So ImageNet weights load for fine-tuning: same names and shapes outside conv1 and fc.
    theirs = torchvision.models.resnet18(weights=None, num_classes=1000).state_dict()
    ours = ResNet18(num_classes=10).state_dict()
    compared = 0
    for name, tensor in theirs.items():
        if name.startswith(("conv1.", "fc.")):
            continue
        assert name in ours, name
        assert ours[name].shape == tensor.shape, name
        compared += 1
    assert compared == len(theirs) - 3  # conv1.weight, fc.weight, fc.bias


def test_dropout_acts_only_in_training():
    torch.manual_seed(0)
    model = ResNet18(num_classes=4, width=TINY, dropout=0.5)
    x = _x(batch=4)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


def test_no_dropout_and_no_norm_is_deterministic_in_training():
    torch.manual_seed(0)
    model = ResNet18(num_classes=4, width=TINY, dropout=0.0, norm="none").train()
    x = _x(batch=4)
    assert torch.equal(model(x), model(x))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_kaiming_init_has_fan_out_std():
    torch.manual_seed(0)
    model = ResNet18(num_classes=3, width=TINY, init="kaiming")
    w = model.layer4[1].conv2.weight  # (64, 64, 3, 3): 36864 draws
    expected = math.sqrt(2.0 / (64 * 3 * 3))
    assert w.std().item() == pytest.approx(expected, rel=0.03)
    assert w.mean().abs().item() < 0.05 * expected
    assert torch.equal(model.fc.bias, torch.zeros(3))


def test_xavier_init_is_uniform_in_bound():
    torch.manual_seed(0)
    model = ResNet18(num_classes=3, width=TINY, init="xavier")
    w = model.layer4[1].conv2.weight
    bound = math.sqrt(6.0 / (64 * 9 + 64 * 9))
    assert w.abs().max().item() <= bound
    assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.03)
    assert torch.equal(model.fc.bias, torch.zeros(3))


def test_default_init_differs_from_kaiming():
    torch.manual_seed(0)
    default = ResNet18(num_classes=3, width=TINY).layer4[1].conv2.weight.std().item()
    torch.manual_seed(0)
    kaiming_model = ResNet18(num_classes=3, width=TINY, init="kaiming")
    kaiming = kaiming_model.layer4[1].conv2.weight.std().item()
    # PyTorch's own: kaiming_uniform(a=sqrt 5), std 1 / sqrt(3 fan_in).
    assert default == pytest.approx(1 / math.sqrt(3 * 64 * 9), rel=0.05)
    assert kaiming > 2 * default


@pytest.mark.parametrize("option, value", [("activation", "swish"), ("norm", "layer"),
                                           ("conv", "dilated"), ("init", "orthogonal")])
def test_unknown_option_raises(option, value):
    with pytest.raises(ValueError, match=repr(value)):
        ResNet18(num_classes=3, width=TINY, **{option: value})


def test_build_model():
    model = build_model("resnet18", 6, 1, width=TINY, activation="gelu")
    assert isinstance(model, ResNet18)
    assert model(_x(channels=1, size=8)).shape == (2, 6)
    with pytest.raises(ValueError, match="'vgg'"):
        build_model("vgg", 6, 1)
