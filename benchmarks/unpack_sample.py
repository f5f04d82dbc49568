"""Writes the CIFAR-10 sample this repository ships (benchmarks/data/cifar10-subset.npz: 10,000
training and 2,000 test images, class-balanced) as an ImageFolder tree, train/<class>/*.png and
test/<class>/*.png, which `tune-run --data-dir` reads like a full CIFAR-10 copy. `make run` uses it
on a machine where no CIFAR-10 copy is found.

    .venv/bin/python -m benchmarks.unpack_sample data/cifar10-sample

The tree is written beside its destination and renamed into place, so an interrupted run leaves
either the whole tree or none; a tree already there is kept.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SAMPLE = Path(__file__).resolve().parent / "data" / "cifar10-subset.npz"


def unpack(destination: Path, sample: Path = SAMPLE) -> Path:
    """The sample as an ImageFolder tree at `destination` (made once)."""
    if (destination / "train").is_dir() and (destination / "test").is_dir():
        return destination
    partial = destination.with_name(destination.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with np.load(sample) as z:
        classes = [str(c) for c in z["classes"]]
        for split in ("train", "test"):
            _write_split(partial / split, z[f"x_{split}"], z[f"y_{split}"], classes)
    partial.rename(destination)
    return destination


def _write_split(folder: Path, images: np.ndarray, labels: np.ndarray, classes: list[str]) -> None:
    for name in classes:
        (folder / name).mkdir(parents=True, exist_ok=True)
    for i, (image, label) in enumerate(zip(images, labels)):  # image: (3, H, W) uint8
        Image.fromarray(image.transpose(1, 2, 0)).save(folder / classes[label] / f"{i:05d}.png")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m benchmarks.unpack_sample DESTINATION")
    print(unpack(Path(sys.argv[1])))
