"""Image data sets as uint8 arrays, decoded once per search and shared by every trial.

A `Dataset` holds train / val / test splits as (N, C, H, W) uint8 arrays and int64 labels. The driver
loads it once; Ray's object store hands the same memory to every trial on a node (zero-copy numpy).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.cache import cache_root
from core.images import ImageError, fit_array, read_image

DATASETS = ("cifar10", "imagefolder", "digits")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")


class DataError(Exception):
    """Data that cannot be found or read; the message says where it looked and what to do."""


@dataclass
class Dataset:
    name: str
    classes: list[str]
    train_x: np.ndarray  # (N, C, H, W) uint8
    train_y: np.ndarray  # (N,) int64
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    mean: tuple[float, ...]  # per channel, on the 0..1 scale, from the train split
    std: tuple[float, ...]
    hflip: bool  # whether horizontal flips keep an image's class (not for digits)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[2])


def load_dataset(
    name: str,
    data_dir: str | None,
    val_fraction: float = 0.1,
    subset: int | None = None,
    seed: int = 0,
    cache_dir: str | None = None,
    image_size: int | None = None,
) -> Dataset:
    """Loads a data set and carves a validation split from its train split with a fixed seed.

    `subset` keeps that many train images (before the split, class-balanced by random choice) and a
    proportional share of the test images, for CPU-sized runs. `image_size` resizes every image once,
    as it is decoded (shorter side, then a centre crop: core/images.py); None keeps the data's own
    size, which all images must then share. Decoded images are cached in `cache_dir`, by default
    the cache folder (core/cache.py).
    """
    if name == "digits":
        x, y, classes = _digits()
        (train_x, train_y), (test_x, test_y) = _split(x, y, 0.2, seed + 1)
        hflip = False
    elif name in ("cifar10", "imagefolder"):
        root = _find_root(name, data_dir)
        train, test, classes = _image_splits(name, root, subset, seed, cache_dir, image_size)
        (train_x, train_y), (test_x, test_y) = train, test
        hflip = True
    else:
        raise DataError(f"dataset {name!r}: expected one of {', '.join(DATASETS)}")
    if subset is not None and name == "digits":
        train_x, train_y = _take(train_x, train_y, subset, seed)
    if image_size is not None:  # arrays that came decoded already (digits, CIFAR-10's batches)
        train_x, test_x = fit_array(train_x, image_size), fit_array(test_x, image_size)
    (train_x, train_y), (val_x, val_y) = _split(train_x, train_y, val_fraction, seed)
    mean = tuple(float(m) for m in train_x.mean(axis=(0, 2, 3)) / 255.0)
    std = tuple(float(s) for s in train_x.std(axis=(0, 2, 3)) / 255.0 + 1e-6)
    return Dataset(name, classes, train_x, train_y, val_x, val_y, test_x, test_y, mean, std, hflip)


def check_data_folder(name: str, data_dir: str | None) -> str:
    """Checks that a data set can be found, without decoding it; returns what was found.

    Raises DataError naming the folder and what it should hold.
    """
    if name == "digits":
        return "scikit-learn's bundled 8x8 digits (no folder needed)"
    if name not in ("cifar10", "imagefolder"):
        raise DataError(f"dataset {name!r}: expected one of {', '.join(DATASETS)}")
    root = _find_root(name, data_dir)
    if name == "cifar10" and _is_torchvision_cifar(root):
        return f"torchvision's cifar-10-batches-py in {root}"
    train, classes = _list_image_folder(root / "train", root)
    test, test_classes = _list_image_folder(root / "test", root)
    if test_classes != classes:
        raise DataError(f"{root}: test/ has classes {test_classes}, train/ has {classes}")
    return f"{len(train):,} train and {len(test):,} test images in {len(classes)} classes in {root}"


def _digits() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """scikit-learn's bundled 8x8 digits (the rows `load_digits` returns), read from its CSV file:
    importing scikit-learn itself costs seconds of a search's start (scipy.stats)."""
    table = np.loadtxt(_sklearn_data_file("digits.csv.gz"), delimiter=",")  # (1797, 64 pixels + label)
    images = table[:, :-1].reshape(-1, 1, 8, 8)  # values 0..16
    x = (images * (255.0 / 16.0)).round().astype(np.uint8)  # (1797, 1, 8, 8)
    return x, table[:, -1].astype(np.int64), [str(c) for c in range(10)]


def _sklearn_data_file(name: str) -> Path:
    """A data file that ships with scikit-learn, found without importing scikit-learn."""
    import importlib.util

    package = importlib.util.find_spec("sklearn")
    if package is None or not package.submodule_search_locations:
        raise DataError("dataset 'digits' needs scikit-learn: pip install scikit-learn")
    return Path(package.submodule_search_locations[0]) / "datasets" / "data" / name


def _split(x: np.ndarray, y: np.ndarray, fraction: float, seed: int):
    """Splits off `fraction` of the rows, the same rows for the same seed."""
    order = np.random.default_rng(seed).permutation(len(y))
    n_held = max(1, int(round(len(y) * fraction))) if fraction > 0 else 0
    kept, held = order[n_held:], order[:n_held]
    return (x[kept], y[kept]), (x[held], y[held])


def _take(x: np.ndarray, y: np.ndarray, n: int, seed: int):
    if n >= len(y):
        return x, y
    rows = np.sort(np.random.default_rng(seed).permutation(len(y))[:n])
    return x[rows], y[rows]


def _find_root(name: str, data_dir: str | None) -> Path:
    candidates = [data_dir] if data_dir else [os.environ.get("TUNE_RUN_DATA_DIR"), f"data/{name}"]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    looked = ", ".join(str(c) for c in candidates if c)
    raise DataError(
        f"{name} data not found (looked in {looked}); point --data-dir (or TUNE_RUN_DATA_DIR) at a "
        f"folder with train/<class>/ and test/<class>/ image folders"
        + (" or CIFAR-10's cifar-10-batches-py" if name == "cifar10" else "")
    )


def _image_splits(name, root: Path, subset, seed, cache_dir, image_size):
    if name == "cifar10" and _is_torchvision_cifar(root):
        return _torchvision_cifar(root, subset, seed)
    train_files, classes = _list_image_folder(root / "train", root)
    test_files, test_classes = _list_image_folder(root / "test", root)
    if test_classes != classes:
        raise DataError(f"{root}: test/ has classes {test_classes}, train/ has {classes}")
    if subset is not None:
        train_files = _take_list(train_files, subset, seed)
        test_files = _take_list(test_files, max(1, subset // 5), seed)
    train = _decode_cached(train_files, cache_dir, image_size)
    test = _decode_cached(test_files, cache_dir, image_size)
    return train, test, classes


def data_shape(name: str, data_dir: str | None,
               image_size: int | None = None) -> tuple[tuple[int, int, int], int]:
    """((channels, height, width), classes) of the images a search of this data set trains on,
    without decoding more than one image (what the door probes a model with)."""
    if name == "digits":
        return (1, image_size or 8, image_size or 8), 10
    root = _find_root(name, data_dir)
    if name == "cifar10" and _is_torchvision_cifar(root):
        return (3, image_size or 32, image_size or 32), 10
    files, classes = _list_image_folder(root / "train", root)
    return tuple(read_image(files[0][0], image_size).shape), len(classes)


def _list_image_folder(folder: Path, root: Path) -> tuple[list[tuple[str, int]], list[str]]:
    if not folder.is_dir():
        raise DataError(f"{root}: no {folder.name}/ folder; expected train/<class>/ and test/<class>/")
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    if not classes:
        raise DataError(f"{folder}: no class folders; expected {folder.name}/<class>/<image>")
    files = [
        (str(p), label)
        for label, c in enumerate(classes)
        for p in sorted((folder / c).iterdir())
        if p.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not files:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders")
    return files, classes


def _take_list(files: list, n: int, seed: int) -> list:
    if n >= len(files):
        return files
    rows = np.sort(np.random.default_rng(seed).permutation(len(files))[:n])
    return [files[i] for i in rows]


def _decode_cached(files: list[tuple[str, int]], cache_dir: str | None, image_size: int | None):
    """Decodes the images once; later searches read the arrays from an .npz cache, keyed by each
    file's identity (path, size, modification time) and the image size: a changed file is decoded
    again."""
    identity = [f"{f}\t{s.st_size}\t{s.st_mtime_ns}" for f, _ in files for s in [os.stat(f)]]
    key = hashlib.sha1("\n".join([f"image_size={image_size}", *identity]).encode()).hexdigest()[:16]
    cache = Path(cache_dir or cache_root()) / f"images-{key}.npz"
    if cache.exists():
        with np.load(cache) as z:
            return z["x"], z["y"]
    x, y = _decode(files, image_size)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, x=x, y=y)
    tmp.replace(cache)
    return x, y


def _decode(files: list[tuple[str, int]],
            image_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    images = []
    for path, _ in files:
        try:
            images.append(read_image(path, image_size))  # (3, H, W) uint8
        except ImageError as e:
            raise DataError(str(e)) from None
        if images[-1].shape != images[0].shape:  # only without image_size: stop at the first
            (h0, w0), (h, w) = images[0].shape[1:], images[-1].shape[1:]
            raise DataError(f"images differ in size ({files[0][0]} is {w0}x{h0}, {path} is "
                            f"{w}x{h}); set the image_size setting (e.g. {min(h0, w0, h, w)}) to "
                            "resize them as they are decoded")
    x = np.ascontiguousarray(np.stack(images))
    y = np.array([label for _, label in files], dtype=np.int64)
    return x, y


def _is_torchvision_cifar(root: Path) -> bool:
    return (root / "cifar-10-batches-py" / "data_batch_1").exists()


def _torchvision_cifar(root: Path, subset, seed):
    from torchvision.datasets import CIFAR10

    splits = []
    for train in (True, False):
        ds = CIFAR10(str(root), train=train, download=False)
        x = np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2))  # (N, 32, 32, 3) -> (N, 3, 32, 32)
        y = np.asarray(ds.targets, dtype=np.int64)
        if subset is not None:
            x, y = _take(x, y, subset if train else max(1, subset // 5), seed)
        splits.append((x, y))
    return splits[0], splits[1], list(CIFAR10(str(root), train=False).classes)
