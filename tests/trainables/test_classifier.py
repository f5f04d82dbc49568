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
from search.door.spec import build_spec
from search.scheduling.tuner import new_tuner
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

    state = checkpoints.load(result.checkpoint.path)
    # Exactly what a restore (core/trial.py) and the served model read: nothing written unread.
    assert set(state) == {"model", "optimizer", "schedule", "torch_rng", "generator", "model_spec",
                          "epoch", "mean", "std", "classes", "image_size"}
    served = checkpoints.served_model(checkpoints.model_from_checkpoint(result.checkpoint.path),
                                      result.checkpoint.path)
    assert (served.classes, served.image_size) == (data.classes, data.image_size)
    trained = state["model"]
    for name, tensor in source.state_dict().items():
        if name.startswith("fc."):
            assert trained[name].shape[0] == 3  # a new head for the data set's 3 classes
        elif name.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue  # batch-norm statistics follow the data even when frozen
        else:
            assert torch.equal(trained[name], tensor), name  # loaded, and frozen
    fresh_head = ResNet18(num_classes=3, in_channels=3, width=0.0625).fc.weight
    assert not torch.equal(trained["fc.weight"], fresh_head)


def test_a_channel_pruned_trial_resumes_mid_pruning_and_keeps_its_small_model(
        local_ray, image_folder, tmp_path):
    # Channels go at epochs 1-3 (75 % of 4); the trial crashes once at epoch 3 and Ray restarts it
    # from the checkpoint of epoch 2, a model with some channels already gone.
    once = tmp_path / "crashed-once"
    settings = {"dataset": "imagefolder", "data_dir": str(image_folder), "num_samples": 1,
                "max_epochs": 4, "scheduler": "fifo", "max_failures": 1,
                "storage": str(tmp_path / "results"), "name": "channels"}
    space = {"lr": tune.choice([0.05]), "width": 0.125, "batch_size": 16,
             "prune_method": "channel", "prune_ratio": 0.5,
             "_fault": {"kind": "raise", "epoch": 3, "once_file": str(once)}}
    spec = build_spec(Path("channels.py"), settings, space, allow_faults=True)
    data = load_dataset("imagefolder", str(image_folder), cache_dir=str(tmp_path))
    grid = new_tuner(spec, data, []).fit()
    assert once.exists() and not grid.errors  # it crashed, and recovered
    result = grid[0]
    history = result.metrics_dataframe.drop_duplicates("training_iteration", keep="last")
    assert history["training_iteration"].tolist() == [1, 2, 3, 4]
    params = history["params"].tolist()
    assert params[0] > params[1] > params[2] == params[3]  # smaller each pruning epoch, then kept
    assert history["sparsity"].iloc[-1] == pytest.approx(0.5, abs=0.06)
    assert history["latency_ms"].gt(0).all() and history["macs"].iloc[-1] < history["macs"].iloc[0]

    # The checkpoint kept is the last (the model shrank after its best epoch) and reloads small.
    model = checkpoints.model_from_checkpoint(result.checkpoint.path)
    assert checkpoints.load(result.checkpoint.path)["epoch"] == 4
    assert model.conv1.out_channels < 8
    assert sum(int(p.count_nonzero()) for p in model.parameters()) == params[-1]
    assert model(torch.rand(2, 3, 8, 8)).shape == (2, 3)
