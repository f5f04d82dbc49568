"""Helpers of the search/ tests: space files that the door refuses and the refusal they expect, and
one finished search that several test files read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from search.cli import main
from tests.conftest import REPO, write_space

GOOD_SETTINGS = '{"dataset": "digits", "num_samples": 2, "max_epochs": 2}'
GOOD_SPACE = '{"lr": tune.loguniform(1e-3, 1e-1)}'


def space_file(settings: str = GOOD_SETTINGS, space: str = GOOD_SPACE, head: str = "") -> str:
    return f"from ray import tune\n{head}\nsettings = {settings}\nspace = {space}\n"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    return code, capsys.readouterr().err


def assert_refused(code: int, err: str, fragments: list[str], workdir: Path, before: set) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tune-run: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert set(workdir.iterdir()) == before  # no results folder, no mlflow.db, nothing


def refuse_space_file(text: str | None, flags: list[str], fragments: list[str], workdir: Path,
                      capsys, missing: bool = False) -> None:
    """Runs `tune-run bad.py FLAGS` (`text` None: no space file) and expects one refused line."""
    args = []
    if text is not None:
        (workdir / "bad.py").write_text(text)
        args = ["bad.py"]
    elif missing:
        args = ["missing.py"]
    before = set(workdir.iterdir())
    code, err = run_cli(args + flags, capsys)
    assert_refused(code, err, fragments, workdir, before)


MAX_EPOCHS = 4  # of the finished search


@pytest.fixture(scope="session")
def finished_search(image_folder, tmp_path_factory):
    """Runs one search of 8 trials through the CLI, shared by the files that read it; yields
    (workdir, tracking uri, CLI output: stdout, then stderr)."""
    work = tmp_path_factory.mktemp("search")
    settings = {
        "dataset": "imagefolder", "data_dir": str(image_folder), "num_samples": 8,
        "max_epochs": MAX_EPOCHS, "grace_period": 1, "reduction_factor": 2,
        "max_concurrent": 2, "seed": 3, "experiment": "e2e",
    }
    # lr 1e-5 learns nothing in 4 epochs: such trials fall below the rung cut-offs.
    space = write_space(work / "tiny.py", settings, """
        "lr": tune.choice([1e-5, 0.05]),
        "optimizer": tune.choice(["sgd", "adamw"]),
        "width": 0.0625,
        "batch_size": 16,
    """)
    uri = f"sqlite:///{work}/mlflow.db"
    proc = subprocess.run(
        [sys.executable, "-m", "search.cli", str(space), "--tracking-uri", uri,
         "--storage", str(work / "results")],
        cwd=work, capture_output=True, text=True, timeout=600,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(work)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work, uri, proc.stdout + proc.stderr
