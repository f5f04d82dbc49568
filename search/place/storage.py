"""Where searches are kept: a local folder (or a shared one mounted on every node), or S3.

Ray Tune writes the experiment folder itself, through pyarrow.fs, on whichever node saves. tune-run's
own readers (resume, `ls`, `sync`, `report`, the summary at the end) read a local folder: for S3 that
is a copy under the cache folder (`TUNE_RUN_CACHE`, else `~/.cache/tune-run`) holding everything
but the checkpoints, refreshed from the bucket before each read (`pull`); the files tune-run writes
beside Ray's (settings, space file, done, driver) go back to the bucket as soon as they are written
(`push`). A checkpoint is fetched only when a model is loaded from it (`local_folder`).

The endpoint and credentials come from the environment, as every AWS tool reads them
(`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`, an instance
role, ...), on the driver and on every node; they are never flags, and never printed.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from urllib.parse import urlparse

from core.cache import cache_root
from search.errors import SpecError

REMOTE_SCHEMES = ("s3",)
CONNECT_TIMEOUT_S = 3.0
REQUEST_TIMEOUT_S = 10.0
CHECKPOINT_PREFIX = "checkpoint_"  # Ray's checkpoint folders: fetched only when a model is loaded


def is_remote(storage: str | Path) -> bool:
    """Whether `storage` is an object-store URI (s3://bucket/prefix) rather than a local folder."""
    return urlparse(str(storage)).scheme in REMOTE_SCHEMES and "://" in str(storage)


def tune_storage_path(storage: str | Path) -> str:
    """The `storage_path` Ray Tune is given: the URI as it is, or the local folder made absolute."""
    if is_remote(storage):
        return str(storage).rstrip("/")
    return str(Path(storage).resolve())


def experiment_uri(storage: str | Path, name: str) -> str:
    """Where Ray keeps the experiment `name`: s3://bucket/prefix/name, or an absolute local folder."""
    return f"{tune_storage_path(storage)}/{name}"


def local_root(storage: str | Path) -> Path:
    """The local folder whose subfolders are the searches: the storage folder itself, or for S3
    the local copy of the prefix (cache/s3/bucket/prefix)."""
    if not is_remote(storage):
        return Path(storage).resolve()
    parsed = urlparse(str(storage))
    return cache_root() / parsed.scheme / parsed.netloc / parsed.path.strip("/")


def filesystem(uri: str):
    """(pyarrow S3FileSystem, 'bucket/key') for an s3:// URI, with short timeouts and the endpoint
    from AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL (pyarrow's own constructor ignores them)."""
    from pyarrow import fs as pafs

    parsed = urlparse(uri)
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    options = {"connect_timeout": CONNECT_TIMEOUT_S, "request_timeout": REQUEST_TIMEOUT_S,
               "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=2)}
    if endpoint:
        endpoint_parsed = urlparse(endpoint)
        options["endpoint_override"] = endpoint_parsed.netloc or endpoint
        options["scheme"] = endpoint_parsed.scheme or "https"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        options["region"] = region
    return pafs.S3FileSystem(**options), f"{parsed.netloc}/{parsed.path.strip('/')}".rstrip("/")


def check(storage: str, flag: str = "--storage") -> str:
    """The bucket answers and exists; raises SpecError with one line otherwise."""
    from pyarrow import fs as pafs

    parsed = urlparse(storage)
    if not parsed.netloc:
        raise SpecError(f"{flag}: {storage!r} names no bucket; use s3://BUCKET/PREFIX")
    s3, _ = filesystem(storage)
    endpoint = _endpoint_text()
    try:
        info = s3.get_file_info(parsed.netloc)
    except OSError as e:
        raise SpecError(f"{flag}: {storage}: S3 at {endpoint} does not answer ({_reason(e)}); "
                        f"check AWS_ENDPOINT_URL and the network") from None
    if info.type != pafs.FileType.Directory:
        raise SpecError(f"{flag}: {storage}: no bucket {parsed.netloc!r} at {endpoint}; create it, "
                        f"or name one that exists")
    return f"S3 bucket {parsed.netloc!r} at {endpoint} answers"


def probe_write(storage: str, flag: str = "--storage") -> None:
    """Writes and deletes one object under the prefix: the credentials may write there."""
    s3, path = filesystem(storage)
    probe = f"{path}/.tune-run-probe-{uuid.uuid4().hex[:8]}"
    try:
        with s3.open_output_stream(probe) as f:
            f.write(b"probe")
        s3.delete_file(probe)
    except OSError as e:
        raise SpecError(f"{flag}: {storage}: cannot write there ({_reason(e)}); check the "
                        f"credentials (AWS_ACCESS_KEY_ID, ...) and the bucket's policy") from None


def _endpoint_text() -> str:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        return "AWS"
    from search.redact import redact

    return redact(endpoint)


def _reason(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    for marker in ("Details: ", "AWS Error "):
        if marker in text:
            text = text.split(marker, 1)[1]
    return text[:160]


def pull(storage: str | Path, name: str) -> Path:
    """The local folder of the search `name`: the experiment folder itself, or for S3 a fresh
    copy of it from the bucket, checkpoints left out (an empty folder if there is no such search).
    Raises SpecError (one line) when the bucket does not answer."""
    local = local_root(storage) / name
    if not is_remote(storage):
        return local
    check(str(storage))  # one line for an endpoint that does not answer or a missing bucket
    s3, path = filesystem(experiment_uri(storage, name))
    shutil.rmtree(local, ignore_errors=True)
    local.mkdir(parents=True, exist_ok=True)
    try:
        _download_tree(s3, path, local)
    except OSError as e:
        raise SpecError(f"--storage: {storage}: cannot read the search {name!r} ({_reason(e)})") \
            from None
    return local


def pull_all(storage: str | Path) -> Path:
    """The local folder whose subfolders are every search of `storage` (refreshed for S3)."""
    root = local_root(storage)
    if not is_remote(storage):
        return root
    from pyarrow import fs as pafs

    s3, path = filesystem(str(storage))
    try:
        found = s3.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except OSError as e:
        raise SpecError(f"--storage: {storage}: cannot list it ({_reason(e)})") from None
    names = [Path(info.path).name for info in found if info.type == pafs.FileType.Directory]
    if root.is_dir():
        for stale in root.iterdir():
            if stale.is_dir() and stale.name not in names:
                shutil.rmtree(stale, ignore_errors=True)
    for name in names:
        pull(storage, name)
    return root


def _download_tree(s3, path: str, local: Path) -> None:
    from pyarrow import fs as pafs

    for info in s3.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True)):
        relative = info.path[len(path):].lstrip("/")
        if info.type != pafs.FileType.File or _in_checkpoint(relative):
            continue
        target = local / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        with s3.open_input_stream(info.path) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
        if info.mtime is not None:  # `tune-run ls` shows the last activity in the bucket
            stamp = info.mtime.timestamp()
            os.utime(target, (stamp, stamp))


def _in_checkpoint(relative: str) -> bool:
    return any(part.startswith(CHECKPOINT_PREFIX) for part in Path(relative).parts[:-1])


def push(storage: str | Path, name: str, *relative: str) -> None:
    """Copies tune-run's files (or folders) `relative` of the local copy of search `name` to the
    bucket; nothing to do for a local folder."""
    if not is_remote(storage):
        return
    s3, path = filesystem(experiment_uri(storage, name))
    local = local_root(storage) / name
    for item in relative:
        source = local / item
        files = [p for p in source.rglob("*") if p.is_file()] if source.is_dir() else [source]
        for file in files:
            with open(file, "rb") as src, s3.open_output_stream(
                    f"{path}/{file.relative_to(local).as_posix()}") as dst:
                shutil.copyfileobj(src, dst)


def fetch(storage: str | Path, name: str, relative: str) -> bool:
    """Brings the one file `relative` of search `name` from the bucket into the local copy (a
    local folder: nothing to bring); whether it exists. Cheap enough to poll every few seconds."""
    local = local_root(storage) / name / relative
    if not is_remote(storage):
        return local.exists()
    s3, path = filesystem(experiment_uri(storage, name))
    try:
        with s3.open_input_stream(f"{path}/{relative}") as src:
            data = src.read()
    except (FileNotFoundError, OSError):
        return False
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(data)
    return True


def remove(storage: str | Path, name: str, relative: str) -> None:
    """Deletes the file `relative` of search `name` in the bucket (a local folder: nothing)."""
    if not is_remote(storage):
        return
    s3, path = filesystem(experiment_uri(storage, name))
    try:
        s3.delete_file(f"{path}/{relative}")
    except FileNotFoundError:
        pass


def checkpoint_location(checkpoint) -> str:
    """A Ray checkpoint's place as a string that outlives this process: its local folder, or its
    s3:// URI (Ray gives the bucket path without the scheme)."""
    from pyarrow import fs as pafs

    if isinstance(checkpoint.filesystem, pafs.S3FileSystem):
        return f"s3://{checkpoint.path}"
    return checkpoint.path


def local_folder(location: str) -> str:
    """A checkpoint folder on this machine: `location` itself, or for an s3:// URI its copy in the
    cache folder, downloaded once."""
    if not is_remote(location):
        return location
    parsed = urlparse(location)
    local = cache_root() / "checkpoints" / parsed.netloc / parsed.path.strip("/")
    if not local.is_dir():
        s3, path = filesystem(location)
        partial = local.with_name(f"{local.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        from pyarrow import fs as pafs

        for info in s3.get_file_info(pafs.FileSelector(path, recursive=True)):
            if info.type == pafs.FileType.File:
                target = partial / info.path[len(path):].lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                with s3.open_input_stream(info.path) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        partial.rename(local)
    return str(local)
