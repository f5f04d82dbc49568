"""Tests of core/data.py: data sets as uint8 arrays with train / val / test splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data import DATASETS, DataError, load_dataset

COLOURS = {"cat": (220, 10, 10), "dog": (10, 10, 220)}  # sorted: cat = 0, dog = 1


def _rows(x: np.ndarray, y: np.ndarray) -> set[tuple[bytes, int]]:
    return {(image.tobytes(), int(label)) for image, label in zip(x, y)}


def _write_folder(root: Path, train_per_class=5, test_per_class=2, size=6, mode="RGB") -> Path:
    """train/<class>/*.png and test/<class>/*.png: each image in its class colour, numbered by one
    pixel so that images are told apart."""
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for c, colour in COLOURS.items():
            folder = root / split / c
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = np.empty((size, size, 3), dtype=np.uint8)
                pixels[:] = colour
                pixels[0, 0, 1] = i  # the green of one pixel numbers the image
                image = Image.fromarray(pixels)
                (image.convert("L") if mode == "L" else image).save(folder / f"{i}.png")
            (folder / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", None)


def test_digits_shapes_and_types(digits):
    for x, y in ((digits.train_x, digits.train_y), (digits.val_x, digits.val_y),
                 (digits.test_x, digits.test_y)):
        assert x.dtype == np.uint8 and x.shape[1:] == (1, 8, 8)
        assert y.dtype == np.int64 and y.shape == (len(x),)
        assert y.min() >= 0 and y.max() <= 9
    assert digits.classes == [str(c) for c in range(10)]
    assert (digits.num_classes, digits.in_channels, digits.image_size) == (10, 1, 8)
    assert digits.hflip is False  # a flipped 2 is not a 2
    assert digits.train_x.max() == 255  # 0..16 scaled to 0..255


def test_digits_splits_partition_the_data(digits):
    # 1797 images, no two alike: 20 % test, then 10 % of the rest for validation.
    sizes = (len(digits.train_y), len(digits.val_y), len(digits.test_y))
    assert sum(sizes) == 1797
    assert sizes == (1295, 143, 359)  # 20 % and 10 % of each class
    train = _rows(digits.train_x, digits.train_y)
    val = _rows(digits.val_x, digits.val_y)
    test = _rows(digits.test_x, digits.test_y)
    assert len(train) + len(val) + len(test) == 1797  # no image twice within a split
    assert not train & val and not train & test and not val & test


def test_digits_mean_and_std_come_from_train(digits):
    assert digits.mean[0] == pytest.approx(digits.train_x.mean() / 255, rel=1e-6)
    assert digits.std[0] == pytest.approx(digits.train_x.std() / 255, rel=1e-4)


def test_same_seed_same_split(digits):
    again = load_dataset("digits", None, seed=0)
    assert np.array_equal(again.val_x, digits.val_x) and np.array_equal(again.test_y, digits.test_y)
    other = load_dataset("digits", None, seed=1)
    assert not np.array_equal(other.val_x, digits.val_x)


def test_digits_subset_and_val_fraction():
    data = load_dataset("digits", None, val_fraction=0.25, subset=200)
    assert (len(data.train_y), len(data.val_y)) == (152, 48)  # a quarter of each class
    assert len(data.test_y) == 359  # the test split is kept whole


def test_image_folder(tmp_path):
    root = _write_folder(tmp_path / "images")
    data = load_dataset("imagefolder", str(root), val_fraction=0.2,
                        cache_dir=str(tmp_path / "cache"))
    assert data.classes == ["cat", "dog"]
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (8, 2, 4)
    splits = ((data.train_x, data.train_y), (data.val_x, data.val_y), (data.test_x, data.test_y))
    for x, y in splits:
        assert x.dtype == np.uint8 and x.shape[1:] == (3, 6, 6)
        # Each label is its folder's: red images are cats, blue ones dogs.
        assert np.array_equal(y, (x[:, 2, 1, 1] > x[:, 0, 1, 1]).astype(np.int64))
    # Every train image once, across train and val; the .txt files are skipped.
    numbers = np.concatenate([data.train_x[:, 1, 0, 0], data.val_x[:, 1, 0, 0]])
    labels = np.concatenate([data.train_y, data.val_y])
    expected = [(c, i) for c in (0, 1) for i in range(5)]
    assert sorted(zip(labels.tolist(), numbers.tolist())) == expected
    assert data.hflip is True and data.in_channels == 3 and data.image_size == 6


def test_image_folder_grayscale_becomes_rgb(tmp_path):
    root = _write_folder(tmp_path / "images", mode="L")
    data = load_dataset("imagefolder", str(root), cache_dir=str(tmp_path / "cache"))
    assert data.test_x.shape == (4, 3, 6, 6)
    assert np.array_equal(data.test_x[:, 0], data.test_x[:, 2])  # grey: R == B


def test_image_folder_cache_is_used(tmp_path):
    root = _write_folder(tmp_path / "images")
    cache = tmp_path / "cache"
    first = load_dataset("imagefolder", str(root), cache_dir=str(cache))
    assert len(list(cache.glob("data-*/train_x.npy"))) == 1  # one folder, a file per split and array
    second = load_dataset("imagefolder", str(root), cache_dir=str(cache))
    assert np.array_equal(first.train_x, second.train_x)
    assert np.array_equal(first.test_y, second.test_y)


def test_tune_run_cache_moves_the_image_cache(tmp_path, monkeypatch):
    # The decoded images go where the S3 copies go (core/cache.py), not always to ~/.cache.
    root = _write_folder(tmp_path / "images")
    monkeypatch.setenv("TUNE_RUN_CACHE", str(tmp_path / "moved"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    load_dataset("imagefolder", str(root))
    assert len(list((tmp_path / "moved").glob("data-*/meta.json"))) == 1
    assert not (tmp_path / "home").exists()


def test_missing_folder_names_where_it_looked(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="not found") as e:
        load_dataset("imagefolder", str(missing), cache_dir=str(tmp_path))
    assert str(missing) in str(e.value)


def test_train_without_class_folders(tmp_path):
    (tmp_path / "data" / "train").mkdir(parents=True)
    (tmp_path / "data" / "test" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="no class folders") as e:
        load_dataset("imagefolder", str(tmp_path / "data"), cache_dir=str(tmp_path))
    assert str(tmp_path / "data" / "train") in str(e.value)


def test_missing_test_folder(tmp_path):
    root = _write_folder(tmp_path / "images")
    for f in (root / "test").rglob("*"):
        if f.is_file():
            f.unlink()
    for d in sorted((root / "test").iterdir()):
        d.rmdir()
    (root / "test").rmdir()
    with pytest.raises(DataError, match="no test/ folder"):
        load_dataset("imagefolder", str(root), cache_dir=str(tmp_path))


def test_test_classes_must_match_train(tmp_path):
    root = _write_folder(tmp_path / "images")
    (root / "test" / "bird").mkdir()
    with pytest.raises(DataError, match="bird"):
        load_dataset("imagefolder", str(root), cache_dir=str(tmp_path))


def test_class_folders_without_images(tmp_path):
    for split in ("train", "test"):
        (tmp_path / "data" / split / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        load_dataset("imagefolder", str(tmp_path / "data"), cache_dir=str(tmp_path))


def test_images_of_different_sizes_need_an_image_size(tmp_path):
    root = _write_folder(tmp_path / "images")
    Image.new("RGB", (7, 7)).save(root / "train" / "cat" / "big.png")
    with pytest.raises(DataError, match="differ in size.*big.png is 7x7.*set the image_size"):
        load_dataset("imagefolder", str(root), cache_dir=str(tmp_path))


def test_images_of_any_size_and_mode_are_resized_once_as_decoded(tmp_path):
    root = _write_folder(tmp_path / "images")
    folder = root / "train" / "cat"
    Image.new("RGB", (40, 20), COLOURS["cat"]).save(folder / "wide.jpg")
    Image.new("L", (9, 30), 128).save(folder / "tall_grey.png")
    Image.new("RGBA", (12, 12), (*COLOURS["cat"], 0)).save(folder / "alpha.png")
    Image.new("P", (15, 15)).save(folder / "palette.png")
    data = load_dataset("imagefolder", str(root), val_fraction=0.1, cache_dir=str(tmp_path / "c"),
                        image_size=4)
    assert data.train_x.shape[1:] == data.test_x.shape[1:] == (3, 4, 4)
    assert len(data.train_y) + len(data.val_y) == 14
    grey = next(x for x in np.concatenate([data.train_x, data.val_x]) if x[0, 0, 0] == 128)
    assert (grey == 128).all()  # grey became RGB, a flat image stays flat


def test_corrupt_image_names_itself(tmp_path):
    root = _write_folder(tmp_path / "images")
    (root / "test" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff truncated")
    with pytest.raises(DataError, match="broken.jpg: not a readable image"):
        load_dataset("imagefolder", str(root), cache_dir=str(tmp_path))


def test_changed_file_or_image_size_is_decoded_again(tmp_path):
    root = _write_folder(tmp_path / "images", size=8)
    cache = tmp_path / "cache"
    first = load_dataset("imagefolder", str(root), val_fraction=0.0001, cache_dir=str(cache))
    changed = root / "test" / "cat" / "0.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(changed)
    second = load_dataset("imagefolder", str(root), val_fraction=0.0001, cache_dir=str(cache))
    assert not np.array_equal(first.test_x, second.test_x)
    assert [1, 2, 3] in second.test_x[:, :, 0, 0].tolist()
    smaller = load_dataset("imagefolder", str(root), cache_dir=str(cache), image_size=4)
    assert smaller.test_x.shape[2:] == (4, 4)


def test_arrays_decoded_already_are_resized_too():
    assert load_dataset("digits", None, subset=50, image_size=16).train_x.shape[1:] == (1, 16, 16)


def test_unknown_dataset_lists_choices():
    with pytest.raises(DataError) as e:
        load_dataset("imagenet", None)
    for name in DATASETS:
        assert name in str(e.value)


def test_digits_are_the_rows_scikit_learn_loads():
    """core/data.py reads scikit-learn's bundled CSV itself (importing scikit-learn costs seconds)."""
    from sklearn.datasets import load_digits

    from core.sources import digits as _digits

    x, y, classes = _digits()
    bunch = load_digits()
    assert np.array_equal(x, (bunch.images * (255.0 / 16.0)).round().astype(np.uint8)[:, None])
    assert np.array_equal(y, bunch.target)
    assert classes == [str(c) for c in bunch.target_names]
