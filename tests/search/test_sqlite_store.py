"""A local SQLite store is whole or absent (search/record/sqlite_store.py): new stores are copies of
one migrated template per MLflow version, written through a temporary file and renamed into place;
an existing store MLflow would refuse is refused at the door, in one line, before Ray starts."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from search.record import sqlite_store
from search.record.sqlite_store import PAUSE_ENV, StoreRefused, check_existing, make_whole, template
from tests.conftest import REPO
from tests.search.conftest import assert_refused, run_cli, space_file


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A cache folder whose template is built once for the module."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNE_RUN_CACHE", str(folder))
        template()
        yield folder


@pytest.fixture
def using(cache, monkeypatch):
    monkeypatch.setenv("TUNE_RUN_CACHE", str(cache))
    return cache


def _revision(db: Path) -> str | None:
    return sqlite_store._revision(db)


def _head() -> str:
    return sqlite_store._head_revision()


def _older_revision() -> str:
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    script = ScriptDirectory.from_config(_get_alembic_config(db_url=""))
    return script.get_revision(_head()).down_revision


def _set_revision(db: Path, revision: str) -> None:
    with sqlite3.connect(db) as con:
        con.execute("UPDATE alembic_version SET version_num = ?", (revision,))


def _store_with_a_run(folder: Path) -> tuple[Path, str]:
    from search.record.tracking import SearchRecord

    db = folder / "mlflow.db"
    SearchRecord(f"sqlite:///{db}", "kept", str(folder / "results" / "s"), "s")
    return db, f"sqlite:///{db}"


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_a_new_store_is_a_copy_of_the_template_which_is_built_once(using, tmp_path):
    made = template().stat().st_mtime_ns
    for name in ("a", "b"):
        make_whole(f"sqlite:///{tmp_path / name / 'mlflow.db'}")
        assert _revision(tmp_path / name / "mlflow.db") == _head()
        assert _leftovers(tmp_path / name) == []
    assert template().stat().st_mtime_ns == made
    assert template().parent == using / sqlite_store.TEMPLATES  # in the cache folder


def test_a_copied_store_opens_and_makes_its_own_default_experiment(using, tmp_path, monkeypatch):
    # The template holds no experiment: the default one's artifact folder is where it is opened.
    monkeypatch.chdir(tmp_path)
    db, uri = _store_with_a_run(tmp_path)
    with sqlite3.connect(db) as con:
        rows = dict(con.execute("SELECT name, artifact_location FROM experiments"))
    assert set(rows) == {"Default", "kept"}
    assert rows["Default"].startswith(str(tmp_path)), rows
    with sqlite3.connect(template()) as con:
        assert con.execute("SELECT count(*) FROM experiments").fetchone() == (0,)


def test_an_existing_store_is_never_replaced(using, tmp_path):
    db, uri = _store_with_a_run(tmp_path)
    before = (db.stat().st_ino, db.read_bytes())
    make_whole(uri)
    assert (db.stat().st_ino, db.read_bytes()) == before


def _paused_process(point: str, uri: str, cache: Path, marker: Path) -> subprocess.Popen:
    """A process making the store of `uri`, paused at `point` of its creation."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "from search.record.sqlite_store import make_whole; "
                               f"make_whole({uri!r})"],
        env={**os.environ, "PYTHONPATH": str(REPO), "TUNE_RUN_CACHE": str(cache),
             PAUSE_ENV: f"{point}:{marker}"},
        start_new_session=True, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not marker.exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.05)
    return proc


def _kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_a_kill_while_the_template_is_migrated_leaves_neither_template_nor_store(tmp_path,
                                                                                  monkeypatch):
    cache, db = tmp_path / "cache", tmp_path / "store" / "mlflow.db"
    _kill(_paused_process("template", f"sqlite:///{db}", cache, tmp_path / "paused"))
    folder = cache / sqlite_store.TEMPLATES
    [leftover] = _leftovers(folder)
    assert _revision(folder / leftover) is None  # killed between making the tables and migrating
    assert [p.name for p in folder.iterdir()] == [leftover] and not db.exists()
    # The next start builds the template whole, clears the leftover and makes the store.
    monkeypatch.setenv("TUNE_RUN_CACHE", str(cache))
    make_whole(f"sqlite:///{db}")
    assert _leftovers(folder) == [] and _revision(template()) == _head() == _revision(db)


def test_a_kill_while_a_store_is_copied_leaves_no_store(using, tmp_path):
    db = tmp_path / "mlflow.db"
    _kill(_paused_process("copy", f"sqlite:///{db}", using, tmp_path / "paused"))
    assert not db.exists() and len(_leftovers(tmp_path)) == 1
    make_whole(f"sqlite:///{db}")
    assert _revision(db) == _head() and _leftovers(tmp_path) == []


def test_a_half_made_store_that_holds_nothing_is_made_again(using, tmp_path):
    # What a kill inside MLflow's own creation left: its first tables, not migrated.
    db = tmp_path / "mlflow.db"
    from mlflow.store.db.utils import create_sqlalchemy_engine
    from mlflow.store.tracking.dbmodels.initial_models import Base as InitialBase

    engine = create_sqlalchemy_engine(f"sqlite:///{db}")
    InitialBase.metadata.create_all(engine)
    engine.dispose()
    assert "made again" in check_existing(db, f"sqlite:///{db}")
    make_whole(f"sqlite:///{db}")
    assert _revision(db) == _head()


def test_an_empty_file_is_made_again(using, tmp_path):
    db = tmp_path / "mlflow.db"
    db.touch()  # a kill just after SQLite created the file
    make_whole(f"sqlite:///{db}")
    assert _revision(db) == _head()


def test_an_old_schema_that_holds_runs_is_refused_and_left_alone(using, tmp_path):
    db, uri = _store_with_a_run(tmp_path)
    _set_revision(db, _older_revision())
    with pytest.raises(StoreRefused, match="mlflow db upgrade") as refused:
        check_existing(db, uri)
    assert uri in str(refused.value) and _older_revision() in str(refused.value)
    before = db.read_bytes()
    make_whole(uri)
    assert db.read_bytes() == before


def test_a_newer_mlflows_store_is_refused_even_empty(using, tmp_path):
    db = tmp_path / "mlflow.db"
    make_whole(f"sqlite:///{db}")
    _set_revision(db, "ffffffffffff")
    with pytest.raises(StoreRefused, match="newer MLflow"):
        check_existing(db, f"sqlite:///{db}")
    make_whole(f"sqlite:///{db}")
    assert _revision(db) == "ffffffffffff"  # never taken back to an older schema


def test_a_file_that_is_not_a_database_is_refused(tmp_path):
    db = tmp_path / "mlflow.db"
    db.write_text("not a database, but notes someone keeps here\n" * 100)
    with pytest.raises(StoreRefused, match="not an MLflow SQLite store"):
        check_existing(db, f"sqlite:///{db}")


@pytest.mark.bad_input
def test_an_old_schema_store_is_refused_before_ray_starts(using, workdir, capsys):
    db, uri = _store_with_a_run(workdir / "mlruns-db")
    _set_revision(db, _older_revision())
    (workdir / "bad.py").write_text(space_file())
    before = set(workdir.iterdir())
    code, err = run_cli(["bad.py", "--tracking-uri", uri], capsys)
    assert_refused(code, err, ["--tracking-uri", uri, "old schema", "mlflow db upgrade"], workdir,
                   before)
    import ray

    assert not ray.is_initialized()


@pytest.mark.bad_input
def test_an_old_schema_default_store_is_refused_before_ray_starts(using, workdir, capsys):
    """No --tracking-uri: the default ./mlflow.db is checked the same way."""
    db, _ = _store_with_a_run(workdir)
    _set_revision(db, _older_revision())
    (workdir / "bad.py").write_text(space_file())
    before = set(workdir.iterdir())
    code, err = run_cli(["bad.py"], capsys)
    assert_refused(code, err, ["sqlite:///mlflow.db", "old schema", "mlflow db upgrade"], workdir,
                   before)


@pytest.mark.parametrize("uri, path", [
    ("sqlite:///mlflow.db", "mlflow.db"), ("sqlite:////abs/m.db", "/abs/m.db"),
    ("sqlite+pysqlite:///x.db", "x.db"), ("sqlite:///m.db?timeout=20", "m.db"),
    ("sqlite:///:memory:", None), ("sqlite://", None), ("postgresql://h/db", None),
    ("http://127.0.0.1:5000", None)])
def test_the_database_file_of_a_tracking_uri(uri, path):
    assert sqlite_store.sqlite_file(uri) == (Path(path) if path else None)


def test_a_store_another_program_holds_locked_is_not_called_foreign(tmp_path, monkeypatch):
    # the lock stood in for: a real one holds the check for its 10-s busy timeout
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"")

    def locked(_db):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(sqlite_store, "_revision", locked)
    with pytest.raises(StoreRefused, match="cannot be read now") as refused:
        check_existing(db, f"sqlite:///{db}")
    assert "not an MLflow" not in str(refused.value)
