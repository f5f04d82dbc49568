"""ResNet-18 for small images (3x3 stem, no max-pool), with the model options of the search space.

With default options the parameter names and shapes match torchvision's `resnet18` except the stem
(`conv1`) and the head (`fc`), so ImageNet weights load for fine-tuning (core/finetune.py).
"""

from __future__ import annotations

import torch
from torch import nn


def make_activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "leaky_relu":
        return nn.LeakyReLU(0.1, inplace=True)
    if name == "elu":
        return nn.ELU(inplace=True)
    if name == "prelu":
        return nn.PReLU()
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"activation {name!r}: expected relu, leaky_relu, elu, prelu or gelu")


def make_norm(name: str, channels: int) -> nn.Module:
    if name == "batch":
        return nn.BatchNorm2d(channels)
    if name == "none":
        return nn.Identity()
    raise ValueError(f"norm {name!r}: expected batch or none")


def conv3x3(conv: str, cin: int, cout: int, stride: int) -> nn.Module:
    if conv == "standard":
        return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    if conv == "separable":
        return nn.Sequential(
            nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),  # depthwise
            nn.Conv2d(cin, cout, 1, bias=False),  # pointwise
        )
    raise ValueError(f"conv {conv!r}: expected standard or separable")


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, activation: str, norm: str, conv: str):
        super().__init__()
        self.conv1 = conv3x3(conv, cin, cout, stride)
        self.bn1 = make_norm(norm, cout)
        self.act1 = make_activation(activation)
        self.conv2 = conv3x3(conv, cout, cout, 1)
        self.bn2 = make_norm(norm, cout)
        self.act2 = make_activation(activation)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), make_norm(norm, cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + identity)


class ResNet18(nn.Module):
    """ResNet-18 with stages of 64, 128, 256, 512 channels times `width`."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        width: float = 1.0,
        activation: str = "relu",
        norm: str = "batch",
        conv: str = "standard",
        dropout: float = 0.0,
        init: str = "default",
    ):
        super().__init__()
        channels = [max(1, round(c * width)) for c in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(in_channels, channels[0], 3, 1, 1, bias=False)
        self.bn1 = make_norm(norm, channels[0])
        self.act = make_activation(activation)
        stages, cin = [], channels[0]
        for i, cout in enumerate(channels):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(
                BasicBlock(cin, cout, stride, activation, norm, conv),
                BasicBlock(cout, cout, 1, activation, norm, conv),
            ))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cin, num_classes)
        initialise(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W)
        x = self.act(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)  # (B, channels[3])
        return self.fc(self.dropout(x))  # (B, num_classes) logits


def initialise(model: nn.Module, init: str) -> None:
    """Re-initialises conv and linear weights; 'default' keeps PyTorch's own initialisation."""
    if init == "default":
        return
    if init not in ("kaiming", "xavier"):
        raise ValueError(f"init {init!r}: expected default, kaiming or xavier")
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if init == "kaiming":
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            else:
                nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def build_model(name: str, num_classes: int, in_channels: int, **options) -> nn.Module:
    """The model named in a space file's settings, with the trial's model options."""
    if name == "resnet18":
        return ResNet18(num_classes, in_channels, **options)
    raise ValueError(f"model {name!r}: expected resnet18")

