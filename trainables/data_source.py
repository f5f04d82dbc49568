"""Where a trial gets its data set: handed over in Ray's object store, or read by its node.

A data set that fits a share of the object store (`data_share`) is decoded once by the driver and
put in the object store once; each node that runs trials pulls one copy and its trials share it
(tune.with_parameters). A bigger one never goes through the object store: each trial's worker
reads it from `data_dir`, which every node must reach, through core/data.py's decoded cache on its
node (~/.cache/tune-run there): the first decodes it, and every trial on the node maps the same
.npy files, so the node's memory holds one copy however many trials run.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.data import Dataset, load_dataset


@dataclass(frozen=True)
class DataSource:
    """What load_dataset takes: enough for any node to build the same data set as the driver."""

    name: str
    data_dir: str | None
    val_fraction: float
    subset: int | None
    seed: int
    image_size: int | None
    train_csv: str | None = None
    val_csv: str | None = None
    test_csv: str | None = None
    download: bool = False

    def load(self) -> Dataset:
        """The data set, once per worker process (a reused actor keeps it between trials)."""
        if self not in _LOADED:
            _LOADED.clear()  # one data set per worker at a time
            _LOADED[self] = load_dataset(self.name, self.data_dir, self.val_fraction, self.subset,
                                         self.seed, image_size=self.image_size,
                                         train_csv=self.train_csv, val_csv=self.val_csv,
                                         test_csv=self.test_csv, download=self.download)
        return _LOADED[self]


_LOADED: dict[DataSource, Dataset] = {}


def dataset_bytes(data: Dataset) -> int:
    """The bytes of the arrays a trial uses (the test split stays with the driver too, but it is
    shipped with the rest)."""
    arrays = (data.train_x, data.train_y, data.val_x, data.val_y, data.test_x, data.test_y)
    return int(sum(a.nbytes for a in arrays))
