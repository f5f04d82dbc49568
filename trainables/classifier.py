"""The Ray Tune trainable: trains one image classifier for one trial's hyperparameters.

It unpacks the trial's config once (core/ never sees Ray's dict), reports after every epoch and
checkpoints every epoch, continuing from the last checkpoint when Ray restarts the trial.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from dataclasses import dataclass

import ray
import torch
from ray import tune

from core.augment import BatchAugment, crop_padding
from core.cost import CostMeter
from core.data import Dataset
from core.finetune import freeze, load_pretrained
from core.hparams import resolve
from core.inference import inference_copy
from core.mixup import make_mixup
from core.optim import make_optimizer, make_schedule
from core.precision import resolve_mode
from core.pruning import rebind
from core.train import evaluate, steps_per_epoch, train_epoch
from trainables import checkpoints
from trainables.data_source import DataSource
from trainables.faults import inject_fault


class TrialOutOfMemory(RuntimeError):
    """A trial's batch did not fit its device; the message names the batch size and model."""


@dataclass(frozen=True)
class TrialSettings:
    """Search-wide settings a trial needs (not hyperparameters)."""

    model: str
    max_epochs: int
    compile: bool = False
    precision: str = "auto"  # auto | fp32 | bf16 (core/precision.py)


def train_classifier(config: dict, data: Dataset | None, settings: TrialSettings,
                     source: DataSource | None = None) -> None:
    """Function trainable: `tune.with_parameters(train_classifier, data=..., settings=...)`, or
    with `data=None, source=...` for a data set each node reads itself (trainables/data_source.py)."""
    if data is None:
        data = source.load()
    hp = resolve(config)
    device = _trial_device()
    torch.manual_seed(hp["seed"])
    generator = torch.Generator(device).manual_seed(hp["seed"])

    spec = checkpoints.model_spec(settings.model, data.num_classes, data.in_channels, hp)
    model, pruner = checkpoints.build_from_spec(spec, settings.max_epochs)
    if hp["weights"]:
        load_pretrained(model, hp["weights"])
        freeze(model, hp["freeze"])
    mode = resolve_mode(settings.precision, device)
    model = model.to(device, memory_format=mode.memory_format)
    optimizer = make_optimizer(hp["optimizer"], [p for p in model.parameters() if p.requires_grad],
                               hp["lr"], hp["momentum"], hp["weight_decay"], hp["nesterov"])
    x, y = _on_device(data.train_x, data.train_y, device)
    vx, vy = _on_device(data.val_x, data.val_y, device)
    schedule = make_schedule(hp["schedule"], optimizer, settings.max_epochs,
                             steps_per_epoch(len(y), hp["batch_size"]), hp["warmup_epochs"])
    augment = BatchAugment(data.mean, data.std, crop_padding(data.image_size), data.hflip,
                           mode.memory_format)
    mixup = make_mixup(hp["mixup_alpha"], data.num_classes)
    amp = mode.autocast_dtype
    step_model = torch.compile(model) if settings.compile and device.type == "cuda" else model

    cost = CostMeter(data.in_channels, data.image_size, gpu=device if device.type == "cuda" else None)
    done = _restore(tune.get_checkpoint(), model, pruner, optimizer, schedule, generator)
    model.to(memory_format=mode.memory_format)  # layers reshaped to a channel-pruned checkpoint
    for epoch in range(done + 1, settings.max_epochs + 1):
        lr = optimizer.param_groups[0]["lr"]
        try:
            inject_fault(config, epoch, model)
            stats = train_epoch(step_model, x, y, augment, optimizer, schedule, hp["batch_size"],
                                hp["label_smoothing"], mixup, generator, amp)
        except torch.OutOfMemoryError as e:
            raise TrialOutOfMemory(
                f"out of memory on {device} at epoch {epoch} with batch_size={hp['batch_size']}, "
                f"model {settings.model} width={hp['width']} conv={hp['conv']}: lower batch_size "
                f"or width, or give trials more of a GPU ({str(e).splitlines()[0]})"
            ) from None
        diverged = not math.isfinite(stats.loss)
        sparsity = pruner.sparsity() if diverged else pruner.step(epoch, optimizer)
        val_loss, val_acc = evaluate(_eval_model(model, step_model), vx, vy, augment,
                                     _eval_batch(device), autocast_dtype=amp)
        metrics = cost.measure(model).metrics() | {
            "epoch": epoch, "train_loss": stats.loss, "val_loss": val_loss, "val_acc": val_acc,
            "lr": lr, "sparsity": sparsity, "epoch_seconds": stats.seconds,
            "images_per_s": stats.images_per_s, "device": str(device),
            "precision": mode.precision, "layout": mode.layout,
            "gpu_ids": ",".join(str(g) for g in ray.get_gpu_ids()),
            "node": ray.get_runtime_context().get_node_id(),  # which Ray node trained this epoch
        }
        if diverged:
            # Diverged: report it (with the search metric, as Ray requires) and end the trial now
            # rather than burn its budget; no checkpoint of a broken model.
            tune.report(metrics | {"val_loss": math.inf, "diverged": 1})
            return
        with tempfile.TemporaryDirectory() as folder:
            checkpoints.save(
                folder, model=model.state_dict(), optimizer=optimizer.state_dict(),
                schedule=schedule.state_dict(), epoch=epoch, torch_rng=torch.get_rng_state(),
                generator=generator.get_state(), model_spec=spec, hparams=hp,
                mean=data.mean, std=data.std, classes=data.classes, image_size=data.image_size,
            )
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def _trial_device() -> torch.device:
    """The GPU Ray assigned (it sets CUDA_VISIBLE_DEVICES, so it is cuda:0), else the CPU with
    torch's threads set to the trial's CPUs."""
    if ray.get_gpu_ids() and torch.cuda.is_available():
        return torch.device("cuda", 0)
    cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    return torch.device("cpu")


def _eval_model(model: torch.nn.Module, step_model: torch.nn.Module) -> torch.nn.Module:
    """BatchNorm folded into a copy for evaluation, unless torch.compile already optimises it."""
    return inference_copy(model) if step_model is model else step_model


def _eval_batch(device: torch.device) -> int:
    # One core's caches favour small batches (128 ran 2x faster than 1024 here); GPUs want big ones.
    return 128 if device.type == "cpu" else 1024


def _on_device(x, y, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Wraps the shared uint8 arrays without copying on the CPU; one copy per trial on a GPU."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the object store's arrays are read-only
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    return xt.to(device), yt.to(device)


def _restore(checkpoint, model, pruner, optimizer, schedule, generator) -> int:
    """Loads the last checkpoint, if Ray gave one; returns the number of epochs already done."""
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as folder:
        state = checkpoints.load(folder)
    checkpoints.load_model_state(model, pruner, state["model"])
    rebind(optimizer, model)  # channels removed before the checkpoint: its parameters are new
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    torch.set_rng_state(state["torch_rng"])
    generator.set_state(state["generator"])
    return int(state["epoch"])
