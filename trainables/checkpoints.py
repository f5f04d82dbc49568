"""What a trial's checkpoint holds, and how a model comes back from one.

Ray Tune moves the checkpoint folder; this module owns the one file inside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.inference import final_weights
from core.models import build_model
from core.pruning import ChannelPruner, GradualPruner, fit_to_state, make_pruner
from core.served import Classifier

FILE = "trial.pt"


def save(folder: str | Path, **state: Any) -> None:
    """Writes `state` (model, optimizer, schedule, epoch, RNG, model_spec, ...) to `folder`."""
    torch.save(state, Path(folder) / FILE)


def load(folder: str | Path) -> dict[str, Any]:
    return torch.load(Path(folder) / FILE, map_location="cpu", weights_only=False)


def model_spec(model_name: str, num_classes: int, in_channels: int, hp: dict) -> dict[str, Any]:
    """Everything needed to rebuild the trial's model: what build_model takes."""
    options = {k: hp[k] for k in ("width", "activation", "norm", "conv", "dropout", "init")}
    return {"name": model_name, "num_classes": num_classes, "in_channels": in_channels,
            "prune_ratio": hp["prune_ratio"], "prune_method": hp["prune_method"],
            "options": options}


def build_from_spec(spec: dict[str, Any],
                    epochs: int = 1) -> tuple[nn.Module, GradualPruner | ChannelPruner]:
    """The dense model of `spec` and its pruner (checkpoints from before prune_method: unstructured)."""
    model = build_model(spec["name"], spec["num_classes"], spec["in_channels"], **spec["options"])
    return model, make_pruner(model, spec.get("prune_method", "unstructured"), spec["prune_ratio"],
                              epochs, spec["in_channels"])


def load_model_state(model: nn.Module, pruner: GradualPruner | ChannelPruner,
                     state: dict[str, torch.Tensor]) -> None:
    """Loads a checkpoint's weights into the model `build_from_spec` made, reshaping it first where
    channels were removed."""
    if isinstance(pruner, ChannelPruner):
        fit_to_state(model, state)
    model.load_state_dict(state)


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
    classes = state.get("classes") or [str(i) for i in range(state["model_spec"]["num_classes"])]
    # Checkpoints from before the image size was recorded: CIFAR's 32 pixels.
    image_size = state.get("image_size", 32)
    return Classifier(final_weights(model).eval(), state["mean"], state["std"], classes, image_size)
