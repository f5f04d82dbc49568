"""A real search of a CSV manifest of photo-sized images, through the CLI, Ray Tune and MLflow:
paths relative to the CSV, its own validation rows, and the resized crop of photos by default."""

from __future__ import annotations

import subprocess
import sys

import mlflow.pytorch
import pytest
import torch

from tests.conftest import REPO, search_runs, write_space
from tests.core.test_sources import write_csv, write_png_folder

pytestmark = pytest.mark.slow


def test_a_csv_manifest_of_photos_is_searched(tmp_path):
    images = write_png_folder(tmp_path / "photos", classes=("ant", "bee"), per_class=10, size=72)
    rows = [(str(p.relative_to(tmp_path)), p.parent.name) for p in images]
    write_csv(tmp_path / "train.csv", rows[:7] + rows[10:17])
    write_csv(tmp_path / "val.csv", rows[7:9] + rows[17:19])
    write_csv(tmp_path / "test.csv", [rows[9], rows[19]])
    settings = {"dataset": "csv", "train_csv": "train.csv", "val_csv": "val.csv",
                "test_csv": "test.csv", "num_samples": 2, "max_epochs": 1, "max_concurrent": 2,
                "experiment": "csv", "storage": str(tmp_path / "results")}
    space = write_space(tmp_path / "space.py", settings, """
        "lr": tune.loguniform(1e-3, 1e-1),
        "width": 0.125,
        "batch_size": 4,
    """)
    uri = f"sqlite:///{tmp_path}/mlflow.db"

    def tune_run(*flags):
        return subprocess.run([sys.executable, "-m", "search.cli", str(space), "--tracking-uri",
                               uri, *flags], cwd=REPO, capture_output=True, text=True, timeout=600,
                              env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin",
                                   "HOME": str(tmp_path)})

    dry = tune_run("--dry-run")
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "14 train, 4 validation and 2 test images in 2 classes" in dry.stdout
    proc = tune_run()
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, parents, children = search_runs(uri, "csv")
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    mlflow.set_tracking_uri(uri)
    model = mlflow.pytorch.load_model(f"runs:/{parents[0].info.run_id}/best_model")
    assert model.classes == ["ant", "bee"] and model.image_size == 72
    with torch.no_grad():
        assert model(torch.rand(1, 3, 72, 72)).shape == (1, 2)
