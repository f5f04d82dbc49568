"""Fine-tuning: initial weights from a checkpoint file or torchvision's ImageNet weights, a new
classifier head, and a freeze policy."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

HEAD = "fc."


def load_pretrained(model: nn.Module, weights: str) -> list[str]:
    """Copies every tensor of `weights` whose name and shape match `model`, except the head.

    `weights` is a file holding a state dict (or a dict with one under "model"), or "imagenet" for
    torchvision's ResNet-18 weights. Returns the names that were loaded; raises ValueError when
    nothing matches (the wrong file, or a model of other options).
    """
    source = _unpruned(_imagenet_state() if weights == "imagenet" else _file_state(weights))
    own = model.state_dict()
    loaded = {}
    for k, v in source.items():
        # A model under core/pruning.py's GradualPruner holds its weights as `<name>_orig`.
        target = k + "_orig" if k not in own and k + "_orig" in own else k
        if target in own and not k.startswith(HEAD) and tuple(v.shape) == tuple(own[target].shape):
            loaded[target] = v
    if not loaded:
        raise ValueError(f"weights {weights!r}: no tensor matches the model's names and shapes")
    model.load_state_dict(loaded, strict=False)
    return sorted(loaded)


def freeze(model: nn.Module, policy: str) -> None:
    """'none' trains everything; 'backbone' trains only the head (`fc`)."""
    if policy == "none":
        return
    if policy != "backbone":
        raise ValueError(f"freeze {policy!r}: expected none or backbone")
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(HEAD))


def _file_state(path: str) -> dict[str, torch.Tensor]:
    if not Path(path).is_file():
        raise ValueError(f"weights {path!r}: no such file")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    return state


def _unpruned(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A pruned model's `<name>_orig` and `<name>_mask` as the plain `<name>` = orig * mask."""
    plain = {}
    for k, v in state.items():
        base = k.removesuffix("_orig").removesuffix("_mask")
        if base != k and base + "_orig" in state and base + "_mask" in state:
            plain[base] = state[base + "_orig"] * state[base + "_mask"]
        else:
            plain[k] = v
    return plain


def _imagenet_state() -> dict[str, torch.Tensor]:
    from torchvision.models import ResNet18_Weights

    try:
        return ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
    except Exception as e:  # offline: urllib's URLError and friends
        raise ValueError(
            f"weights 'imagenet': torchvision could not fetch them ({type(e).__name__}); "
            "save them once where online and pass the file instead"
        ) from e
