"""Bad space files and flags: exit code 2, one line naming the file, field or flag, nothing created."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from search.cli import main
from tests.conftest import REPO

GOOD_SETTINGS = '{"dataset": "digits", "num_samples": 2, "max_epochs": 2}'
GOOD_SPACE = '{"lr": tune.loguniform(1e-3, 1e-1)}'


def space_file(settings: str = GOOD_SETTINGS, space: str = GOOD_SPACE, head: str = "") -> str:
    return f"from ray import tune\n{head}\nsettings = {settings}\nspace = {space}\n"


# (id, space file text or None for a missing file, extra CLI flags, fragments the error must name)
BAD_SPACE_FILES = [
    ("syntax-error", "from ray import tune\nspace = {'lr': 0.1\n", [], ["bad.py:", "syntax error"]),
    ("import-error", space_file(head="import not_a_module"), [], ["bad.py:2", "not_a_module"]),
    ("raises", space_file(head="x = 1 / 0"), [], ["bad.py:2", "ZeroDivisionError"]),
    ("no-space", "from ray import tune\nsettings = {}\n", [], ["no `space` dict"]),
    ("space-not-dict", space_file(space="[1, 2]"), [], ["`space` must be a dict"]),
    ("settings-not-dict", space_file(settings="3"), [], ["`settings` must be a dict"]),
    ("no-dimension", space_file(space='{"lr": 0.1}'), [], ["space:", "no search dimension"]),
    ("unknown-hparam", space_file(space='{"learning_rate": tune.uniform(0.1, 0.2)}'), [],
     ["space.learning_rate", "unknown hyperparameter"]),
    ("misspelled-choice",
     space_file(space='{"optimizer": tune.choice(["sgd", "admaw"])}'), [],
     ["space.optimizer", "'admaw'", "did you mean 'adamw'"]),
    ("unknown-choice", space_file(space='{"optimizer": tune.choice(["sgd", "lion"])}'), [],
     ["space.optimizer", "'lion'", "adamw"]),
    ("fixed-unknown-choice",
     space_file(space='{"activation": "swish", "lr": tune.uniform(0.1, 0.2)}'), [],
     ["space.activation", "'swish'"]),
    ("wrong-type", space_file(space='{"lr": "fast", "dropout": tune.uniform(0, 0.5)}'), [],
     ["space.lr", "must be a number"]),
    ("lr-zero", space_file(space='{"lr": tune.uniform(0.0, 0.1)}'), [], ["space.lr", "(0, 10]"]),
    ("lr-negative-fixed", space_file(space='{"lr": -0.1, "dropout": tune.uniform(0, 0.5)}'), [],
     ["space.lr"]),
    ("dropout-one", space_file(space='{"dropout": 1.0, "lr": tune.uniform(0.1, 0.2)}'), [],
     ["space.dropout", "[0, 1)"]),
    ("dropout-range", space_file(space='{"dropout": tune.uniform(0.0, 1.5)}'), [],
     ["space.dropout"]),
    ("label-smoothing-negative", space_file(space='{"label_smoothing": tune.uniform(-0.1, 0.1)}'),
     [], ["space.label_smoothing"]),
    ("prune-ratio-one", space_file(space='{"prune_ratio": tune.choice([0.0, 1.0])}'), [],
     ["space.prune_ratio"]),
    ("mixup-negative", space_file(space='{"mixup_alpha": tune.choice([-1.0, 0.2])}'), [],
     ["space.mixup_alpha"]),
    ("batch-size-float-range", space_file(space='{"batch_size": tune.uniform(16, 64)}'), [],
     ["space.batch_size", "tune.randint"]),
    ("width-zero", space_file(space='{"width": tune.choice([0.0, 0.5])}'), [], ["space.width"]),
    ("warmup-too-long",
     space_file(space='{"warmup_epochs": 5, "lr": tune.uniform(0.1, 0.2)}'), [],
     ["space.warmup_epochs", "max_epochs"]),
    ("hparam-in-settings", space_file(settings='{"lr": 0.1}'), [],
     ["settings.lr", "put it in `space`"]),
    ("unknown-setting", space_file(settings='{"num_sample": 4}'), [],
     ["settings.num_sample", "did you mean 'num_samples'"]),
    ("metric-never-reported", space_file(settings='{"metric": "accuracy"}'), [],
     ["settings.metric", "val_acc"]),
    ("bad-mode", space_file(settings='{"mode": "maximize"}'), [], ["settings.mode", "'max'"]),
    ("grace-beyond-max-epochs", space_file(settings='{"max_epochs": 3, "grace_period": 5}'), [],
     ["settings.grace_period", "max_epochs"]),
    ("zero-trials", space_file(settings='{"num_samples": 0}'), [], ["settings.num_samples"]),
    ("negative-trials", space_file(settings='{"num_samples": -4}'), [], ["settings.num_samples"]),
    ("unknown-search", space_file(settings='{"search": "bayes"}'), [],
     ["settings.search", "'optuna'"]),
    ("grid-with-optuna",
     space_file(settings='{"search": "optuna"}', space='{"lr": tune.grid_search([0.1, 0.2])}'),
     [], ["space.lr", "grid_search"]),
    ("name-with-path", space_file(settings='{"name": "../x"}'), [], ["settings.name", "no path"]),
    ("missing-file", None, [], ["no such space file"]),
    # Every Ray domain is checked with its own bounds (search/domains.py)
    ("empty-choice", space_file(space='{"lr": tune.choice([])}'), [],
     ["space.lr", "nothing to choose"]),
    ("randn-for-a-bounded-range", space_file(space='{"lr": tune.randn(0.1, 0.01)}'), [],
     ["space.lr", "any number"]),
    ("qrandn-for-a-bounded-range", space_file(space='{"dropout": tune.qrandn(0.2, 0.1, 0.1)}'), [],
     ["space.dropout", "any number"]),
    ("quniform-reaches-an-open-end", space_file(space='{"dropout": tune.quniform(0.0, 1.0, 0.5)}'),
     [], ["space.dropout", "[0, 1]"]),
    ("qrandint-reaches-its-upper-bound",
     space_file(space='{"batch_size": tune.qrandint(16, 65552, 16)}'), [], ["space.batch_size"]),
    ("randint-below-the-range", space_file(space='{"batch_size": tune.randint(0, 64)}'), [],
     ["space.batch_size", "[0, 63]"]),
    ("lograndint-for-a-choice", space_file(space='{"optimizer": tune.lograndint(1, 4)}'), [],
     ["space.optimizer", "tune.choice"]),
    ("qloguniform-above-the-range",
     space_file(space='{"weight_decay": tune.qloguniform(0.1, 2.0, 0.1)}'), [],
     ["space.weight_decay"]),
    ("empty-range", space_file(space='{"lr": tune.uniform(0.1, 0.1)}'), [],
     ["space.lr", "holds no value"]),
    ("nested-dict", space_file(space='{"lr": {"low": 0.01, "high": 0.1}}'), [],
     ["space.lr", "nested dicts"]),
    ("sample-from-bad-value", space_file(space='{"lr": tune.sample_from(lambda _: -1.0)}'), [],
     ["space.lr", "tune.sample_from returned a bad value"]),
    ("sample-from-raises", space_file(space='{"lr": tune.sample_from(lambda _: 1 / 0)}'), [],
     ["space.lr", "ZeroDivisionError"]),
    ("choice-of-domains", space_file(space='{"lr": tune.choice([tune.uniform(0.1, 0.2)])}'), [],
     ["space.lr", "plain values"]),
    ("ray-refuses-at-import", space_file(space='{"lr": tune.quniform(0.01, 0.1, 0.03)}'), [],
     ["bad.py:4", "ValueError"]),
    # A space file that ends the interpreter while being loaded
    ("sys-exit-0", space_file(head="raise SystemExit(0)"), [],
     ["bad.py:2", "ends the program", "exit code 0"]),
    ("os-exit", space_file(head="import os\nos._exit(3)"), [],
     ["bad.py:3", "ends the program", "exit code 3"]),
    # Outside systems, checked before Ray starts (search/preflight.py)
    ("tracking-ftp", space_file(), ["--tracking-uri", "ftp://host/x"],
     ["--tracking-uri", "ftp://"]),
    ("tracking-sqlite-without-file", space_file(), ["--tracking-uri", "sqlite://"],
     ["--tracking-uri", "name a database file"]),
    ("tracking-sqlite-under-a-file", space_file(), ["--tracking-uri", "sqlite:///bad.py/m.db"],
     ["--tracking-uri", "bad.py is a file"]),
    ("storage-s3", space_file(), ["--storage", "s3://bucket/searches"],
     ["--storage", "s3:// storage is not supported"]),
    ("address-unreachable", space_file(), ["--address", "127.0.0.1:9"],
     ["--address", "no Ray cluster answers at 127.0.0.1:9"]),
    ("address-not-host-port", space_file(), ["--address", "cluster"],
     ["--address", "HOST:PORT"]),
    # Flags
    ("flag-zero-trials", space_file(), ["--num-samples", "0"], ["--num-samples"]),
    ("flag-not-a-number", space_file(), ["--num-samples", "many"], ["--num-samples", "'many'"]),
    ("flag-negative-epochs", space_file(), ["--max-epochs", "-1"], ["--max-epochs"]),
    ("flag-unknown-search", space_file(), ["--search", "grid"], ["--search", "'random'"]),
    ("flag-negative-gpus", space_file(), ["--gpus-per-trial", "-1"], ["--gpus-per-trial"]),
    ("flag-zero-cpus", space_file(), ["--cpus-per-trial", "0"], ["--cpus-per-trial"]),
    ("flag-negative-concurrency", space_file(), ["--max-concurrent", "-2"], ["--max-concurrent"]),
    ("flag-name-escapes", space_file(), ["--name", "../x"], ["settings.name", "no path"]),
    ("flag-name-absolute", space_file(), ["--name", "/etc"], ["settings.name", "no path"]),
    ("flag-unknown", space_file(), ["--epochs", "3"], ["unrecognized arguments: --epochs"]),
    ("resume-unknown-name", None, ["--resume", "nothing-here"], ["--resume", "nothing-here"]),
]


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


@pytest.mark.bad_input
@pytest.mark.parametrize("case_id,text,flags,fragments", BAD_SPACE_FILES,
                         ids=[c[0] for c in BAD_SPACE_FILES])
def test_bad_space_file_or_flag_is_refused(case_id, text, flags, fragments, workdir, capsys):
    args = []
    if text is not None:
        (workdir / "bad.py").write_text(text)
        args = ["bad.py"]
    elif case_id == "missing-file":
        args = ["missing.py"]
    before = set(workdir.iterdir())
    code, err = run_cli(args + flags, capsys)
    assert_refused(code, err, fragments, workdir, before)


def _data_cases(root: Path) -> dict[str, tuple[str, list[str]]]:
    empty = root / "empty"
    empty.mkdir()
    no_classes = root / "no-classes"
    (no_classes / "train").mkdir(parents=True)
    (no_classes / "test").mkdir()
    return {
        "missing": (str(root / "nowhere"), ["imagefolder data not found", "--data-dir"]),
        "empty": (str(empty), ["no train/ folder"]),
        "no-classes": (str(no_classes), ["no class folders"]),
    }


@pytest.mark.bad_input
@pytest.mark.parametrize("case", ["missing", "empty", "no-classes"])
def test_bad_data_folder_is_refused_before_anything_starts(case, tmp_path, monkeypatch, capsys):
    data_root = tmp_path / "data"
    data_root.mkdir()
    data_dir, fragments = _data_cases(data_root)[case]
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (work / "bad.py").write_text(space_file(settings='{"dataset": "imagefolder"}'))
    code, err = run_cli(["bad.py", "--data-dir", data_dir], capsys)
    assert_refused(code, err, fragments, work, {work / "bad.py"})


@pytest.mark.bad_input
def test_unwritable_storage_is_refused(workdir, capsys):
    (workdir / "bad.py").write_text(space_file())
    (workdir / "a-file").write_text("")
    before = set(workdir.iterdir())
    code, err = run_cli(["bad.py", "--storage", "a-file/results"], capsys)
    assert_refused(code, err, ["--storage", "not a writable folder"], workdir, before)


def test_real_process_exits_2_with_one_line_and_no_traceback(tmp_path):
    (tmp_path / "bad.py").write_text(space_file(space='{"optimizer": tune.choice(["admaw"])}'))
    proc = subprocess.run([sys.executable, "-m", "search.cli", "bad.py"], cwd=tmp_path,
                          capture_output=True, text=True, env={"PYTHONPATH": str(REPO)})
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("tune-run: error: bad.py: space.optimizer: 'admaw' is not one "
                                   "of 'sgd', 'adam', 'adamw', 'adagrad', 'adadelta', 'rmsprop'; "
                                   "did you mean 'adamw'?")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.py"]
