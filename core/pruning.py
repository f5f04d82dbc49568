"""Gradual global magnitude pruning with torch.nn.utils.prune.

Sparsity follows Zhu & Gupta's cubic schedule, s(e) = s_final * (1 - (1 - e / E)^3), applied at the
end of each epoch e and reaching `s_final` at epoch E = ceil(0.75 * max_epochs), so the last quarter
of training recovers from the final cut.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import prune


def prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


class GradualPruner:
    """Prunes the conv and linear weights of `model` to `final_ratio` over `epochs` epochs."""

    def __init__(self, model: nn.Module, final_ratio: float, epochs: int):
        if not 0 <= final_ratio < 1:
            raise ValueError(f"prune_ratio must be in [0, 1), got {final_ratio=}")
        self.model = model
        self.params = prunable(model)
        self.final_ratio = final_ratio
        self.end_epoch = max(1, math.ceil(0.75 * epochs))
        if final_ratio > 0:
            # Masks of ones from the start, so checkpoints always have weight_orig and weight_mask.
            for module, name in self.params:
                prune.identity(module, name)

    def __repr__(self) -> str:
        return f"GradualPruner(final_ratio={self.final_ratio}, end_epoch={self.end_epoch})"

    def target(self, epoch: int) -> float:
        """Sparsity wanted after `epoch` (1-based) epochs."""
        done = min(1.0, epoch / self.end_epoch)
        return self.final_ratio * (1 - (1 - done) ** 3)

    def step(self, epoch: int) -> float:
        """Prunes up to the target of `epoch`; returns the sparsity reached."""
        wanted = self.target(epoch)
        if self.final_ratio > 0 and wanted > self.sparsity():
            self._prune_to(wanted)
        return self.sparsity()

    @torch.no_grad()
    def _prune_to(self, sparsity: float) -> None:
        """Global magnitude pruning: zeroes the smallest |w| over all layers until `sparsity`.

        The masks are updated in place rather than through prune.global_unstructured, which
        flattens weights with view(-1) and so fails on channels-last weights.
        """
        scores = torch.cat([(getattr(m, f"{n}_orig") * getattr(m, f"{n}_mask")).abs().reshape(-1)
                            for m, n in self.params])
        k = int(round(sparsity * scores.numel()))
        if k == 0:
            return
        threshold = torch.kthvalue(scores.float(), k).values
        for module, name in self.params:
            orig, mask = getattr(module, f"{name}_orig"), getattr(module, f"{name}_mask")
            mask.mul_((orig.abs() * mask > threshold).to(mask.dtype))
            setattr(module, name, orig * mask)  # as the forward pre-hook will compute it

    def sparsity(self) -> float:
        return sparsity_of(self.model)


@torch.no_grad()
def sparsity_of(model: nn.Module) -> float:
    """Fraction of the conv and linear weights of `model` that are zero."""
    params = prunable(model)
    zeros = sum(int((getattr(m, n) == 0).sum()) for m, n in params)
    return zeros / max(1, sum(getattr(m, n).numel() for m, n in params))
