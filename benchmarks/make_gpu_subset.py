"""Writes benchmarks/data/cifar10-subset.npz: a class-balanced CIFAR-10 subset that the section `gpu`
(benchmarks/sections/gpu.py) carries to a GPU machine (the working tree that travels is capped at
64 MiB, and ../shared stays behind).

    .venv/bin/python -m benchmarks.make_gpu_subset [--data-dir /work/shared/datasets/cifar10]

The JPEGs are decoded by core.data's own decoder (PIL, to (N, 3, 32, 32) uint8) and saved with
np.savez_compressed: x_train, y_train, x_test, y_test, classes, mean, std (per channel, 0..1 scale,
from the kept train images, as core.data.load_dataset computes them).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from core.data import _decode
from core.sources import list_class_folders

OUT = Path(__file__).resolve().parent / "data" / "cifar10-subset.npz"


def balanced(files: list[tuple[str, int]], per_class: int, seed: int) -> list[tuple[str, int]]:
    """`per_class` files of each label, drawn at random with `seed`, in file order."""
    rng = np.random.default_rng(seed)
    kept = []
    for label in sorted({label for _, label in files}):
        rows = [i for i, (_, lab) in enumerate(files) if lab == label]
        kept += sorted(rng.choice(rows, size=min(per_class, len(rows)), replace=False).tolist())
    return [files[i] for i in sorted(kept)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="/work/shared/datasets/cifar10")
    parser.add_argument("--train", type=int, default=10_000, help="train images (balanced by class)")
    parser.add_argument("--test", type=int, default=2_000, help="test images (balanced by class)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()

    root = Path(args.data_dir)
    train_files, classes = list_class_folders(root / "train", root)
    test_files, _ = list_class_folders(root / "test", root)
    k = len(classes)
    x_train, y_train = _decode(balanced(train_files, args.train // k, args.seed))
    x_test, y_test = _decode(balanced(test_files, args.test // k, args.seed + 1))
    mean = (x_train.mean(axis=(0, 2, 3)) / 255.0).astype(np.float64)
    std = (x_train.std(axis=(0, 2, 3)) / 255.0 + 1e-6).astype(np.float64)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                        classes=np.array(classes), mean=mean, std=std)
    print(f"{out}: {len(y_train)} train + {len(y_test)} test images of {k} classes, "
          f"{out.stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
