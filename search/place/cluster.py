"""The Ray cluster a search runs on: its nodes, and whether they all see the storage.

On a cluster every node saves its trials' checkpoints to the storage itself, so a local folder that
only the driver's machine has fails deep into the search, when a remote node first saves. This
module refuses it up front: the driver writes a probe file into the folder and a task pinned to each
node reads it back.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import ray

from search.errors import SpecError

PROBE_TIMEOUT_S = 60.0


def alive_nodes() -> list[dict]:
    """Ray's records of the nodes that are alive."""
    return [n for n in ray.nodes() if n.get("Alive")]


@ray.remote(num_cpus=0, max_retries=0)
def _read_probe(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def check_shared_storage(storage: str | Path) -> str:
    """Raises SpecError (one line) if a node of a multi-node cluster cannot see the local storage
    folder; returns what was checked. One node, or S3 storage: nothing to check.

    The probe goes into the storage folder or, if it does not exist yet, its nearest existing
    parent (so a refused search leaves nothing behind), and is removed again."""
    from search.place.storage import is_remote

    nodes = alive_nodes()
    if is_remote(storage) or len(nodes) <= 1:
        return f"{len(nodes)} node(s); nothing to share" if len(nodes) <= 1 else "S3 storage"
    folder = Path(storage).resolve()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    token = uuid.uuid4().hex
    probe = existing / f".tune-run-shared-{token[:8]}"
    probe.write_text(token)
    try:
        refs = [_read_probe.options(scheduling_strategy=ray.util.scheduling_strategies
                                    .NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(str(probe)) for n in nodes]
        seen = ray.get(refs, timeout=PROBE_TIMEOUT_S)
    finally:
        probe.unlink(missing_ok=True)
    blind = [n for n, text in zip(nodes, seen) if text != token]
    if blind:
        names = ", ".join(f"{n['NodeManagerAddress']} ({n['NodeID'][:8]})" for n in blind[:3])
        raise SpecError(
            f"--storage: {folder} is not shared: {len(blind)} of the cluster's {len(nodes)} nodes "
            f"cannot see it ({names}); on a cluster use s3://bucket/prefix (endpoint and "
            f"credentials from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...) or a folder mounted on "
            f"every node (NFS)")
    return f"every one of the {len(nodes)} nodes sees {folder}"


def object_store_bytes() -> int:
    """The object store of the smallest alive node, in bytes (what one node can hold)."""
    stores = [n["Resources"].get("object_store_memory", 0) for n in alive_nodes()]
    return int(min(stores)) if stores else 0


def data_source(spec, data):
    """None when the decoded data set fits `data_share` of the smallest node's object store (the
    driver ships it, each node pulls one copy); else the DataSource each node reads and decodes
    itself from `data_dir`."""
    from trainables.data_source import DataSource, dataset_bytes

    if dataset_bytes(data) <= spec.data_share * object_store_bytes():
        return None
    return DataSource(spec.dataset, spec.data_dir, spec.val_fraction, spec.subset, spec.seed,
                      spec.image_size, **spec.data_options)


@ray.remote(num_cpus=0, max_retries=0)
def _check_data_here(name: str, data_dir: str | None, options: dict) -> str | None:
    from core.data import DataError, check_data_folder

    try:
        check_data_folder(name, data_dir, **options)
    except DataError as e:
        return str(e)
    return None


def check_data_reachable(spec, data) -> str:
    """When the data set is too big to ship (see `data_source`), every node must read `data_dir`
    itself: raises SpecError (one line) naming a node that cannot; returns what was decided."""
    from trainables.data_source import dataset_bytes

    size, limit = dataset_bytes(data), spec.data_share * object_store_bytes()
    if data_source(spec, data) is None:
        return f"the driver ships the data set ({size / 2**20:.1f} MiB <= {limit / 2**20:.0f} MiB)"
    nodes = alive_nodes()
    refs = [_check_data_here.options(scheduling_strategy=ray.util.scheduling_strategies
                                     .NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote(spec.dataset, spec.data_dir, spec.data_options) for n in nodes]
    problems = ray.get(refs, timeout=PROBE_TIMEOUT_S)
    for node, problem in zip(nodes, problems):
        if problem:
            raise SpecError(
                f"data_dir: the data set ({size / 2**20:.0f} MiB decoded) is more than data_share "
                f"{spec.data_share:g} of a node's object store ({limit / 2**20:.0f} MiB), so each "
                f"node reads it itself, but node {node['NodeManagerAddress']} "
                f"({node['NodeID'][:8]}) cannot: {problem}; put it where every node can read it, "
                f"or raise data_share")
    return f"each of the {len(nodes)} nodes reads the data set from data_dir ({size / 2**20:.0f} MiB)"
