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

from search.spec import SpecError

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
    from search.storage import is_remote

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
