"""Gradual pruning, by weights (`unstructured`) or by whole channels (`channel`).

`prune_ratio` is the fraction of the conv and linear weights removed, whichever the method, so two
trials at one ratio have the same number of parameters left. It follows Zhu & Gupta's cubic
schedule, s(e) = s_final * (1 - (1 - e / E)^3), applied at the end of each epoch e and reaching
`s_final` at epoch E = ceil(0.75 * max_epochs), so the last quarter of training recovers from the
final cut.

- `unstructured` zeroes the smallest weights over all layers (global magnitude, masks of
  torch.nn.utils.prune): the model keeps its shape and, on dense kernels, its speed.
- `channel` removes whole output channels of every convolution (not the classifier's classes), with
  torch-pruning's dependency graph carrying each cut to what depends on it: the next layer's inputs,
  BatchNorm, and every layer tied to it through a residual connection. Each layer keeps the same
  fraction of its channels, ranked by the L2 norm of the channel's weights in its whole group. Since
  a layer's weights scale with its input and output channels, keeping a fraction k of the channels
  keeps about k^2 of the weights: k = sqrt(1 - s). The model gets physically smaller and faster.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn
from torch.nn.utils import prune


def prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def make_pruner(model: nn.Module, method: str, final_ratio: float, epochs: int,
                in_channels: int) -> GradualPruner | ChannelPruner:
    """The pruner of `method` for `model` (dense, as built), reaching `final_ratio` over `epochs`."""
    if method == "unstructured":
        return GradualPruner(model, final_ratio, epochs)
    if method == "channel":
        return ChannelPruner(model, final_ratio, epochs, in_channels)
    raise ValueError(f"prune_method {method!r}: expected unstructured or channel")


def cubic_target(epoch: int, final_ratio: float, end_epoch: int) -> float:
    """Fraction of weights removed after `epoch` (1-based) epochs."""
    done = min(1.0, epoch / end_epoch)
    return final_ratio * (1 - (1 - done) ** 3)


def _end_epoch(epochs: int) -> int:
    return max(1, math.ceil(0.75 * epochs))


def _check_ratio(final_ratio: float) -> None:
    if not 0 <= final_ratio < 1:
        raise ValueError(f"prune_ratio must be in [0, 1), got {final_ratio=}")


class GradualPruner:
    """Zeroes the conv and linear weights of `model` to `final_ratio` over `epochs` epochs."""

    method = "unstructured"

    def __init__(self, model: nn.Module, final_ratio: float, epochs: int):
        _check_ratio(final_ratio)
        self.model = model
        self.params = prunable(model)
        self.final_ratio = final_ratio
        self.end_epoch = _end_epoch(epochs)
        if final_ratio > 0:
            # Masks of ones from the start, so checkpoints always have weight_orig and weight_mask.
            for module, name in self.params:
                prune.identity(module, name)

    def __repr__(self) -> str:
        return f"GradualPruner(final_ratio={self.final_ratio}, end_epoch={self.end_epoch})"

    def target(self, epoch: int) -> float:
        """Sparsity wanted after `epoch` (1-based) epochs."""
        return cubic_target(epoch, self.final_ratio, self.end_epoch)

    def step(self, epoch: int, optimizer: torch.optim.Optimizer | None = None) -> float:
        """Prunes up to the target of `epoch`; returns the sparsity reached. (The optimizer's
        parameters keep their shapes: it needs nothing.)"""
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


class ChannelPruner:
    """Removes whole channels of `model` until `final_ratio` of its conv and linear weights are gone,
    over `epochs` epochs. Built on the dense model: it remembers each layer's dense channel count, so
    a model reshaped to a checkpoint (`fit_to_state`) continues the same schedule."""

    method = "channel"

    def __init__(self, model: nn.Module, final_ratio: float, epochs: int, in_channels: int):
        _check_ratio(final_ratio)
        self.model = model
        self.final_ratio = final_ratio
        self.end_epoch = _end_epoch(epochs)
        self.in_channels = in_channels
        self.dense_weights = _weight_count(model)
        linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
        # The last Linear gives the class scores: its outputs stay. Hidden ones (mobilenet's
        # 576 -> 1024, a quarter of its weights) lose outputs as convolutions do.
        self.classifier = linear[-1:]
        self.dense_channels = {m: _outputs(m) for m in model.modules()
                               if isinstance(m, (nn.Conv2d, nn.Linear)) and m not in self.classifier}

    def __repr__(self) -> str:
        return f"ChannelPruner(final_ratio={self.final_ratio}, end_epoch={self.end_epoch})"

    def target(self, epoch: int) -> float:
        return cubic_target(epoch, self.final_ratio, self.end_epoch)

    def step(self, epoch: int, optimizer: torch.optim.Optimizer | None = None) -> float:
        """Removes channels up to the target of `epoch`; returns the fraction of weights removed.
        The removed layers get new, smaller parameters: `optimizer` is pointed at them (their
        momentum starts again, as after any change of shape)."""
        wanted = self.target(epoch)
        kept = math.sqrt(1 - wanted)  # of each layer's channels
        ratios = {m: 1 - (round(dense * kept) + 0.5) / _outputs(m)  # +0.5: torch-pruning floors
                  for m, dense in self.dense_channels.items()
                  if round(dense * kept) >= 1 and round(dense * kept) < _outputs(m)}
        if self.final_ratio > 0 and ratios:
            self._remove_channels(ratios)
            if optimizer is not None:
                rebind(optimizer, self.model)
        return self.sparsity()

    def sparsity(self) -> float:
        """Fraction of the dense model's conv and linear weights removed."""
        return 1 - _weight_count(self.model) / self.dense_weights

    def _remove_channels(self, ratios: dict[nn.Module, float]) -> None:
        import torch_pruning as tp

        model = self.model
        weight = next(model.parameters())
        layout = (torch.channels_last if weight.dim() == 4
                  and weight.is_contiguous(memory_format=torch.channels_last)
                  and not weight.is_contiguous() else torch.contiguous_format)
        frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
        for p in model.parameters():  # the dependency graph is traced through autograd
            p.requires_grad_(True)
        training = model.training
        model.eval()  # the trace must not move BatchNorm's running statistics
        example = torch.zeros(1, self.in_channels, 32, 32, device=weight.device)
        pruner = tp.pruner.MetaPruner(
            model, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
            pruning_ratio=0.0, pruning_ratio_dict=ratios, ignored_layers=self.classifier,
            global_pruning=False)
        pruner.step()
        model.train(training)
        model.to(memory_format=layout)  # torch-pruning's index_select gives contiguous weights
        for name, p in model.named_parameters():
            p.requires_grad_(name not in frozen)


def _outputs(layer: nn.Conv2d | nn.Linear) -> int:
    return layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features


def rebind(optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
    """Points `optimizer` (one parameter group) at `model`'s trainable parameters, keeping the state
    of the parameters it already had and dropping that of the ones replaced."""
    params = [p for p in model.parameters() if p.requires_grad]
    if len(optimizer.param_groups) != 1:
        raise ValueError(f"rebind needs one parameter group, got {len(optimizer.param_groups)}")
    optimizer.param_groups[0]["params"] = params
    kept = {id(p) for p in params}
    for p in [p for p in optimizer.state if id(p) not in kept]:
        del optimizer.state[p]


def fit_to_state(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Reshapes the dense `model` in place to a channel-pruned checkpoint's `state`, so that
    `load_state_dict` fits: each conv, linear and BatchNorm whose tensors were cut gets tensors of
    the checkpoint's shapes (uninitialised: the load fills them) and the matching channel counts."""
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        shapes = {t: state[prefix + t].shape for t in _own_tensors(module) if prefix + t in state}
        if all(getattr(module, t).shape == shape for t, shape in shapes.items()):
            continue
        for t, shape in shapes.items():
            old = getattr(module, t)
            new = torch.empty(shape, dtype=old.dtype, device=old.device)
            if isinstance(old, nn.Parameter):
                setattr(module, t, nn.Parameter(new, requires_grad=old.requires_grad))
            else:
                setattr(module, t, new)
        _fit_attributes(module)
    return model


def _own_tensors(module: nn.Module) -> Iterable[str]:
    return [*(n for n, _ in module.named_parameters(recurse=False)),
            *(n for n, b in module.named_buffers(recurse=False) if b is not None and b.dim() > 0)]


def _fit_attributes(module: nn.Module) -> None:
    """The channel counts a module keeps beside its tensors, from the tensors' new shapes."""
    if isinstance(module, nn.Conv2d):
        depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
        module.out_channels = module.weight.shape[0]
        module.groups = module.out_channels if depthwise else module.groups
        module.in_channels = module.weight.shape[1] * module.groups
    elif isinstance(module, nn.Linear):
        module.out_features, module.in_features = module.weight.shape
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        module.num_features = (module.weight if module.affine else module.running_mean).shape[0]
    elif isinstance(module, nn.PReLU):
        module.num_parameters = module.weight.shape[0]


def _weight_count(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
