"""The door's check of the data settings: refusals in one line, exit 2, nothing created."""

from __future__ import annotations

import pytest

from tests.core.test_sources import write_csv, write_mnist, write_png_folder
from tests.search.conftest import refuse_space_file, run_cli, space_file


def _settings(**settings) -> str:
    base = {"num_samples": 2, "max_epochs": 1}
    return repr(base | settings)


REFUSALS = [
    ({"dataset": "digits", "train_csv": "train.csv"}, ["settings.train_csv", "only dataset 'csv'"]),
    ({"dataset": "imagefolder", "data_dir": "pics", "download": True},
     ["settings.download", "torchvision fetches only"]),
    ({"dataset": "csv"}, ["settings.train_csv is not set"]),
    ({"dataset": "csv", "train_csv": "absent.csv"}, ["settings.train_csv", "absent.csv: no such file"]),
    ({"dataset": "mnist", "data_dir": "pics"}, ["MNIST/raw/train-images-idx3-ubyte is missing",
                                                "download: true"]),
    ({"dataset": "cifar10", "augment": "mosaic"}, ["settings.augment", "'mosaic' is not one of"]),
]


@pytest.mark.parametrize("settings, fragments", REFUSALS, ids=[str(i) for i in range(len(REFUSALS))])
def test_bad_data_settings_are_refused_in_one_line(settings, fragments, workdir, capsys):
    write_png_folder(workdir / "pics" / "train")
    refuse_space_file(space_file(_settings(**settings)), [], fragments, workdir, capsys)


def test_csv_and_torchvision_data_pass_the_dry_run(workdir, capsys):
    images = write_png_folder(workdir / "pics", classes=("x", "y"), per_class=3)
    write_csv(workdir / "train.csv", [(str(p.relative_to(workdir)), p.parent.name) for p in images])
    (workdir / "csv.py").write_text(space_file(_settings(dataset="csv", train_csv="train.csv")))
    code, err = run_cli(["csv.py", "--dry-run"], capsys)
    assert code == 0, err
    write_mnist(workdir / "mnist")
    (workdir / "mnist.py").write_text(space_file(_settings(dataset="mnist", data_dir="mnist")))
    code, err = run_cli(["mnist.py", "--dry-run"], capsys)
    assert code == 0, err
