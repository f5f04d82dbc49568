"""One train step of a model spec in a given mode, run in a child process by
test_precision_matrix.py.

Kept apart from the test module so a child imports torch and core/, not pytest.
"""

from __future__ import annotations

import torch

from core.augment import BatchAugment
from core.inference import inference_copy
from core.layout_probe import train_steps
from core.precision import Mode
from core.train import evaluate
from core.trial import build_from_spec

BATCH = 12


def one_step(spec: dict, threads: int, layout: str, precision: str,
             shape: tuple[int, int, int]) -> None:
    """Two optimizer steps of `spec`'s model in the given mode (pruned to its final ratio first,
    where it removes channels), then an evaluation of its inference copy."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model, pruner = build_from_spec(spec)
    pruner.step(1)  # epochs=1: the final ratio, the narrowest shapes
    train_steps(model, layout, precision, shape, BATCH, spec["num_classes"], steps=2)
    mode = Mode(precision, layout)
    augment = BatchAugment((0.5,) * shape[0], (0.25,) * shape[0], 0, False, mode.memory_format)
    x = torch.randint(0, 256, (BATCH, *shape), dtype=torch.uint8)
    y = torch.randint(0, spec["num_classes"], (BATCH,))
    evaluate(inference_copy(model), x, y, augment, 5, autocast_dtype=mode.autocast_dtype)
