"""Where a data set's images come from, split by split: an ImageFolder, a CSV manifest, torchvision's
own on-disk formats, or scikit-learn's digits.

Each source gives its train and test splits, and its validation split where it has one (an
ImageFolder's `val/`, a `val_csv`): as files to decode (`Listed`) or as arrays already decoded
(`Decoded`: torchvision's formats and digits). core/data.py decodes, caches, carves what a source
lacks and builds the `Dataset`.

The torchvision formats are read from `data_dir` in the layout torchvision writes (`CIFAR10(root)`
reads `root/cifar-10-batches-py/`, `MNIST(root)` reads `root/MNIST/raw/`, `SVHN(root)` reads
`root/train_32x32.mat`); with `download`, torchvision fetches what is missing where the machine is
online.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")
TORCHVISION_FORMATS = ("cifar10", "cifar100", "mnist", "fashion_mnist", "svhn")
DATASETS = ("cifar10", "cifar100", "mnist", "fashion_mnist", "svhn", "imagefolder", "csv", "digits")
# Whether a horizontal flip keeps an image's class: not for digits and letters.
HFLIP = {"cifar10": True, "cifar100": True, "mnist": False, "fashion_mnist": True, "svhn": False,
         "imagefolder": True, "csv": True, "digits": False}
CSV_COLUMNS = ("path", "label")

Files = list[tuple[str, int]]  # (image path, class index)


class DataError(Exception):
    """Data that cannot be found or read; the message says where it looked and what to do."""


@dataclass
class Listed:
    """Image files to decode, split by split (`val` None: the source has no validation split)."""

    classes: list[str]
    train: Files
    val: Files | None
    test: Files | None


@dataclass
class Stored:
    """A torchvision data set's files in `root`: read (whole) only when its decoded cache is built,
    so a trial that maps the cache never holds the data set in its own memory."""

    name: str
    root: Path

    def files(self) -> list[Path]:
        """Every file of the format, for the cache's key (path, size, modification time)."""
        folders = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python",
                   "mnist": "MNIST/raw", "fashion_mnist": "FashionMNIST/raw"}
        if self.name in folders:
            return sorted(p for p in (self.root / folders[self.name]).iterdir() if p.is_file())
        return [self.root / f for f in LAYOUTS[self.name]]

    def read(self) -> Decoded:
        return torchvision_format(self.name, self.root, download=False)

    def shape_and_classes(self) -> tuple[tuple[int, int, int], int]:
        """Without reading the images: every image of these formats has one shape."""
        shape = (1, 28, 28) if self.name in ("mnist", "fashion_mnist") else (3, 32, 32)
        if self.name == "cifar100":
            return shape, len(_unpickle(self.root / "cifar-100-python" / "meta")["fine_label_names"])
        return shape, 10


@dataclass
class Decoded:
    """Arrays a source holds decoded already: (N, C, H, W) uint8 images and int64 labels."""

    classes: list[str]
    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]


# ---------------------------------------------------------------------------------------------------
# ImageFolder: train/<class>/*, optional val/<class>/*, test/<class>/*.


def image_folder(root: Path) -> Listed:
    train, classes = list_class_folders(root / "train", root)
    splits = {}
    for split in ("val", "test"):
        if (root / split).is_dir():
            files, found = list_class_folders(root / split, root)
            unknown = sorted(set(found) - set(classes))
            if unknown:
                raise DataError(f"{root / split}: class folder {unknown[0]!r} is not in train/ "
                                f"(train/ has {', '.join(classes)})")
            index = {c: i for i, c in enumerate(classes)}
            splits[split] = [(p, index[found[label]]) for p, label in files]
        elif split == "test":
            raise DataError(f"{root}: no test/ folder; expected train/<class>/, optionally "
                            "val/<class>/, and test/<class>/")
    return Listed(classes, train, splits.get("val"), splits["test"])


def list_class_folders(folder: Path, root: Path) -> tuple[Files, list[str]]:
    if not folder.is_dir():
        raise DataError(f"{root}: no {folder.name}/ folder; expected train/<class>/ and test/<class>/")
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    if not classes:
        raise DataError(f"{folder}: no class folders; expected {folder.name}/<class>/<image>")
    files = []
    for label, c in enumerate(classes):
        images = [p for p in sorted((folder / c).iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
        if not images and folder.name == "train":
            raise DataError(f"{folder / c}: a class folder with no images "
                            f"({', '.join(IMAGE_SUFFIXES)}); add some or remove the folder")
        files += [(str(p), label) for p in images]
    if not files:
        raise DataError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders")
    if folder.name == "train" and len(classes) < 2:
        raise DataError(f"{folder}: one class only ({classes[0]}); a classifier needs two or more")
    return files, classes


# ---------------------------------------------------------------------------------------------------
# CSV manifests: a header with `path` and `label`, then a row per image.


def csv_manifests(train_csv: str | None, val_csv: str | None, test_csv: str | None) -> Listed:
    """The images the CSV files name, paths relative to each CSV's folder, labels as class names or
    integers. Every file must exist and every val/test label be one of train's."""
    if not train_csv:
        raise DataError("dataset 'csv': settings.train_csv is not set; point it at a CSV of "
                        "path,label rows (optionally val_csv and test_csv too)")
    rows = _read_csv(train_csv, "train_csv")
    labels = sorted({label for _, label in rows}, key=_label_order)
    classes = labels
    if len(classes) < 2:
        raise DataError(f"{train_csv}: one class only ({classes[0]}); a classifier needs two or more")
    index = {c: i for i, c in enumerate(classes)}
    splits = {"train": [(p, index[label]) for p, label in rows]}
    for split, path in (("val", val_csv), ("test", test_csv)):
        if not path:
            splits[split] = None
            continue
        files = []
        for line, (image, label) in enumerate(_read_csv(path, f"{split}_csv"), start=2):
            if label not in index:
                raise DataError(f"{path}: row {line}: label {label!r} is not one of train_csv's "
                                f"classes ({', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''})")
            files.append((image, index[label]))
        splits[split] = files
    return Listed(classes, splits["train"], splits["val"], splits["test"])


def _label_order(label: str):
    """Integer labels in numeric order (2 before 10), names in alphabetical order."""
    return (0, int(label), "") if label.lstrip("-").isdigit() else (1, 0, label)


def _read_csv(path: str, field: str) -> list[tuple[str, str]]:
    file = Path(path)
    if not file.is_file():
        raise DataError(f"settings.{field}: {path}: no such file")
    with open(file, newline="") as f:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader, [])]
        if not all(c in header for c in CSV_COLUMNS):
            raise DataError(f"{path}: the header is {','.join(header) or 'empty'}; expected a first "
                            f"row naming the columns {' and '.join(CSV_COLUMNS)} (e.g. path,label)")
        at = [header.index(c) for c in CSV_COLUMNS]
        rows = []
        for line, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue
            if len(row) < len(header):
                raise DataError(f"{path}: row {line} has {len(row)} columns, the header "
                                f"{len(header)}")
            image, label = (row[i].strip() for i in at)
            image_path = Path(image) if Path(image).is_absolute() else file.parent / image
            if not image_path.is_file():
                raise DataError(f"{path}: row {line}: {image}: no such file (relative to the "
                                f"CSV's folder, {file.parent})")
            rows.append((str(image_path), label))
    if not rows:
        raise DataError(f"{path}: no rows after the header")
    return rows


# ---------------------------------------------------------------------------------------------------
# torchvision's formats: the files torchvision writes, read here (torchvision's own classes check
# each file's MD5 against the official release, so a copy re-made or trimmed would be refused);
# torchvision itself fetches them with `download`.

MNIST_CLASSES = ["0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five", "6 - six",
                 "7 - seven", "8 - eight", "9 - nine"]
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]
LAYOUTS = {
    "cifar10": ["cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/test_batch",
                "cifar-10-batches-py/batches.meta"],
    "cifar100": ["cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta"],
    "mnist": [f"MNIST/raw/{f}" for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")],
    "fashion_mnist": [f"FashionMNIST/raw/{f}" for f in (
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte")],
    "svhn": ["train_32x32.mat", "test_32x32.mat"],
}


def torchvision_format(name: str, root: Path, download: bool) -> Decoded:
    fetch_if_missing(name, root, download)
    reader = {"cifar10": _cifar10, "cifar100": _cifar100, "mnist": _mnist,
              "fashion_mnist": _mnist, "svhn": _svhn}[name]
    try:
        return reader(name, root)
    except DataError:
        raise
    except Exception as e:  # a truncated or foreign file: pickle, IDX or MAT errors
        raise DataError(f"dataset {name!r} in {root}: cannot read it in torchvision's layout "
                        f"({type(e).__name__}: {str(e)[:160]}); fetch it again") from None


def fetch_if_missing(name: str, root: Path, download: bool) -> None:
    missing = [f for f in LAYOUTS[name] if not _present(root / f)]
    if not missing:
        return
    if not download:
        raise DataError(f"dataset {name!r}: {root / missing[0]} is missing; copy {name} there in "
                        f"torchvision's layout ({', '.join(LAYOUTS[name])}), or set download: "
                        "true to let torchvision fetch it where the machine is online")
    from torchvision import datasets

    cls = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100, "mnist": datasets.MNIST,
           "fashion_mnist": datasets.FashionMNIST, "svhn": datasets.SVHN}[name]
    try:
        for split in ((dict(split="train"), dict(split="test")) if name == "svhn"
                      else (dict(train=True), dict(train=False))):
            cls(str(root), download=True, **split)
    except Exception as e:  # offline: URLError and socket errors; a failed checksum
        reason = " ".join(str(e).split())[:120]
        raise DataError(f"dataset {name!r}: download: torchvision could not fetch it "
                        f"({type(e).__name__}: {reason}); this machine may be offline: copy "
                        f"the files into {root} ({', '.join(LAYOUTS[name])})") from None


def _present(path: Path) -> bool:
    return path.is_file() or path.with_name(path.name + ".gz").is_file()


def _unpickle(path: Path) -> dict:
    import pickle

    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def _cifar_images(rows) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(rows, dtype=np.uint8).reshape(-1, 3, 32, 32))


def _cifar10(name: str, root: Path) -> Decoded:
    folder = root / "cifar-10-batches-py"
    batches = [_unpickle(p) for p in sorted(folder.glob("data_batch_*"))]
    test = _unpickle(folder / "test_batch")
    train_x = np.concatenate([_cifar_images(b["data"]) for b in batches])
    train_y = np.concatenate([np.asarray(b["labels"], dtype=np.int64) for b in batches])
    classes = list(_unpickle(folder / "batches.meta")["label_names"])
    return Decoded(classes, (train_x, train_y),
                   (_cifar_images(test["data"]), np.asarray(test["labels"], dtype=np.int64)))


def _cifar100(name: str, root: Path) -> Decoded:
    folder = root / "cifar-100-python"
    train, test = _unpickle(folder / "train"), _unpickle(folder / "test")
    classes = list(_unpickle(folder / "meta")["fine_label_names"])
    return Decoded(classes,
                   (_cifar_images(train["data"]), np.asarray(train["fine_labels"], dtype=np.int64)),
                   (_cifar_images(test["data"]), np.asarray(test["fine_labels"], dtype=np.int64)))


def _idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format: big-endian dimensions, then uint8 data), gzipped or not."""
    import gzip

    opener = gzip.open if not path.is_file() else open
    with opener(path if path.is_file() else path.with_name(path.name + ".gz"), "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an IDX file of unsigned bytes (MNIST's format)")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path}: truncated: {data.size} bytes of data for dimensions {dims}")
    return data.reshape(dims)


def _mnist(name: str, root: Path) -> Decoded:
    folder = root / ("MNIST" if name == "mnist" else "FashionMNIST") / "raw"
    splits = []
    for prefix in ("train", "t10k"):
        x = _idx(folder / f"{prefix}-images-idx3-ubyte")[:, None]  # (N, 1, 28, 28)
        y = _idx(folder / f"{prefix}-labels-idx1-ubyte").astype(np.int64)
        if len(x) != len(y):
            raise DataError(f"{folder}: {prefix} has {len(x)} images and {len(y)} labels")
        splits.append((np.ascontiguousarray(x), y))
    return Decoded(MNIST_CLASSES if name == "mnist" else FASHION_CLASSES, *splits)


def _svhn(name: str, root: Path) -> Decoded:
    from scipy.io import loadmat

    splits = []
    for split in ("train", "test"):
        mat = loadmat(str(root / f"{split}_32x32.mat"))
        x = np.ascontiguousarray(mat["X"].transpose(3, 2, 0, 1), dtype=np.uint8)  # (N, 3, 32, 32)
        y = mat["y"].astype(np.int64).reshape(-1)
        splits.append((x, np.where(y == 10, 0, y)))  # SVHN labels the digit 0 as 10
    return Decoded([str(d) for d in range(10)], *splits)


# ---------------------------------------------------------------------------------------------------
# scikit-learn's digits.


def digits() -> tuple[np.ndarray, np.ndarray, list[str]]:
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
