"""The CIFAR-10 sample `make run` falls back to is an ImageFolder tree that tune-run's loader reads."""

from __future__ import annotations

import numpy as np

from benchmarks.unpack_sample import unpack
from core.data import load_dataset


def _sample(path, per_split=(12, 6), classes=("cat", "dog", "ship")):
    rng = np.random.default_rng(0)
    arrays = {"classes": np.array(classes)}
    for split, n in zip(("train", "test"), per_split):
        arrays[f"x_{split}"] = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        arrays[f"y_{split}"] = np.arange(n) % len(classes)
    np.savez_compressed(path, **arrays)
    return arrays


def test_the_sample_unpacks_to_the_same_images_and_classes(tmp_path):
    arrays = _sample(tmp_path / "sample.npz")
    tree = unpack(tmp_path / "cifar10-sample", tmp_path / "sample.npz")
    data = load_dataset("cifar10", str(tree), val_fraction=0.0)
    assert data.classes == ["cat", "dog", "ship"]
    assert len(data.train_y) == 12 and len(data.test_y) == 6
    assert sorted(map(bytes, data.test_x)) == sorted(map(bytes, arrays["x_test"]))
    assert not (tmp_path / "cifar10-sample.partial").exists()


def test_a_tree_already_there_is_kept(tmp_path):
    _sample(tmp_path / "sample.npz")
    tree = unpack(tmp_path / "cifar10-sample", tmp_path / "sample.npz")
    marker = tree / "train" / "cat" / "kept"
    marker.write_text("")
    unpack(tree, tmp_path / "sample.npz")
    assert marker.exists()
