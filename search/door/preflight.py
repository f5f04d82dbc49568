"""Checks of everything outside the space file, before Ray starts or anything is written.

The tracking URI (a scheme MLflow can use; the server, database or folder reachable), the storage
folder (creatable and writable), the data folder (there, with class folders) and the cluster address
(one TCP connection with a timeout of a few seconds). A failed check raises SpecError with one line
naming the flag or setting; `tune-run SPACE --dry-run` runs the same checks and lists them.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from search.door.spec import SearchSpec
from search.errors import SpecError
from search.record import DEFAULT_TRACKING_URI, resolve_tracking_uri
from search.redact import redact

# Schemes of MLflow tracking stores; a URI without one is a local folder (MLflow's file store).
FILE_SCHEMES = ("", "file")
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
SERVER_SCHEMES = ("http", "https")
ADDRESS_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Check:
    name: str
    detail: str


def run_checks(spec: SearchSpec, address: str | None) -> list[Check]:
    """Runs every check; returns what passed, or raises SpecError at the first that fails.

    Nothing is made: a real run makes the storage folder (`make_storage`) once everything passed,
    so a refused search leaves nothing behind.
    """
    return [
        check_tracking_uri(spec.tracking_uri),
        check_storage(spec.storage),
        check_data(spec),
        check_model(spec),
        check_address(address),
    ]


def check_tracking_uri(uri: str | None) -> Check:
    from search.record.tracking import TrackingUnreachable, check_reachable

    if not uri:
        _check_sqlite(resolve_tracking_uri(None))  # an old or broken ./mlflow.db is refused too
        return Check("tracking", f"MLflow's default store, {DEFAULT_TRACKING_URI} in this folder")
    scheme = urlparse(uri).scheme.split("+")[0].lower()
    if len(scheme) == 1:  # a Windows drive letter, not a scheme
        scheme = ""
    if scheme in SERVER_SCHEMES:
        try:
            check_reachable(uri)
        except TrackingUnreachable as e:
            raise SpecError(str(e)) from None
        return Check("tracking", f"server {redact(uri)} answers")
    if scheme == "sqlite":
        return Check("tracking", _check_sqlite(uri))
    if scheme in DATABASE_SCHEMES:
        _check_database(uri)
        return Check("tracking", f"database {redact(uri)} accepts connections")
    if scheme in FILE_SCHEMES:
        folder = Path(urlparse(uri).path if scheme == "file" else uri)
        _check_creatable(folder, "--tracking-uri")
        return Check("tracking", f"folder {folder} can be written")
    allowed = ", ".join(f"{s}://" for s in (*SERVER_SCHEMES, *DATABASE_SCHEMES, "file"))
    raise SpecError(f"--tracking-uri: {redact(uri)}: MLflow cannot track to a {scheme}:// URI; "
                    f"use one of {allowed} or a local folder")


def _check_sqlite(uri: str) -> str:
    from search.record.sqlite_store import sqlite_file

    db = sqlite_file(uri)
    if db is None:
        raise SpecError(f"--tracking-uri: {uri}: name a database file, e.g. {DEFAULT_TRACKING_URI}")
    if db.exists() and not db.is_file():
        raise SpecError(f"--tracking-uri: {uri}: {db} is not a file")
    if db.exists():
        if not os.access(db, os.W_OK):
            raise SpecError(f"--tracking-uri: {uri}: {db} is not writable")
        return _check_sqlite_schema(db, uri)
    _check_creatable(db.parent, "--tracking-uri")
    return f"SQLite database {db} can be created"


def _check_sqlite_schema(db: Path, uri: str) -> str:
    """An existing store MLflow would refuse (a half-made or old schema) is refused here, before
    Ray starts, not when the search ends and its record is written."""
    from search.record.sqlite_store import StoreRefused, check_existing

    try:
        return check_existing(db, uri)
    except StoreRefused as e:
        raise SpecError(str(e)) from None


def _check_database(uri: str) -> None:
    """One connection to a database store, with a short timeout (needs its driver installed)."""
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(uri, connect_args={"connect_timeout": 5}
                                          if uri.startswith("postgresql") else {})
        with engine.connect():
            pass
    except ModuleNotFoundError as e:
        raise SpecError(f"--tracking-uri: {redact(uri)}: the database driver {e.name!r} is not "
                        f"installed; pip install it (e.g. psycopg2-binary for PostgreSQL)") from None
    except Exception as e:  # any refusal of the database is bad input here
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise SpecError(f"--tracking-uri: {redact(uri)}: cannot connect ({redact(reason)})") from None


def check_storage(storage: str) -> Check:
    """The storage: an S3 bucket that answers, or a local (or mounted shared) folder that exists
    or can be made. (Whether every node of a cluster sees a local folder is checked once Ray has
    started: search/place/cluster.py.)"""
    from search.place import storage as stores

    if stores.is_remote(storage):
        return Check("storage", stores.check(storage))
    scheme = urlparse(storage).scheme
    if "://" in storage and len(scheme) > 1:
        raise SpecError(f"--storage: {storage}: {scheme}:// storage is not supported; give "
                        f"s3://bucket/prefix, a local folder, or a shared folder mounted on every "
                        f"node (NFS)")
    folder = Path(storage).resolve()
    _check_creatable(folder, "--storage")
    return Check("storage", f"folder {folder} is writable or can be created")


def make_storage(storage: str) -> None:
    from search.place import storage as stores

    if stores.is_remote(storage):
        stores.probe_write(storage)
        return
    folder = Path(storage).resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".tune-run-probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise SpecError(f"--storage: {folder} is not a writable folder ({e.strerror})") from None


def _check_creatable(folder: Path, flag: str) -> None:
    """The folder exists and is writable, or its nearest existing parent is a writable folder."""
    folder = folder.resolve()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise SpecError(f"{flag}: {folder} is not a writable folder: {existing} is a file")
    if not _writable(existing):
        raise SpecError(f"{flag}: {folder} is not a writable folder: {existing} is not writable")


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK | os.X_OK)


def check_data(spec: SearchSpec) -> Check:
    from core.data import DataError, check_data_folder

    try:
        return Check("data", check_data_folder(spec.dataset, spec.data_dir, **spec.data_options))
    except DataError as e:
        raise SpecError(str(e)) from None


def check_model(spec: SearchSpec) -> Check:
    """A model other than the built-in one is built and run on a batch of the data's shape; the
    weights the space may start from load into it."""
    from core.models import MODEL_OPTIONS, model_kind
    from search.door.domains import domain_choices, example_value

    kind = model_kind(spec.model)
    weights = [w for w in domain_choices(spec.space.get("weights")) or [spec.space.get("weights")]
               if w]
    if kind == "builtin" and not weights:
        return Check("model", "resnet18, built in")
    from core.data import DataError, data_shape
    from search.door.models import check_weights, own_model_parameters, probe_model

    try:
        shape, classes = data_shape(spec.dataset, spec.data_dir, spec.image_size,
                                    spec.train_csv, spec.download)
    except DataError as e:
        raise SpecError(str(e)) from None
    named = [*MODEL_OPTIONS, *sorted(own_model_parameters(spec.model))]
    options = {o: example_value(spec.space[o]) for o in named if o in spec.space}
    if kind != "builtin":
        probe_model(str(spec.source), spec.model, options, shape, classes, _channel_pruning(spec))
    check_weights(str(spec.source), spec.model, weights, options, shape[0], classes)
    c, h, w = shape
    starts = f", starting from {', '.join(weights)}" if weights else ""
    return Check("model", f"{spec.model} ({kind}) maps {c}x{h}x{w} images to {classes} "
                          f"classes{starts}")


def _channel_pruning(spec: SearchSpec) -> float:
    """The largest prune_ratio a trial of the space can remove channels to (0: none)."""
    from search.door.domains import largest_value, may_take

    if not may_take(spec.space.get("prune_method", "unstructured"), "channel"):
        return 0.0
    return float(largest_value(spec.space.get("prune_ratio", 0.0)) or 0.0)


def check_address(address: str | None) -> Check:
    """One TCP connection to the cluster's address, so a dead cluster is one line, not a hang."""
    if not address:
        return Check("cluster", "a new local Ray for this search (no --address)")
    if address in ("auto", "local"):
        return Check("cluster", f"Ray's {address!r} address")
    parsed = urlparse(address if "://" in address else f"ray://{address}")
    try:
        host, port = parsed.hostname, parsed.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise SpecError(f"--address: {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379)")
    try:
        with socket.create_connection((host, port), timeout=ADDRESS_TIMEOUT_S):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise SpecError(f"--address: no Ray cluster answers at {host}:{port} ({reason}, within "
                        f"{ADDRESS_TIMEOUT_S:g} s); start it, or leave --address out to run "
                        f"locally") from None
    return Check("cluster", f"{host}:{port} accepts connections")
