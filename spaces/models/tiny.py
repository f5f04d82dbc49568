"""A small CNN of one's own, for spaces/own_model.py: what a model file for tune-run looks like."""

from torch import nn


def build(num_classes: int, in_channels: int, dropout: float = 0.0, width: float = 1.0) -> nn.Module:
    """tune-run passes the data's classes and channels, and the model options this function names
    (dropout and width here) where the space sets them."""
    c = max(4, round(32 * width))
    return nn.Sequential(
        nn.Conv2d(in_channels, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
        nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * c), nn.ReLU(),
        nn.Conv2d(2 * c, 4 * c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(4 * c), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(4 * c, num_classes),
    )
