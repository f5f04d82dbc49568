"""The decoded cache: a data set's splits as .npy files on this node's disk, mapped, never copied.

One folder per data set and settings (`data-<key>/`), one file per split and array (`train_x.npy`,
`train_y.npy`, `val_x.npy`, ...) and `meta.json` (classes, mean, std). Every process opens the
arrays with `np.load(mmap_mode="r")`: the trials on a node share one copy in the page cache, and
nothing is read until a batch needs it.

A folder is built under a temporary name and renamed into place whole, so no reader ever sees half
of one (a full disk, a killed build). Builders of the same folder at once take turns on a lock
file: one decodes, the others wait and then read what it wrote.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from core.cache import cache_root
from core.sources import DataError

FORMAT = "npy-1"  # in the key: a change of layout is a new folder, never a misread old one
ARRAYS = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")
META = "meta.json"


def folder(cache_dir: str | None, key: str) -> Path:
    return Path(cache_dir or cache_root()) / f"data-{key}"


def load_or_build(target: Path, build: Callable[[Path], None]) -> tuple[list[np.ndarray], dict]:
    """The mapped arrays (in ARRAYS order) and meta of `target`, built first by `build(folder)` into
    a temporary folder where they are not there yet."""
    if not _complete(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target.with_name(target.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another search building it: wait, then read it
            if not _complete(target):
                _build(target, build)
    return [np.load(target / f"{name}.npy", mmap_mode="r") for name in ARRAYS], \
        json.loads((target / META).read_text())


def _complete(target: Path) -> bool:
    return (target / META).is_file()  # written last, inside the folder renamed into place


def _build(target: Path, build: Callable[[Path], None]) -> None:
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        build(partial)
        if target.exists():  # a broken folder of an older build (no meta): replaced
            shutil.rmtree(target)
        os.rename(partial, target)
    except OSError as e:
        shutil.rmtree(partial, ignore_errors=True)
        raise DataError(f"cannot write the decoded data set to {target.parent} ({e.strerror or e}); "
                        "free space there or point TUNE_RUN_CACHE at a disk with room") from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def new_array(into: Path, name: str, shape: tuple[int, ...], dtype) -> np.memmap:
    """A new .npy file of `shape` in `into`, mapped for writing. Its blocks are allocated first: a
    full disk is an OSError here, not a SIGBUS when a mapped page is written."""
    path = into / f"{name}.npy"
    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    with open(path, "rb+") as f:
        os.posix_fallocate(f.fileno(), 0, path.stat().st_size)
    return array


def save_array(into: Path, name: str, array: np.ndarray) -> None:
    np.save(into / f"{name}.npy", array)


def write_meta(into: Path, meta: dict) -> None:
    """Written last: its presence says the folder is whole. The arrays reach the disk first."""
    for name in ARRAYS:
        with open(into / f"{name}.npy", "rb+") as f:
            os.fsync(f.fileno())
    (into / META).write_text(json.dumps(meta))
