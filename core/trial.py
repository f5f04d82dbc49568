"""One trial's set-up and its epoch: the path the trainable, the GPU check and the benchmarks all run.

`build_trial` turns a data set, a device and a trial's hyperparameters (one plain argument each, as
core/hparams.py names them) into the parts a trial trains with: the model and its pruner, the
optimizer, the learning-rate schedule, the batched augmentation and Mixup, the precision and layout,
the data on the device, the evaluation batch. `Trial.run_epoch` trains one epoch, prunes, evaluates
and measures what the model costs. Plain PyTorch: Ray's reports, checkpoint folders and resources
stay in trainables/classifier.py, so a machine without Ray measures this very path.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from core.augment import BatchAugment, crop_padding, default_augment
from core.cost import Cost, CostMeter
from core.data import Dataset
from core.finetune import freeze as freeze_layers
from core.finetune import load_pretrained, pretrained_normalisation
from core.inference import inference_copy
from core.mixup import Mixup, make_mixup
from core.models import MODEL_OPTIONS, build_model, model_keywords, model_kind
from core.optim import make_optimizer, make_schedule
from core.precision import Mode, resolve_mode, safe_on_cpu
from core.pruning import ChannelPruner, GradualPruner, fit_to_state, make_pruner, rebind
from core.streamed import StreamedImages, host_tensor, should_stream
from core.train import EpochStats, Images, evaluate, steps_per_epoch, train_epoch


class TrialOutOfMemory(RuntimeError):
    """A trial's batch did not fit its device; the message names the batch size and model."""


def model_spec(name: str, num_classes: int, in_channels: int, *, width: float, activation: str,
               norm: str, conv: str, dropout: float, init: str, prune_ratio: float,
               prune_method: str, given: Collection[str] = MODEL_OPTIONS) -> dict[str, Any]:
    """Everything needed to rebuild a trial's model (what a checkpoint records as `model_spec`).

    The built-in model takes every model option; another takes those of `given` (the ones the
    trial's space sets) that it has a keyword for, and keeps its own defaults for the rest.
    """
    options = {"width": width, "activation": activation, "norm": norm, "conv": conv,
               "dropout": dropout, "init": init}
    if model_kind(name) != "builtin":
        takes = model_keywords(name)
        options = {k: v for k, v in options.items() if k in given and k in takes}
    return {"name": name, "num_classes": num_classes, "in_channels": in_channels,
            "prune_ratio": prune_ratio, "prune_method": prune_method, "options": options}


def build_from_spec(spec: dict[str, Any],
                    epochs: int = 1) -> tuple[nn.Module, GradualPruner | ChannelPruner]:
    """The dense model of `spec` and its pruner."""
    model = build_model(spec["name"], spec["num_classes"], spec["in_channels"], **spec["options"])
    return model, make_pruner(model, spec["prune_method"], spec["prune_ratio"],
                              epochs, spec["in_channels"])


def load_model_state(model: nn.Module, pruner: GradualPruner | ChannelPruner,
                     state: dict[str, torch.Tensor]) -> None:
    """Loads a checkpoint's weights into the model `build_from_spec` made, reshaping it first where
    channels were removed."""
    if isinstance(pruner, ChannelPruner):
        fit_to_state(model, state)
    model.load_state_dict(state)


def eval_batch(device: torch.device) -> int:
    """Images per evaluation batch on `device`."""
    # One core's caches favour small batches (128 ran 2x faster than 1024 here); GPUs want big ones.
    return 128 if device.type == "cpu" else 1024


@dataclass
class EpochResult:
    """What one epoch of a trial did; `metrics()` is what the trainable reports for it."""

    epoch: int
    lr: float  # the learning rate at the epoch's start
    stats: EpochStats  # training alone: loss, images, seconds
    sparsity: float
    val_loss: float
    val_acc: float
    eval_seconds: float
    cost: Cost
    device: str
    mode: Mode

    @property
    def diverged(self) -> bool:
        return not math.isfinite(self.stats.loss)

    def metrics(self) -> dict[str, Any]:
        return self.cost.metrics() | {
            "epoch": self.epoch, "train_loss": self.stats.loss, "val_loss": self.val_loss,
            "val_acc": self.val_acc, "lr": self.lr, "sparsity": self.sparsity,
            "epoch_seconds": self.stats.seconds, "images_per_s": self.stats.images_per_s,
            "device": self.device, "precision": self.mode.precision, "layout": self.mode.layout,
        } | ({"layout_reason": self.mode.why} if self.mode.why else {})


@dataclass
class Trial:
    """A trial's parts, built by `build_trial`; `run_epoch` trains them one epoch."""

    model: nn.Module
    step_model: nn.Module  # torch.compile(model) where asked for on a GPU, else model itself
    pruner: GradualPruner | ChannelPruner
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    augment: BatchAugment
    mixup: Mixup | None
    mode: Mode
    generator: torch.Generator
    x: Images  # (N, C, H, W) uint8 on the device, or streamed to it
    y: torch.Tensor  # (N,) int64 on the device
    val_x: Images
    val_y: torch.Tensor
    batch_size: int
    label_smoothing: float
    eval_batch: int
    steps_per_epoch: int
    max_epochs: int
    spec: dict[str, Any]  # model_spec: what rebuilds the model
    device: torch.device
    cost: CostMeter

    def run_epoch(self, epoch: int, before: Callable[[], None] | None = None) -> EpochResult:
        """Trains epoch `epoch` (1-based), prunes to its target unless the loss diverged, evaluates
        on the validation split and measures the model's cost. `before` runs first, inside the
        out-of-memory guard (the trainable's test faults). Raises TrialOutOfMemory when a training
        batch does not fit the device."""
        lr = self.optimizer.param_groups[0]["lr"]
        try:
            if before is not None:
                before()
            stats = train_epoch(self.step_model, self.x, self.y, self.augment, self.optimizer,
                                self.schedule, self.batch_size, self.label_smoothing, self.mixup,
                                self.generator, self.mode.autocast_dtype)
        except torch.OutOfMemoryError as e:
            options = self.spec["options"]
            raise TrialOutOfMemory(
                f"out of memory on {self.device} at epoch {epoch} with batch_size={self.batch_size}, "
                f"model {self.spec['name']} width={options['width']} conv={options['conv']}: lower "
                f"batch_size or width, or give trials more of a GPU ({str(e).splitlines()[0]})"
            ) from None
        diverged = not math.isfinite(stats.loss)
        sparsity = self.pruner.sparsity() if diverged else self.pruner.step(epoch, self.optimizer)
        start = time.perf_counter()
        val_loss, val_acc = evaluate(self._eval_model(), self.val_x, self.val_y, self.augment,
                                     self.eval_batch, autocast_dtype=self.mode.autocast_dtype)
        eval_seconds = time.perf_counter() - start
        return EpochResult(epoch, lr, stats, sparsity, val_loss, val_acc, eval_seconds,
                           self.cost.measure(self.model), str(self.device), self.mode)

    def training_state(self) -> dict[str, Any]:
        """What resumes this trial where it is: weights, optimizer, schedule and random states."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "torch_rng": torch.get_rng_state(),
                "generator": self.generator.get_state(), "model_spec": self.spec}

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Continues from `training_state()`'s dict (a checkpoint's, loaded on the CPU)."""
        load_model_state(self.model, self.pruner, state["model"])
        rebind(self.optimizer, self.model)  # channels removed before the checkpoint: new parameters
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["torch_rng"])
        self.generator.set_state(state["generator"])
        self.model.to(memory_format=self.mode.memory_format)  # layers reshaped to a pruned checkpoint

    def _eval_model(self) -> nn.Module:
        """BatchNorm folded into a copy for evaluation, unless torch.compile already optimises it."""
        return inference_copy(self.model) if self.step_model is self.model else self.step_model


def build_trial(
    data: Dataset,
    device: torch.device,
    *,
    model_name: str,
    max_epochs: int,
    precision: str = "auto",
    compile: bool = False,
    optimizer: str,
    lr: float,
    momentum: float,
    weight_decay: float,
    nesterov: bool,
    schedule: str,
    warmup_epochs: int,
    dropout: float,
    mixup_alpha: float,
    label_smoothing: float,
    prune_ratio: float,
    prune_method: str,
    activation: str,
    norm: str,
    conv: str,
    width: float,
    init: str,
    batch_size: int,
    seed: int,
    weights: str | None,
    freeze: str,
    model_options: Collection[str] = MODEL_OPTIONS,
    model_extras: dict[str, Any] | None = None,
    augment: str | None = None,
) -> Trial:
    """Sets up one trial of `model_name` on `data` and `device`, ready for `Trial.run_epoch`.

    The hyperparameters are core/hparams.py's, one argument each, and all of them are required:
    `build_trial(data, device, model_name="resnet18", max_epochs=4, **resolve(config))` passes a
    trial config with the table's defaults filled in. `max_epochs` is the search's (the length of
    the schedule and the pruning ramp); `precision` is auto, fp32 or bf16 (core/precision.py);
    `compile` wraps the training model in torch.compile on a GPU. Seeds torch's global generator with
    `seed` first, then builds the model, so the same arguments give the same trial.
    """
    torch.manual_seed(seed)
    generator = torch.Generator(device).manual_seed(seed)
    spec = model_spec(model_name, data.num_classes, data.in_channels, width=width,
                      activation=activation, norm=norm, conv=conv, dropout=dropout, init=init,
                      prune_ratio=prune_ratio, prune_method=prune_method, given=model_options)
    spec["options"] |= model_extras or {}  # a user's model function's own parameters
    net, pruner = build_from_spec(spec, max_epochs)
    if weights:
        load_pretrained(net, model_name, weights)
    freeze_layers(net, model_name, freeze)
    mode = resolve_mode(precision, device)
    if device.type == "cpu":
        mode = safe_on_cpu(mode, spec, tuple(data.train_x.shape[1:]), batch_size,
                           torch.get_num_threads())
    net = net.to(device, memory_format=mode.memory_format)
    opt = make_optimizer(optimizer, [p for p in net.parameters() if p.requires_grad], lr, momentum,
                         weight_decay, nesterov)
    x, y = _on_device(data.train_x, data.train_y, device)
    val_x, val_y = _on_device(data.val_x, data.val_y, device)
    steps = steps_per_epoch(len(y), batch_size)
    sched = make_schedule(schedule, opt, max_epochs, steps, warmup_epochs)
    mean, std = pretrained_normalisation(model_name, weights, data.in_channels) or (data.mean,
                                                                                   data.std)
    batches = BatchAugment(mean, std, crop_padding(data.image_size), data.hflip,
                           mode.memory_format, augment or default_augment(data.image_size))
    mixup = make_mixup(mixup_alpha, data.num_classes)
    step_model = torch.compile(net) if compile and device.type == "cuda" else net
    cost = CostMeter(data.in_channels, data.image_size, gpu=device if device.type == "cuda" else None)
    return Trial(net, step_model, pruner, opt, sched, batches, mixup, mode, generator, x, y, val_x,
                 val_y, batch_size, label_smoothing, eval_batch(device), steps, max_epochs, spec,
                 device, cost)


def _on_device(x: np.ndarray, y: np.ndarray, device: torch.device) -> tuple[Images, torch.Tensor]:
    """Wraps the shared uint8 arrays without copying on the CPU; on a GPU, one copy per trial,
    unless the images are to be streamed to it (core/streamed.py); the labels are always copied."""
    images = (StreamedImages(x, device) if should_stream(x, device)
              else host_tensor(x).to(device))
    return images, host_tensor(y).to(device)
