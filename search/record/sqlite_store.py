"""A local SQLite store is whole or absent: a kill at any moment leaves one or the other.

MLflow makes a new SQLite store in place: it creates the tables, then runs some seventy alembic
migrations (seconds), so a kill in between leaves a file it refuses ever after ("Detected
out-of-date database schema"). tune-run builds one empty, migrated store per MLflow version in the
cache folder instead, and gives each new store a copy of it (milliseconds); both are written to a
temporary file beside their place and renamed into it (`os.replace`, atomic). An existing store
is looked at before Ray starts (search/door/preflight.py): whole, half-made and holding nothing (made
again), or refused in one line.

Tests pause the creation with TUNE_RUN_TEST_STORE_PAUSE=POINT:MARKER, as trainables/faults.py
injects faults: at POINT ("template": the template's tables made, not migrated yet; "copy": a new
store copied, not in place yet) the process writes the file MARKER and sleeps, to be killed there.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from core.cache import cache_root

TEMPLATES = "mlflow-stores"  # folder of the templates, in the cache folder
PAUSE_ENV = "TUNE_RUN_TEST_STORE_PAUSE"
# Rows that MLflow's migrations themselves write into an empty store, and its default experiment.
BOOKKEEPING_TABLES = ("alembic_version", "workspaces")
DEFAULT_EXPERIMENT_ID = 0


class StoreRefused(Exception):
    """An existing SQLite store MLflow cannot use; the message is one line."""


def sqlite_file(uri: str) -> Path | None:
    """The database file of a sqlite:/// tracking URI (sqlite+pysqlite:/// too); None for any
    other store, and for an in-memory or unnamed database."""
    scheme, _, rest = uri.partition(":///")
    if scheme.split("+")[0].lower() != "sqlite" or not rest:
        return None
    path = rest.split("?", 1)[0]  # sqlite:////abs/m.db, sqlite:///rel.db
    return Path(path) if path and path != ":memory:" else None


def make_whole(uri: str) -> None:
    """Gives a local SQLite store that is absent, or half-made and holding nothing, a whole empty
    one: a copy of this MLflow version's template. Every other store is left as it is."""
    db = sqlite_file(uri)
    if db is None or not _wants_new_store(db):
        return
    db.parent.mkdir(parents=True, exist_ok=True)  # as MLflow does for a new SQLite store
    fill = _template_copier()
    with _locked(db):
        if _wants_new_store(db):  # again: another process may have made it while we waited
            _write_atomically(db, fill)


def check_existing(db: Path, uri: str) -> str:
    """What tune-run will find in the existing store `db`, as a line for --dry-run; raises
    StoreRefused, one line naming `uri` and what to do, for a store MLflow would refuse."""
    import mlflow

    try:
        revision, remade = _revision(db), _half_made(db)
    except sqlite3.OperationalError as e:  # locked by another process, or unreadable: not foreign
        raise StoreRefused(f"--tracking-uri: {uri}: {db} cannot be read now ({e}); is another "
                           f"program holding it? Try again, or give another --tracking-uri") from None
    except sqlite3.DatabaseError as e:
        raise StoreRefused(f"--tracking-uri: {uri}: {db} is not an MLflow SQLite store ({e}); "
                           f"move it away, or give another --tracking-uri") from None
    head = _head_revision()
    if revision == head:
        return f"SQLite database {db} can be written (MLflow schema {head})"
    if remade:
        return f"SQLite database {db} was left half-made and holds nothing: it is made again"
    if revision is None:
        raise StoreRefused(f"--tracking-uri: {uri}: {db} holds tables but no MLflow schema "
                           f"version; it is not an MLflow store: give another --tracking-uri")
    if revision not in _known_revisions():
        raise StoreRefused(f"--tracking-uri: {uri}: {db} has the schema {revision} of a newer "
                           f"MLflow than {mlflow.__version__}; upgrade MLflow, or give another "
                           f"--tracking-uri")
    raise StoreRefused(f"--tracking-uri: {uri}: {db} has MLflow's old schema {revision}, MLflow "
                       f"{mlflow.__version__} needs {head}; back it up and run `mlflow db upgrade "
                       f"{uri}`, or give another --tracking-uri")


def template() -> Path:
    """The empty, migrated store of this MLflow version in the cache folder, built once."""
    import mlflow

    path = cache_root().resolve() / TEMPLATES / f"mlflow-{mlflow.__version__}.db"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        if not path.exists():  # another process may have built it while we waited
            _write_atomically(path, _build_store)
    return path


def _template_copier() -> Callable[[Path], None]:
    try:
        source = template()
    except OSError:  # no writable cache folder: this one store is built where it goes
        return _build_store
    return functools.partial(_copy_template, source)


def _copy_template(source: Path, temp: Path) -> None:
    shutil.copyfile(source, temp)
    _pause_if_testing("copy")  # tests kill here: the copy made, not in place yet


def _wants_new_store(db: Path) -> bool:
    if not db.exists():
        return True
    try:
        return _half_made(db)
    except sqlite3.DatabaseError:  # not a database: preflight refused it, MLflow says why
        return False


def _half_made(db: Path) -> bool:
    """Whether `db` stopped before this MLflow's schema (or before any: a kill while MLflow made
    it) and holds nothing, so nothing is lost by making it again. A newer MLflow's store is never
    made again: that would take it back to an older schema."""
    revision = _revision(db)
    if revision == _head_revision() or (revision and revision not in _known_revisions()):
        return False
    return _holds_nothing(db)


def _write_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """`write`s a temporary file beside `target`, then renames it into place: a kill leaves the old
    target (or none) or the new one, never part of one. The caller holds `_locked(target)`."""
    for leftover in target.parent.iterdir():  # of writers killed earlier: nobody else writes
        if leftover.name.startswith(f".{target.name}.") and leftover.name.endswith(".tmp"):
            leftover.unlink(missing_ok=True)
    temp = target.parent / f".{target.name}.{os.getpid()}.tmp"
    try:
        write(temp)
        with open(temp, "rb+") as f:  # on disk before the rename, so a power cut cannot empty it
            os.fsync(f.fileno())
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def _build_store(path: Path) -> None:
    """MLflow's tables in a new SQLite file, migrated to this MLflow's schema, as SqlAlchemyStore
    makes an empty database, but without the default experiment: its artifact folder depends on
    where the store is first opened, so each copy makes its own then."""
    from mlflow.store.db.utils import _upgrade_db, create_sqlalchemy_engine
    from mlflow.store.tracking.dbmodels.initial_models import Base as InitialBase

    engine = create_sqlalchemy_engine(f"sqlite:///{path}")
    try:
        InitialBase.metadata.create_all(engine)
        _pause_if_testing("template")  # tests kill here, where the chaos run's kill landed
        _upgrade_db(engine)
    finally:
        engine.dispose()


def _revision(db: Path) -> str | None:
    """The alembic revision `db` was migrated to; None before its first migration."""
    with closing(sqlite3.connect(db, timeout=10)) as con:
        if "alembic_version" not in _tables(con):
            return None
        row = con.execute("SELECT version_num FROM alembic_version").fetchone()
    return row[0] if row else None


def _holds_nothing(db: Path) -> bool:
    """Whether `db` holds no experiment, run, model or trace: nothing is lost by making it again."""
    with closing(sqlite3.connect(db, timeout=10)) as con:
        for table in _tables(con) - set(BOOKKEEPING_TABLES):
            where = f" WHERE experiment_id != {DEFAULT_EXPERIMENT_ID}" if table == "experiments" else ""
            if con.execute(f'SELECT 1 FROM "{table}"{where} LIMIT 1').fetchone():
                return False
    return True


def _tables(con: sqlite3.Connection) -> set[str]:
    return {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                            "AND name NOT LIKE 'sqlite_%'")}


@functools.cache
def _head_revision() -> str:
    from mlflow.store.db.utils import _get_latest_schema_revision

    return _get_latest_schema_revision()


@functools.cache
def _known_revisions() -> frozenset[str]:
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    script = ScriptDirectory.from_config(_get_alembic_config(db_url=""))
    return frozenset(r.revision for r in script.walk_revisions())


def _locked(path: Path):
    """One process at a time makes `path`; the lock goes with the process, however it ends."""
    from mlflow.utils.file_utils import ExclusiveFileLock

    key = hashlib.md5(str(path.resolve()).encode(), usedforsecurity=False).hexdigest()
    return ExclusiveFileLock(f"{tempfile.gettempdir()}/tune-run-store-{key}.lock")


def _pause_if_testing(point: str) -> None:
    wanted, _, marker = os.environ.get(PAUSE_ENV, "").partition(":")
    if wanted == point and marker:
        Path(marker).write_text(f"{point} {os.getpid()}\n")
        time.sleep(600)  # the test kills the process here
