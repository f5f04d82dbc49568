"""Every data source with small data written here in its real layout (torchvision's files as
torchvision writes them, CSV manifests, an ImageFolder with its own val/), the validation split taken
from the data where it has one, and bad data refused in one line naming the file."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data import DataError, check_data_folder, data_shape, load_dataset

RNG = np.random.default_rng(0)


def _images(n: int, channels: int, size: int) -> np.ndarray:
    return RNG.integers(0, 256, (n, channels, size, size), dtype=np.uint8)


def write_cifar(root: Path, hundred: bool = False, n_train: int = 40, n_test: int = 10) -> Path:
    """CIFAR-10's cifar-10-batches-py/ (5 train batches) or CIFAR-100's cifar-100-python/."""
    def dump(path: Path, obj: dict) -> None:
        path.write_bytes(pickle.dumps(obj))

    if hundred:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True)
        for split, n in (("train", n_train), ("test", n_test)):
            dump(folder / split, {"data": _images(n, 3, 32).reshape(n, -1),
                                  "fine_labels": list(np.arange(n) % 4)})
        dump(folder / "meta", {"fine_label_names": ["apple", "bear", "cloud", "dolphin"]})
        return root
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        n = n_train // 5
        dump(folder / f"data_batch_{i}", {"data": _images(n, 3, 32).reshape(n, -1),
                                          "labels": list(np.arange(n) % 10)})
    dump(folder / "test_batch", {"data": _images(n_test, 3, 32).reshape(n_test, -1),
                                 "labels": list(np.arange(n_test) % 10)})
    dump(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
    return root


def _idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, folder: str = "MNIST", n_train: int = 30, n_test: int = 10) -> Path:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _idx(raw / f"{prefix}-images-idx3-ubyte", _images(n, 1, 28)[:, 0])
        _idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    return root


def write_svhn(root: Path, n_train: int = 30, n_test: int = 10) -> Path:
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        x = _images(n, 3, 32).transpose(2, 3, 1, 0)  # SVHN's (32, 32, 3, N)
        savemat(str(root / f"{split}_32x32.mat"), {"X": x, "y": (np.arange(n) % 10 + 1)[:, None]})
    return root


def write_png_folder(root: Path, classes=("cat", "dog"), per_class=6, size=8) -> list[Path]:
    paths = []
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            path = root / c / f"{i}.png"
            Image.fromarray(_images(1, 3, size)[0].transpose(1, 2, 0)).save(path)
            paths.append(path)
    return paths


def write_csv(path: Path, rows, header=("path", "label")) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture
def cache(tmp_path) -> str:
    return str(tmp_path / "cache")


# ---------------------------------------------------------------------------------------------------
# Each source.


@pytest.mark.parametrize("name,write,shape,classes", [
    ("cifar10", write_cifar, (3, 32, 32), 10),
    ("cifar100", lambda r: write_cifar(r, hundred=True), (3, 32, 32), 4),
    ("mnist", write_mnist, (1, 28, 28), 10),
    ("fashion_mnist", lambda r: write_mnist(r, "FashionMNIST"), (1, 28, 28), 10),
    ("svhn", write_svhn, (3, 32, 32), 10),
])
def test_torchvision_formats_are_read_from_their_own_layout(name, write, shape, classes, tmp_path,
                                                           cache):
    root = write(tmp_path / name)
    assert "torchvision's" in check_data_folder(name, str(root))
    assert data_shape(name, str(root)) == (shape, classes)
    data = load_dataset(name, str(root), val_fraction=0.2, cache_dir=cache)
    assert data.train_x.shape[1:] == shape and data.train_x.dtype == np.uint8
    assert len(data.classes) == classes
    total = len(data.train_y) + len(data.val_y)
    assert total == {"cifar10": 40, "cifar100": 40}.get(name, 30)
    assert 0 <= data.train_y.min() and data.train_y.max() < classes
    assert isinstance(data.train_x, np.memmap)  # mapped from the decoded cache
    assert data.hflip == (name not in ("mnist", "svhn"))


def test_svhn_labels_its_zeros_as_zero(tmp_path, cache):
    data = load_dataset("svhn", str(write_svhn(tmp_path / "svhn")), val_fraction=0.0,
                        cache_dir=cache)
    assert sorted(set(data.test_y.tolist())) == list(range(10))  # 10 in the .mat file is digit 0


def test_a_missing_torchvision_data_set_says_how_to_get_it(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"MNIST/raw/train-images-idx3-ubyte is missing.*"
                                        r"download: true"):
        check_data_folder("mnist", str(tmp_path / "empty"))


def test_offline_download_is_one_line_saying_so(tmp_path, monkeypatch):
    import socket

    def offline(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", offline)
    monkeypatch.setattr(socket.socket, "connect", offline)
    with pytest.raises(DataError, match="download: torchvision could not fetch it") as e:
        check_data_folder("mnist", str(tmp_path / "fetched"), download=True)
    assert "\n" not in str(e.value)


def test_a_truncated_idx_file_is_named(tmp_path, cache):
    root = write_mnist(tmp_path / "m")
    images = root / "MNIST/raw/train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(DataError, match="train-images-idx3-ubyte: truncated"):
        load_dataset("mnist", str(root), cache_dir=cache)


def test_an_image_folders_own_val_split_is_used(tmp_path, cache):
    root = tmp_path / "images"
    write_png_folder(root / "train")
    val = write_png_folder(root / "val", per_class=2)
    write_png_folder(root / "test", per_class=3)
    data = load_dataset("imagefolder", str(root), val_fraction=0.5, cache_dir=cache)
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (12, 4, 6)
    first_val = np.asarray(Image.open(val[0])).transpose(2, 0, 1)
    assert np.array_equal(data.val_x[0], first_val)
    assert "4 validation" in check_data_folder("imagefolder", str(root))


def test_without_a_val_split_the_carve_is_stratified(tmp_path, cache):
    root = tmp_path / "images"
    write_png_folder(root / "train", classes=("a", "b", "c"), per_class=10)
    write_png_folder(root / "test", classes=("a", "b", "c"), per_class=1)
    data = load_dataset("imagefolder", str(root), val_fraction=0.2, cache_dir=cache)
    assert np.bincount(data.val_y).tolist() == [2, 2, 2]


def test_csv_manifests_with_names_and_integers(tmp_path, cache):
    images = write_png_folder(tmp_path / "pics", classes=("x", "y"), per_class=6)
    rows = [(str(p.relative_to(tmp_path)), p.parent.name) for p in images]
    train = write_csv(tmp_path / "train.csv", rows[:4] + rows[6:10])
    val = write_csv(tmp_path / "val.csv", [rows[4], rows[10]])
    test = write_csv(tmp_path / "test.csv", [rows[5], rows[11]])
    data = load_dataset("csv", None, train_csv=str(train), val_csv=str(val), test_csv=str(test),
                        cache_dir=cache)
    assert data.classes == ["x", "y"]
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (8, 2, 2)
    assert data.val_y.tolist() == [0, 1]
    numbered = write_csv(tmp_path / "numbered.csv",
                         [(str(p), 10 if p.parent.name == "x" else 2) for p in images])
    data = load_dataset("csv", None, train_csv=str(numbered), cache_dir=cache)
    assert data.classes == ["2", "10"]  # numeric order
    assert len(data.train_y) + len(data.val_y) + len(data.test_y) == 12  # val and test carved


# ---------------------------------------------------------------------------------------------------
# Bad data: refused in one line naming the file.


def _folder(tmp_path) -> Path:
    root = tmp_path / "images"
    write_png_folder(root / "train")
    write_png_folder(root / "test", per_class=1)
    return root


def test_an_unreadable_image_is_named(tmp_path, cache):
    root = _folder(tmp_path)
    (root / "train/cat/3.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(DataError, match=r"train/cat/3.png: not a readable image"):
        load_dataset("imagefolder", str(root), cache_dir=cache)
    assert not list(Path(cache).glob("data-*/meta.json"))  # no cache of half a data set


def test_an_empty_class_folder_and_a_single_class_are_refused(tmp_path):
    root = _folder(tmp_path)
    (root / "train/bird").mkdir()
    with pytest.raises(DataError, match="train/bird: a class folder with no images"):
        check_data_folder("imagefolder", str(root))
    (root / "train/bird").rmdir()
    for p in (root / "train/dog").iterdir():
        p.unlink()
    (root / "train/dog").rmdir()
    with pytest.raises(DataError, match="one class only"):
        check_data_folder("imagefolder", str(root))


@pytest.mark.parametrize("problem,fragment", [
    ("missing", "row 3: pics/x/none.png: no such file"),
    ("label", "row 2: label 'z' is not one of train_csv's classes"),
    ("header", "the header is file,class; expected a first row naming the columns path and label"),
])
def test_bad_csv_rows_are_named(problem, fragment, tmp_path):
    images = write_png_folder(tmp_path / "pics", classes=("x", "y"), per_class=2)
    rows = [(str(p.relative_to(tmp_path)), p.parent.name) for p in images]
    train = write_csv(tmp_path / "train.csv", rows)
    val = None
    if problem == "missing":
        train = write_csv(tmp_path / "train.csv", [rows[0], ("pics/x/none.png", "x"), *rows[1:]])
    elif problem == "label":
        val = write_csv(tmp_path / "val.csv", [(rows[0][0], "z")])
    else:
        train = write_csv(tmp_path / "train.csv", rows, header=("file", "class"))
    with pytest.raises(DataError, match=fragment):
        check_data_folder("csv", None, train_csv=str(train), val_csv=str(val) if val else None)


def test_16_bit_and_cmyk_images_are_read_as_8_bit_rgb(tmp_path, cache):
    root = _folder(tmp_path)
    grey16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    Image.fromarray(grey16).save(root / "train/cat/16bit.png")  # PIL: mode I;16
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(root / "train/dog/cmyk.jpg")
    data = load_dataset("imagefolder", str(root), val_fraction=0.0, cache_dir=cache)
    assert data.train_x.shape[1:] == (3, 8, 8)
    decoded = {bytes(x): x for x in data.train_x}
    brightest = max(decoded.values(), key=lambda x: int(x[0].max()) - int(x[0].min()))
    assert brightest[0].max() > 200 and brightest[0].min() < 10  # scaled, not clipped at 255


def test_a_file_that_vanishes_before_decoding_is_named(tmp_path, cache, monkeypatch):
    from core import data as data_module

    root = _folder(tmp_path)
    original = data_module._read

    def vanish_first(path, size):
        if path.endswith("cat/0.png") and Path(path).exists():
            Path(path).unlink()
        return original(path, size)

    monkeypatch.setattr(data_module, "_read", vanish_first)
    with pytest.raises(DataError, match="cat/0.png: the file was there when the data set was listed"):
        load_dataset("imagefolder", str(root), cache_dir=cache)
