"""Shared test helpers: small generated image data and space files (no ../shared needed)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def make_image_folder(root: Path, classes: int = 3, train_per_class: int = 24,
                      test_per_class: int = 8, size: int = 8, seed: int = 0,
                      suffix: str = ".png") -> Path:
    """An ImageFolder tree whose classes differ in colour, so a tiny model can learn them."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                base = np.zeros(3)
                base[c % 3] = 200
                pixels = base + rng.normal(0, 30, size=(size, size, 3))
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i}{suffix}")
    return root


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images"))


def search_runs(uri: str, experiment: str):
    """(client, parent runs, child runs) of an MLflow experiment, read through the client."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def write_space(path: Path, settings: dict, space: str) -> Path:
    """A space file with `settings` (a dict literal) and `space` (Python source of the dict body)."""
    body = textwrap.indent(textwrap.dedent(space).strip(), "    ")
    path.write_text(f"from ray import tune\n\nsettings = {settings!r}\n\nspace = {{\n{body}\n}}\n")
    return path


# What the reliability tests tried, reported at the end of the run (the README quotes it).
FAULTS_INJECTED: dict[str, int] = {}


def injected(kind: str, count: int = 1) -> None:
    """Records that a test injected `count` faults of `kind` into a real search."""
    FAULTS_INJECTED[kind] = FAULTS_INJECTED.get(kind, 0) + count


def pytest_configure(config):
    config.addinivalue_line("markers", "bad_input: one bad space file, flag or data folder")


def pytest_terminal_summary(terminalreporter):
    passed = terminalreporter.stats.get("passed", [])
    bad_inputs = sum(1 for r in passed if "bad_input" in r.keywords)
    if bad_inputs or FAULTS_INJECTED:
        faults = ", ".join(f"{n} {k}" for k, n in sorted(FAULTS_INJECTED.items()))
        terminalreporter.write_line(
            f"reliability: {bad_inputs} bad inputs refused; "
            f"{sum(FAULTS_INJECTED.values())} faults injected into real searches ({faults})")


# Outside systems started by the cluster tests: the S3 server once per session; the Ray cluster and
# PostgreSQL once for tests/search/test_cluster.py (module scope).
from tests.outside import postgres, ray_cluster, s3_server  # noqa: E402, F401
