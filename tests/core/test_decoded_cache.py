"""The decoded cache (core/decoded_cache.py): real processes that map the same files, build at the
same time, are killed mid-build, or meet a full disk; none ever reads half a data set."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.data import DataError, load_dataset
from tests.conftest import REPO
from tests.core.test_sources import write_png_folder

# A child that loads the data set and says which file its train images are mapped from. `slow`
# seconds per decoded image make a build last long enough to be caught or overlapped.
CHILD = """
import json, os, sys, time
from core import data
slow = float(sys.argv[3])
if slow:
    read = data._read
    data._read = lambda path, size: (time.sleep(slow), read(path, size))[1]
print("loading", flush=True)
d = data.load_dataset("imagefolder", sys.argv[1], cache_dir=sys.argv[2])
maps = [line.split()[-1] for line in open("/proc/self/maps") if line.rstrip().endswith(".npy")]
print(json.dumps({"memmap": type(d.train_x).__name__, "file": str(d.train_x.filename),
                  "mapped": sorted(set(maps)), "sum": int(d.train_x.sum()) + int(d.test_x.sum()),
                  "train": len(d.train_y)}), flush=True)
"""


@pytest.fixture
def images(tmp_path) -> Path:
    root = tmp_path / "images"
    write_png_folder(root / "train", per_class=20)
    write_png_folder(root / "test", per_class=5)
    return root


def _child(images: Path, cache: Path, slow: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(images), str(cache), str(slow)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


def _answer(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])


def test_two_trial_processes_map_the_same_files(images, tmp_path):
    cache = tmp_path / "cache"
    load_dataset("imagefolder", str(images), cache_dir=str(cache))  # built once, by the driver
    first, second = _answer(_child(images, cache)), _answer(_child(images, cache))
    assert first["memmap"] == second["memmap"] == "memmap"
    assert first["file"] == second["file"] and first["file"].endswith("train_x.npy")
    assert first["file"] in first["mapped"] and first["mapped"] == second["mapped"]
    assert first["sum"] == second["sum"]


def test_two_builders_at_once_one_decodes_the_other_waits_and_reads(images, tmp_path):
    cache = tmp_path / "cache"
    procs = [_child(images, cache, slow=0.02) for _ in range(2)]
    answers = [_answer(p) for p in procs]
    assert answers[0]["sum"] == answers[1]["sum"] and answers[0]["file"] == answers[1]["file"]
    assert len(list(cache.glob("data-*/meta.json"))) == 1
    assert not list(cache.glob("*.partial"))


def test_a_build_killed_midway_is_never_read_back(images, tmp_path):
    cache = tmp_path / "cache"
    proc = _child(images, cache, slow=0.2)
    assert proc.stdout.readline().strip() == "loading"
    deadline = time.monotonic() + 60
    while not list(cache.glob("*.partial/train_x.npy")):  # decoding into its partial folder
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not list(cache.glob("data-*/meta.json"))
    whole = load_dataset("imagefolder", str(images), cache_dir=str(cache))
    fresh = load_dataset("imagefolder", str(images), cache_dir=str(tmp_path / "fresh"))
    assert np.array_equal(whole.train_x, fresh.train_x) and np.array_equal(whole.test_y, fresh.test_y)


def test_a_full_disk_is_one_line_and_leaves_nothing_half_written(images, tmp_path, monkeypatch):
    # A real full disk cannot be made here without root; the allocation the cache does first is
    # where a full disk shows, so it is made to fail as the kernel would.
    cache = tmp_path / "cache"

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(DataError, match="cannot write the decoded data set .*No space left") as e:
        load_dataset("imagefolder", str(images), cache_dir=str(cache))
    assert "\n" not in str(e.value)
    assert not list(cache.glob("data-*")) or not list(cache.glob("data-*/meta.json"))
    assert not list(cache.glob("*.partial"))
    monkeypatch.undo()
    assert len(load_dataset("imagefolder", str(images), cache_dir=str(cache)).test_y) == 10


def test_a_changed_file_is_decoded_again(images, tmp_path):
    cache = tmp_path / "cache"
    before = load_dataset("imagefolder", str(images), cache_dir=str(cache))
    target = images / "test" / "cat" / "0.png"
    from PIL import Image

    Image.new("RGB", (8, 8), (1, 2, 3)).save(target)
    after = load_dataset("imagefolder", str(images), cache_dir=str(cache))
    assert not np.array_equal(before.test_x, after.test_x)
    assert len(list(cache.glob("data-*/meta.json"))) == 2
