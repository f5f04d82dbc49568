"""Image data sets as uint8 arrays, decoded once per machine and mapped by every trial.

A `Dataset` holds train / val / test splits as (N, C, H, W) uint8 arrays and int64 labels. The
sources (core/sources.py) say which images each split has; this module takes the subset, carves a
stratified validation split where the source has none, decodes, and keeps the result in the decoded
cache (core/decoded_cache.py): one .npy file per split and array on the node's local disk, which
every process maps read-only, so the page cache holds one copy per node however many trials read it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core import decoded_cache
from core.images import ImageError, fit_array, read_image
from core.sources import (
    DATASETS,
    HFLIP,
    IMAGE_SUFFIXES,
    LAYOUTS,
    TORCHVISION_FORMATS,
    DataError,
    Decoded,
    Files,
    Listed,
    Stored,
    csv_manifests,
    digits,
    fetch_if_missing,
    image_folder,
)

__all__ = ["DATASETS", "IMAGE_SUFFIXES", "DataError", "Dataset", "load_dataset",
           "check_data_folder", "data_shape", "source_of"]


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
    *,
    train_csv: str | None = None,
    val_csv: str | None = None,
    test_csv: str | None = None,
    download: bool = False,
) -> Dataset:
    """Loads a data set, with its own validation split where it has one (an ImageFolder's val/,
    a val_csv), else one carved from train with a fixed seed, stratified by class.

    `subset` keeps that many train images (a random, seeded choice) and a proportional share of the
    validation and test images, for CPU-sized runs. `image_size` resizes every image once, as it is
    decoded (shorter side, then a centre crop: core/images.py); None keeps the data's own size,
    which all images must then share. The splits are kept in `cache_dir` (by default the cache
    folder, core/cache.py) and come back memory-mapped.
    """
    source = source_of(name, data_dir, train_csv, val_csv, test_csv, download)
    key = _key(name, source, val_fraction, subset, seed, image_size)
    folder = decoded_cache.folder(cache_dir, key)

    def build(into: Path) -> None:
        if isinstance(source, Listed):
            _write_listed(source, into, val_fraction, subset, seed, image_size)
        else:
            decoded = source.read() if isinstance(source, Stored) else source
            _write_decoded(name, decoded, into, val_fraction, subset, seed, image_size)

    arrays, meta = decoded_cache.load_or_build(folder, build)
    return Dataset(name, meta["classes"], *arrays, tuple(meta["mean"]), tuple(meta["std"]),
                   HFLIP[name])


def source_of(name: str, data_dir: str | None, train_csv: str | None = None,
              val_csv: str | None = None, test_csv: str | None = None,
              download: bool = False) -> Listed | Stored | Decoded:
    """The splits of data set `name`: files to decode, a torchvision data set's files (read when
    the cache is built), or arrays already decoded."""
    if name == "digits":
        x, y, classes = digits()
        train, test = _stratified_split(y, 0.2, 1)  # a fixed test split of its own
        return Decoded(classes, (x[train], y[train]), (x[test], y[test]))
    if name == "csv":
        return csv_manifests(train_csv, val_csv, test_csv)
    if name not in DATASETS:
        raise DataError(f"dataset {name!r}: expected one of {', '.join(DATASETS)}")
    root = _find_root(name, data_dir, download)
    if _is_image_folder(name, root):
        return image_folder(root)
    fetch_if_missing(name, root, download)
    return Stored(name, root)


def _is_image_folder(name: str, root: Path) -> bool:
    """imagefolder, or CIFAR-10 copied as one (train/<class>/*.jpg) rather than torchvision's."""
    return name == "imagefolder" or (name == "cifar10" and (root / "train").is_dir())


def check_data_folder(name: str, data_dir: str | None, train_csv: str | None = None,
                      val_csv: str | None = None, test_csv: str | None = None,
                      download: bool = False) -> str:
    """Checks that a data set can be found and read, without decoding its images (a torchvision
    format is fetched here with `download`); returns what was found. Raises DataError naming the
    file or folder and what it should hold."""
    if name == "digits":
        return "scikit-learn's bundled 8x8 digits (no folder needed)"
    source = source_of(name, data_dir, train_csv, val_csv, test_csv, download)
    if isinstance(source, Stored):  # its files are there (fetched first with `download`)
        return f"torchvision's {name} in {source.root} ({', '.join(LAYOUTS[name][:2])}, ...)"
    where = "the CSV files" if name == "csv" else str(_find_root(name, data_dir, download))
    val = f", {len(source.val):,} validation" if source.val is not None else ""
    test = f" and {len(source.test):,} test" if source.test is not None else ""
    return (f"{len(source.train):,} train{val}{test} images in {len(source.classes)} classes "
            f"in {where}")


def data_shape(name: str, data_dir: str | None, image_size: int | None = None,
               train_csv: str | None = None, download: bool = False,
               ) -> tuple[tuple[int, int, int], int]:
    """((channels, height, width), classes) of the images a search of this data set trains on,
    without decoding more than one image (what the door probes a model with)."""
    source = source_of(name, data_dir, train_csv, download=download)
    if isinstance(source, Stored):
        (c, h, w), classes = source.shape_and_classes()
        return (c, image_size or h, image_size or w), classes
    if isinstance(source, Decoded):
        c, h, w = source.train[0].shape[1:]
        return (c, image_size or h, image_size or w), len(source.classes)
    return tuple(read_image(source.train[0][0], image_size).shape), len(source.classes)


# ---------------------------------------------------------------------------------------------------
# Splits.


def _stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept rows, held rows), sorted: `fraction` of each class held out, the same rows for the
    same seed; at least one row held where fraction > 0."""
    if fraction <= 0:
        return np.arange(len(y)), np.arange(0)
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        rng.shuffle(rows)
        held.append(rows[:int(round(len(rows) * fraction))])
    held = np.concatenate(held) if held else np.arange(0)
    if len(held) == 0 and len(y) > 1:
        held = rng.permutation(len(y))[:1]
    held = np.sort(held)
    return np.setdiff1d(np.arange(len(y)), held), held


def _take_rows(n_rows: int, n: int | None, seed: int) -> np.ndarray:
    """A seeded random choice of `n` of `n_rows` rows, in order (all of them when n is None)."""
    if n is None or n >= n_rows:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng(seed).permutation(n_rows)[:n])


def _take_list(files: list, n: int, seed: int) -> list:
    return [files[i] for i in _take_rows(len(files), n, seed)]


def _split_size(source_train: int, own: int, subset: int) -> int:
    """How many images of a split of `own` to keep when train keeps `subset` of `source_train`."""
    return own if subset >= source_train else max(1, round(own * subset / source_train))


def _write_listed(source: Listed, into: Path, val_fraction: float, subset: int | None, seed: int,
                  image_size: int | None) -> None:
    train = _take_list(source.train, subset, seed) if subset else source.train
    labels = np.array([label for _, label in train], dtype=np.int64)
    val, test = source.val, source.test
    if val is None:
        kept, held = _stratified_split(labels, val_fraction, seed)
        train, val = [train[i] for i in kept], [train[i] for i in held]
    elif subset:
        val = _take_list(val, _split_size(len(source.train), len(val), subset), seed)
    if test is None:  # a CSV data set without test_csv: a test split of train's too
        labels = np.array([label for _, label in train], dtype=np.int64)
        kept, held = _stratified_split(labels, val_fraction, seed + 1)
        train, test = [train[i] for i in kept], [train[i] for i in held]
    elif subset:
        test = _take_list(test, max(1, subset // 5), seed)
    shape = None
    for split, files in (("train", train), ("val", val), ("test", test)):
        shape = _decode_into(files, into, split, image_size, shape)
    mean, std = _channel_stats(np.load(into / "train_x.npy", mmap_mode="r"))
    decoded_cache.write_meta(into, {"classes": source.classes, "mean": mean, "std": std})


def _write_decoded(name: str, source: Decoded, into: Path, val_fraction: float,
                   subset: int | None, seed: int, image_size: int | None) -> None:
    (x, y), (test_x, test_y) = source.train, source.test
    if subset is not None:
        rows = _take_rows(len(y), subset, seed)
        x, y = x[rows], y[rows]
        if name != "digits":  # its 359 test images are few already: kept whole
            rows = _take_rows(len(test_y), max(1, subset // 5), seed)
            test_x, test_y = test_x[rows], test_y[rows]
    if image_size is not None:
        x, test_x = fit_array(x, image_size), fit_array(test_x, image_size)
    kept, held = _stratified_split(y, val_fraction, seed)
    for split, (sx, sy) in (("train", (x[kept], y[kept])), ("val", (x[held], y[held])),
                            ("test", (test_x, test_y))):
        decoded_cache.save_array(into, f"{split}_x", np.ascontiguousarray(sx))
        decoded_cache.save_array(into, f"{split}_y", sy.astype(np.int64))
    mean, std = _channel_stats(x[kept])
    decoded_cache.write_meta(into, {"classes": source.classes, "mean": mean, "std": std})


def _decode_into(files: Files, into: Path, split: str, image_size: int | None,
                 shape: tuple[int, ...] | None) -> tuple[int, ...]:
    """Decodes `files` one by one straight into `<split>_x.npy` (never the whole split in
    memory); every image must have `shape` (C, H, W), that of the first image of train."""
    if shape is None:
        shape = _read(files[0][0], image_size).shape
    images = decoded_cache.new_array(into, f"{split}_x", (len(files), *shape), np.uint8)
    first = files[0][0] if files else ""
    for i, (path, _) in enumerate(files):
        image = _read(path, image_size)
        if image.shape != shape:  # only without image_size
            (h0, w0), (h, w) = shape[1:], image.shape[1:]
            raise DataError(f"images differ in size ({first} is {w0}x{h0}, {path} is {w}x{h}); "
                            f"set the image_size setting (e.g. {min(h0, w0, h, w)}) to resize "
                            "them as they are decoded")
        images[i] = image
    images.flush()
    del images
    decoded_cache.save_array(into, f"{split}_y",
                             np.array([label for _, label in files], dtype=np.int64))
    return shape


def _decode(files: Files, image_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`files` decoded in memory (for small sets made by hand: benchmarks/make_gpu_subset.py)."""
    x = np.stack([_read(path, image_size) for path, _ in files])
    return x, np.array([label for _, label in files], dtype=np.int64)


def _read(path: str, image_size: int | None) -> np.ndarray:
    try:
        return read_image(path, image_size)  # (3, H, W) uint8
    except ImageError as e:
        if not Path(path).exists():
            raise DataError(f"{path}: the file was there when the data set was listed and is "
                            "gone now; run the search again to list the data set again") from None
        raise DataError(str(e)) from None


def _channel_stats(x: np.ndarray, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std on the 0..1 scale, in chunks (x may be a mapped file)."""
    total = np.zeros(x.shape[1])
    squares = np.zeros(x.shape[1])
    count = 0
    for start in range(0, len(x), chunk):
        part = np.asarray(x[start:start + chunk], dtype=np.float64)
        total += part.sum(axis=(0, 2, 3))
        squares += (part ** 2).sum(axis=(0, 2, 3))
        count += part.shape[0] * part.shape[2] * part.shape[3]
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(squares / max(count, 1) - mean ** 2, 0))
    return [float(m / 255.0) for m in mean], [float(s / 255.0 + 1e-6) for s in std]


# ---------------------------------------------------------------------------------------------------
# Finding the data and keying its cache.


def _find_root(name: str, data_dir: str | None, download: bool = False) -> Path:
    candidates = [data_dir] if data_dir else [os.environ.get("TUNE_RUN_DATA_DIR"), f"data/{name}"]
    for c in candidates:
        if c and Path(c).is_dir():
            return Path(c)
    if download and name in TORCHVISION_FORMATS:
        root = Path(next(c for c in candidates if c))
        root.mkdir(parents=True, exist_ok=True)
        return root
    looked = ", ".join(str(c) for c in candidates if c)
    if name in TORCHVISION_FORMATS:
        what = ("train/<class>/ and test/<class>/ image folders, or " if name == "cifar10" else "")
        hint = f"{what}torchvision's {name} files (or set download: true where online)"
    else:
        hint = "train/<class>/ (optionally val/<class>/) and test/<class>/ image folders"
    raise DataError(f"{name} data not found (looked in {looked}); point --data-dir (or "
                    f"TUNE_RUN_DATA_DIR) at a folder with {hint}")


def _key(name: str, source: Listed | Stored | Decoded, val_fraction: float, subset: int | None, seed: int,
         image_size: int | None) -> str:
    """What the decoded splits depend on: every listed file's identity (path, size, modification
    time: a changed file is decoded again), or the decoded arrays' digest, and the settings."""
    digest = hashlib.sha1(f"{name}\t{val_fraction}\t{subset}\t{seed}\t{image_size}\t"
                          f"{decoded_cache.FORMAT}".encode())
    if isinstance(source, Listed):
        digest.update("\t".join(source.classes).encode())
        for split, files in (("train", source.train), ("val", source.val), ("test", source.test)):
            digest.update(f"\n{split}:{files is not None}".encode())
            for path, label in files or ():
                try:
                    s = os.stat(path)
                except FileNotFoundError:
                    raise DataError(f"{path}: listed but gone; list the data set again") from None
                digest.update(f"\n{path}\t{label}\t{s.st_size}\t{s.st_mtime_ns}".encode())
    elif isinstance(source, Stored):
        for path in source.files():
            s = path.stat()
            digest.update(f"\n{path}\t{s.st_size}\t{s.st_mtime_ns}".encode())
    else:
        for array in (*source.train, *source.test):
            digest.update(f"{array.shape}{array.dtype}".encode())
            digest.update(hashlib.sha1(np.ascontiguousarray(array).data).digest())
    return digest.hexdigest()[:20]
