"""Checks of everything outside the space file (tracking store, storage, data, cluster address),
run before Ray starts: a failure is one line naming the flag, and nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from ray import tune

from search.door.preflight import make_storage, run_checks
from search.door.spec import build_spec
from tests.search.conftest import assert_refused, refuse_space_file, run_cli, space_file

# (id, space file text, CLI flags, fragments the error must name)
BAD_OUTSIDE_SYSTEMS = [
    ("tracking-ftp", space_file(), ["--tracking-uri", "ftp://host/x"],
     ["--tracking-uri", "ftp://"]),
    ("tracking-sqlite-without-file", space_file(), ["--tracking-uri", "sqlite://"],
     ["--tracking-uri", "name a database file"]),
    ("tracking-sqlite-under-a-file", space_file(), ["--tracking-uri", "sqlite:///bad.py/m.db"],
     ["--tracking-uri", "bad.py is a file"]),
    ("storage-gs", space_file(), ["--storage", "gs://bucket/searches"],
     ["--storage", "gs:// storage is not supported"]),
    ("address-unreachable", space_file(), ["--address", "127.0.0.1:9"],
     ["--address", "no Ray cluster answers at 127.0.0.1:9"]),
    ("address-not-host-port", space_file(), ["--address", "cluster"],
     ["--address", "HOST:PORT"]),
]


@pytest.mark.bad_input
@pytest.mark.parametrize("case_id,text,flags,fragments", BAD_OUTSIDE_SYSTEMS,
                         ids=[c[0] for c in BAD_OUTSIDE_SYSTEMS])
def test_bad_outside_system_is_refused(case_id, text, flags, fragments, workdir, capsys):
    refuse_space_file(text, flags, fragments, workdir, capsys)


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


def test_good_setup_passes_every_check_and_a_dry_run_writes_nothing(image_folder, tmp_path):
    settings = {"dataset": "imagefolder", "data_dir": str(image_folder),
                "storage": str(tmp_path / "results"),
                "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}
    spec = build_spec(Path("ok.py"), settings, {"lr": tune.uniform(0.01, 0.1)})
    before = set(tmp_path.iterdir())
    checks = run_checks(spec, None)
    # One line per outside system, in the order --dry-run lists them.
    assert [c.name for c in checks] == ["tracking", "storage", "data", "model", "cluster"]
    assert "can be created" in checks[0].detail and "3 classes" in checks[2].detail, checks
    assert set(tmp_path.iterdir()) == before
    make_storage(spec.storage)  # what a real run does next, once everything passed
    assert (tmp_path / "results").is_dir() and not (tmp_path / "mlflow.db").exists()
