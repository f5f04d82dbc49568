"""What a model costs to run: parameters, multiply-accumulates, and measured latency.

Every trial reports these for the model it would ship (pruning made permanent, BatchNorm folded,
fp32), measured the same way for each, so that trials compare and a search can trade accuracy
against size or speed. Latency is measured, not estimated from MACs: a model with half the MACs is
not half as fast when its convolutions get too narrow to fill the CPU's vectors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from core.inference import inference_copy

# Batch 1 at one thread: the figure of a request served on one core, and the one least disturbed by
# other trials training on the machine's other cores.
LATENCY_BATCH = 1
LATENCY_THREADS = 1


@dataclass(frozen=True)
class Cost:
    params: int  # non-zero parameters of the trained model
    macs: int  # multiply-accumulates of one image's forward pass (zeros included: dense kernels)
    latency_ms: float  # median forward pass at batch 1, CPU, one thread, fp32
    latency_ms_gpu: float | None = None  # the same on the trial's GPU, where it has one

    def metrics(self) -> dict[str, float]:
        figures = {"params": self.params, "macs": self.macs, "latency_ms": self.latency_ms}
        if self.latency_ms_gpu is not None:
            figures["latency_ms_gpu"] = self.latency_ms_gpu
        return figures


def measure_cost(model: nn.Module, channels: int, image_size: int,
                 gpu: torch.device | None = None) -> Cost:
    """The cost of `model` as it would ship (`inference_copy`: pruning made permanent, BatchNorm
    folded), in fp32 and the default memory layout; `model` itself is left as it is."""
    served = inference_copy(model).float().cpu().to(memory_format=torch.contiguous_format)
    gpu_ms = None
    if gpu is not None and gpu.type == "cuda":
        gpu_ms = latency_ms(served.to(gpu), LATENCY_BATCH, channels, image_size, device=gpu)
        served = served.cpu()
    return Cost(nonzero_parameters(model), macs(served, channels, image_size),
                latency_ms(served, LATENCY_BATCH, channels, image_size, LATENCY_THREADS), gpu_ms)


class CostMeter:
    """Measures a trial's model after each epoch, timing it again only when its shapes changed
    (channel pruning): timing an unchanged model again would only add noise to a fixed figure."""

    def __init__(self, channels: int, image_size: int, gpu: torch.device | None = None):
        self.channels, self.image_size, self.gpu = channels, image_size, gpu
        self.shapes: tuple | None = None
        self.last: Cost | None = None

    def measure(self, model: nn.Module) -> Cost:
        shapes = tuple(tuple(p.shape) for p in model.parameters())
        if self.last is None or shapes != self.shapes:
            self.shapes, self.last = shapes, measure_cost(model, self.channels, self.image_size,
                                                          self.gpu)
            return self.last
        self.last = Cost(nonzero_parameters(model), self.last.macs, self.last.latency_ms,
                         self.last.latency_ms_gpu)
        return self.last


def nonzero_parameters(model: nn.Module) -> int:
    """Non-zero parameters of `model`, reading a pruned weight as its mask leaves it."""
    total = 0
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            # torch.nn.utils.prune keeps `<name>_orig` as the parameter and `<name>` = orig * mask
            tensor = getattr(module, name.removesuffix("_orig")) if name.endswith("_orig") else p
            total += int(tensor.count_nonzero())
    return total


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(non-zero, total) parameters of `model`."""
    params = list(model.parameters())
    return sum(int(p.count_nonzero()) for p in params), sum(p.numel() for p in params)


@torch.no_grad()
def macs(model: nn.Module, channels: int, image_size: int) -> int:
    """Multiply-accumulates of the conv and linear layers for one image, counted from the shapes
    each layer actually sees (so channels removed by pruning count as removed)."""
    total = 0

    def count(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kernel = module.weight.shape[1] * module.weight.shape[2] * module.weight.shape[3]
            total += output.numel() * kernel  # output (1, C_out, H, W); kernel C_in/groups * k * k
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        model.eval()(torch.zeros(1, channels, image_size, image_size,
                                 device=next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
    return total


@torch.no_grad()
def latency_ms(model: nn.Module, batch: int, channels: int, image_size: int, threads: int = 1,
               budget_s: float = 0.5, max_runs: int = 30, device: torch.device | None = None) -> float:
    """Median wall time in ms of one forward pass of `batch` images: one warm-up pass, then at least
    5 timed passes, more while `budget_s` lasts. On the CPU with `threads` torch threads (one by
    default: on a shared machine, more threads than idle cores make the figure mostly waiting); on
    a GPU, synchronised around each pass."""
    model = model.eval()
    device = device or torch.device("cpu")
    x = torch.rand(batch, channels, image_size, image_size, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model(x)
        sync()
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < 5 or (len(times) < max_runs and time.perf_counter() - start < budget_s):
            t0 = time.perf_counter()
            model(x)
            sync()
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        torch.set_num_threads(before)
    return float(np.median(times))
