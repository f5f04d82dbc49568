"""The trainable in a real (one-trial) Ray Tune run: fine-tuning from a checkpoint file with a frozen
backbone trains only the new head, and the checkpoint holds what it trained."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
import torch
from ray import tune

from core.data import load_dataset
from core.models import ResNet18
from search.spec import build_spec
from search.tuner import new_tuner
from trainables import checkpoints

pytestmark = pytest.mark.slow


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def test_fine_tuning_loads_the_weights_and_trains_only_the_head(local_ray, image_folder, tmp_path):
    torch.manual_seed(123)
    source = ResNet18(num_classes=7, in_channels=3, width=0.0625)  # another head: 7 classes
    weights = tmp_path / "pretrained.pt"
    torch.save(source.state_dict(), weights)

    settings = {"dataset": "imagefolder", "data_dir": str(image_folder), "num_samples": 1,
                "max_epochs": 2, "scheduler": "fifo", "storage": str(tmp_path / "results"),
                "name": "finetune"}
    space = {"lr": tune.choice([0.05]), "width": 0.0625, "batch_size": 16,
             "weights": str(weights), "freeze": "backbone", "weight_decay": 0.0}
    spec = build_spec(Path("finetune.py"), settings, space)
    data = load_dataset("imagefolder", str(image_folder), cache_dir=str(tmp_path))
    grid = new_tuner(spec, data, []).fit()
    assert not grid.errors
    result = grid[0]
    assert result.metrics["training_iteration"] == 2

    trained = checkpoints.load(result.checkpoint.path)["model"]
    for name, tensor in source.state_dict().items():
        if name.startswith("fc."):
            assert trained[name].shape[0] == 3  # a new head for the data set's 3 classes
        elif name.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue  # batch-norm statistics follow the data even when frozen
        else:
            assert torch.equal(trained[name], tensor), name  # loaded, and frozen
    fresh_head = ResNet18(num_classes=3, in_channels=3, width=0.0625).fc.weight
    assert not torch.equal(trained["fc.weight"], fresh_head)
