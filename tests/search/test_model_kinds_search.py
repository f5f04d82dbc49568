"""Real tiny searches of models other than the built-in one (torchvision's, channel-pruned too;
timm's; a user's own file, killed and resumed, then served by a real `mlflow models serve` without
the file), through the CLI, real Ray Tune and a real MLflow SQLite store."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys

import mlflow.pyfunc
import mlflow.pytorch
import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import REPO, search_runs, write_space
from tests.search.cli_search import Search, assert_one_clean_record
from tests.search.model_server import ask, serving

pytestmark = pytest.mark.slow

USER_MODEL = """
from torch import nn

class Tiny(nn.Module):  # a class of the user's file: shipped with the model by value
    def __init__(self, num_classes, in_channels, depth, dropout):
        super().__init__()
        layers = [nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()]
        for _ in range(depth - 1):
            layers += [nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()]
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout))
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.head(self.body(x))


def build(num_classes, in_channels, depth, dropout=0.0):
    return Tiny(num_classes, in_channels, depth, dropout)
"""


def _search(work, image_folder, model: str, space: str, experiment: str,
            env: dict[str, str] | None = None):
    settings = {"dataset": "imagefolder", "data_dir": str(image_folder), "num_samples": 2,
                "max_epochs": 2, "grace_period": 1, "max_concurrent": 2, "seed": 1,
                "model": model, "experiment": experiment, "storage": str(work / "results")}
    space_file = write_space(work / "space.py", settings, space)
    uri = f"sqlite:///{work}/mlflow.db"
    proc = subprocess.run(
        [sys.executable, "-m", "search.cli", str(space_file), "--tracking-uri", uri],
        cwd=work, capture_output=True, text=True, timeout=600,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(work), **(env or {})})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return uri


def _assert_trained_and_shipped(uri: str, experiment: str, classes: int) -> None:
    _, parents, children = search_runs(uri, experiment)
    assert len(parents) == 1 and len(children) == 2
    assert all(c.info.status == "FINISHED" for c in children)
    mlflow.set_tracking_uri(uri)
    model = mlflow.pytorch.load_model(f"runs:/{parents[0].info.run_id}/best_model")
    with torch.no_grad():  # float 0..1 (N, C, H, W): the normalisation is inside the model
        out = model(torch.rand(2, 3, 8, 8))
    assert out.shape == (2, classes)


def test_a_torchvision_model_is_searched_with_its_dropout_and_channels_removed(image_folder,
                                                                              tmp_path):
    uri = _search(tmp_path, image_folder, "mobilenet_v3_small", """
        "lr": tune.loguniform(1e-3, 1e-1),
        "dropout": tune.uniform(0.0, 0.5),
        "prune_method": "channel",
        "prune_ratio": 0.5,
        "batch_size": 16,
    """, "tv")
    _assert_trained_and_shipped(uri, "tv", 3)
    _, _, children = search_runs(uri, "tv")
    for child in children:  # torch-pruning's graph removed channels: a smaller model
        metrics = child.data.metrics
        assert 0.4 <= metrics["sparsity"] <= 0.6, metrics


def test_a_torchvision_model_fine_tunes_from_torch_s_cache_and_ships_its_normalisation(
        image_folder, tmp_path):
    from torchvision import models

    # What torchvision fetched once where online: DEFAULT's file in TORCH_HOME's hub cache.
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    pretrained = models.mobilenet_v3_small()
    file = models.MobileNet_V3_Small_Weights.DEFAULT.url.rsplit("/", 1)[-1]
    torch.save(pretrained.state_dict(), cache / file)
    uri = _search(tmp_path, image_folder, "mobilenet_v3_small", """
        "lr": tune.loguniform(1e-3, 1e-1),
        "weights": "DEFAULT",
        "freeze": "backbone",
        "batch_size": 16,
    """, "ft", env={"TORCH_HOME": str(tmp_path / "torch")})
    _assert_trained_and_shipped(uri, "ft", 3)
    _, parents, _ = search_runs(uri, "ft")
    shipped = mlflow.pytorch.load_model(f"runs:/{parents[0].info.run_id}/best_model")
    assert shipped.mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])  # ImageNet's
    assert shipped.std.flatten().tolist() == pytest.approx([0.229, 0.224, 0.225])
    for name, tensor in pretrained.state_dict().items():  # the backbone as loaded, untrained
        if not name.startswith("classifier.3."):
            assert torch.equal(shipped.net.state_dict()[name], tensor), name


def test_a_timm_model_is_searched(image_folder, tmp_path):
    pytest.importorskip("timm")
    uri = _search(tmp_path, image_folder, "timm/resnet10t", """
        "lr": tune.loguniform(1e-3, 1e-1),
        "dropout": tune.choice([0.0, 0.2]),
        "batch_size": 16,
    """, "timm")
    _assert_trained_and_shipped(uri, "timm", 3)


def test_a_model_of_the_user_s_own_file_is_searched(image_folder, tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny.py").write_text(USER_MODEL)
    uri = _search(tmp_path, image_folder, "models/tiny.py:build", """
        "lr": tune.loguniform(1e-3, 1e-1),
        "dropout": tune.choice([0.0, 0.2]),
        "depth": tune.choice([1, 2]),  # a parameter of the user's own function
        "batch_size": 16,
    """, "own")
    (tmp_path / "models" / "tiny.py").unlink()  # the shipped model carries its own code
    _assert_trained_and_shipped(uri, "own", 3)


def test_a_user_models_search_resumes_without_its_data_cache_and_serves_without_its_file(
        image_folder, tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny.py").write_text(USER_MODEL)
    search = Search(tmp_path, image_folder, model="models/tiny.py:build",
                    model_space='"depth": tune.choice([1, 2]),')
    rows_before, midway, *_ = search.interrupt_when_two_finished_and_one_midway(
        search.start(), signal.SIGKILL)
    decoded = tmp_path / ".cache" / "tune-run"  # HOME is tmp_path: the decoded data set's cache
    assert list(decoded.glob("data-*/train_x.npy"))
    shutil.rmtree(decoded)  # the resumed search decodes it again
    resumed = search.run("--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_one_clean_record(search, rows_before, midway)

    (tmp_path / "models" / "tiny.py").unlink()  # the shipped model carries its own code
    _, parents, _ = search_runs(search.uri, "resume")
    model_uri = f"runs:/{parents[0].info.run_id}/best_model"
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    # A fresh server process that has tune-run's code but not the user's file on its path.
    with serving(model_uri, search.uri, tmp_path / "serve.log",
                 env={"PYTHONPATH": str(REPO)}) as url:
        answer = ask(url, images)
    assert answer.ok, answer.text[:500]
    served = [row["class"] for row in answer.json()["predictions"]]
    mlflow.set_tracking_uri(search.uri)
    assert served == list(mlflow.pyfunc.load_model(model_uri).predict(images)["class"])
    Image.fromarray(images[0]).save(tmp_path / "one.png")
    predicted = subprocess.run(
        [sys.executable, "-m", "search.cli", "predict", "interrupted", str(tmp_path / "one.png"),
         "--storage", str(tmp_path / "results"), "--tracking-uri", search.uri],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
             "TUNE_RUN_TEST_FAULTS": "1"})  # the saved space has the test's slow-epoch fault
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert predicted.stdout.split(": ")[1].split()[0] == served[0]  # the top class, as served
