"""One train step in a given mode, run in a child process by test_precision_matrix.py.

Kept apart from the test module so a child imports torch and core/, not pytest.
"""

from __future__ import annotations

import torch

from core.augment import BatchAugment
from core.inference import inference_copy
from core.losses import classification_loss
from core.models import build_model
from core.precision import Mode
from core.train import evaluate


def one_step(width: float, threads: int, layout: str, precision: str, conv: str,
             channels: int) -> None:
    """Forward, backward and an optimizer step of ResNet-18 in the given mode; evaluation too."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    mode = Mode(precision, layout)
    model = build_model("resnet18", 10, channels, width=width, conv=conv)
    model = model.to(memory_format=mode.memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    augment = BatchAugment((0.5,) * channels, (0.25,) * channels, 4, True, mode.memory_format)
    x = torch.randint(0, 256, (12, channels, 32, 32), dtype=torch.uint8)
    y = torch.randint(0, 10, (12,))
    with torch.autocast("cpu", dtype=mode.autocast_dtype, enabled=mode.autocast_dtype is not None):
        loss = classification_loss(model(augment.train(x)), y, 0.1)
    loss.backward()
    optimizer.step()
    if not torch.isfinite(loss):
        raise AssertionError(f"loss {loss.item()}")
    evaluate(inference_copy(model), x, y, augment, 5, autocast_dtype=mode.autocast_dtype)
