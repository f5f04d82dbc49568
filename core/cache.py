"""The folder of tune-run's caches on this machine: `TUNE_RUN_CACHE`, else `~/.cache/tune-run`.

It holds decoded image data sets (core/data.py) and, for S3 storage, the local copies of experiment
folders and fetched checkpoints (search/place/storage.py). Plain Python: cheap to import.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The cache folder, read from the environment at each call (tests and nodes may set it)."""
    return Path(os.environ.get("TUNE_RUN_CACHE") or Path.home() / ".cache" / "tune-run")
