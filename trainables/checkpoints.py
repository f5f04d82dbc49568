"""What a trial's checkpoint holds, and how a model comes back from one.

Ray Tune moves the checkpoint folder; this module owns the one file inside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from core import trial
from core.inference import final_weights
from core.models import MODEL_OPTIONS
from core.served import Classifier
from core.trial import build_from_spec, load_model_state

__all__ = ["build_from_spec", "load_model_state", "model_spec", "save", "load",
           "model_from_checkpoint", "served_model"]

FILE = "trial.pt"


def save(folder: str | Path, **state: Any) -> None:
    """Writes `state` (model, optimizer, schedule, epoch, RNG, model_spec, ...) to `folder`."""
    torch.save(state, Path(folder) / FILE)


def load(folder: str | Path) -> dict[str, Any]:
    return torch.load(Path(folder) / FILE, map_location="cpu", weights_only=False)


def model_spec(model_name: str, num_classes: int, in_channels: int, hp: dict) -> dict[str, Any]:
    """Everything needed to rebuild the trial's model, from a trial's resolved hyperparameters."""
    return trial.model_spec(model_name, num_classes, in_channels, prune_ratio=hp["prune_ratio"],
                            prune_method=hp["prune_method"],
                            **{k: hp[k] for k in MODEL_OPTIONS})


def model_from_checkpoint(folder: str | Path) -> nn.Module:
    """The trained model of a checkpoint, with pruning made permanent (plain `weight` tensors)."""
    state = load(folder)
    model, pruner = build_from_spec(state["model_spec"])
    load_model_state(model, pruner, state["model"])
    return final_weights(model).eval()


def served_model(model: nn.Module, folder: str | Path) -> Classifier:
    """`model`, trained to the checkpoint in `folder`, as users take it away: pruning made permanent,
    with the normalisation, class names and image size the checkpoint recorded (core/served.py)."""
    state = load(folder)
    return Classifier(final_weights(model).eval(), state["mean"], state["std"], state["classes"],
                      state["image_size"])
