"""The Ray Tune trainable: trains one image classifier for one trial's hyperparameters.

It unpacks the trial's config once into core/trial.py's `build_trial` (core/ never sees Ray's dict),
which sets the trial up and trains its epochs; this module adds only what is Ray's: the device and
threads Ray gave, a report and a checkpoint after every epoch, and the restart from the last one.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from functools import partial

import ray
import torch
from ray import tune

from core.data import Dataset
from core.hparams import FAULT_KEY, HPARAMS, resolve
from core.models import MODEL_OPTIONS
from core.trial import Trial, TrialOutOfMemory, build_trial
from trainables import checkpoints
from trainables.data_source import DataSource
from trainables.faults import inject_fault

__all__ = ["TrialOutOfMemory", "TrialSettings", "train_classifier"]


@dataclass(frozen=True)
class TrialSettings:
    """Search-wide settings a trial needs (not hyperparameters)."""

    model: str
    max_epochs: int
    compile: bool = False
    precision: str = "auto"  # auto | fp32 | bf16 (core/precision.py)
    augment: str | None = None  # crop_flip | resized_crop_flip | none; None: by image size


def train_classifier(config: dict, data: Dataset | None, settings: TrialSettings,
                     source: DataSource | None = None) -> None:
    """Function trainable: `tune.with_parameters(train_classifier, data=..., settings=...)`, or
    with `data=None, source=...` for a data set each node reads itself (trainables/data_source.py)."""
    if data is None:
        data = source.load()
    extras = {k: v for k, v in config.items() if k not in HPARAMS and k != FAULT_KEY}
    hp = resolve({k: v for k, v in config.items() if k not in extras})
    device = _trial_device()
    trial = build_trial(data, device, model_name=settings.model, max_epochs=settings.max_epochs,
                        precision=settings.precision, compile=settings.compile,
                        model_options=[o for o in MODEL_OPTIONS if o in config],
                        model_extras=extras, augment=settings.augment, **hp)
    done = _restore(tune.get_checkpoint(), trial)
    for epoch in range(done + 1, settings.max_epochs + 1):
        result = trial.run_epoch(epoch, before=partial(inject_fault, config, epoch, trial.model))
        metrics = result.metrics() | {
            "gpu_ids": ",".join(str(g) for g in ray.get_gpu_ids()),
            "node": ray.get_runtime_context().get_node_id(),  # which Ray node trained this epoch
        }
        if result.diverged:
            # Diverged: report it (with the search metric, as Ray requires) and end the trial now
            # rather than burn its budget; no checkpoint of a broken model.
            tune.report(metrics | {"val_loss": math.inf, "diverged": 1})
            return
        with tempfile.TemporaryDirectory() as folder:
            checkpoints.save(folder, **trial.training_state(), epoch=epoch,
                             mean=trial.augment.mean, std=trial.augment.std, classes=data.classes,
                             image_size=data.image_size)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def _trial_device() -> torch.device:
    """The GPU Ray assigned (it sets CUDA_VISIBLE_DEVICES, so it is cuda:0), else the CPU with
    torch's threads set to the trial's CPUs."""
    if ray.get_gpu_ids() and torch.cuda.is_available():
        return torch.device("cuda", 0)
    cpus = tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    return torch.device("cpu")


def _restore(checkpoint, trial: Trial) -> int:
    """Loads the last checkpoint, if Ray gave one; returns the number of epochs already done."""
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as folder:
        state = checkpoints.load(folder)
    trial.load_training_state(state)
    return int(state["epoch"])
