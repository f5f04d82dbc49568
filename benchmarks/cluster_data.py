"""How the decoded data set reaches the nodes of a Ray cluster: object-store bytes per node.

A cluster of a head and two workers (`ray start`, one CPU each, on this machine: tests/outside.py)
with S3 storage (moto on loopback) runs one tune-run search twice over the same image folder:

- shipped: the data set fits `data_share` of a node's object store, so the driver decodes it and
  puts it in the object store once; each node that runs trials should hold one copy, however many
  trials it runs;
- read by each node: `data_share` set so low that it does not fit; nothing should go through the
  object store, each trial's worker reads `data_dir` and decodes it (cached on disk per node).

While each search runs, the memory each node's object store holds is read every 0.3 s: the pages
allocated in its shared-memory file (/dev/shm/plasma*, through the raylet's mapping; root needed).
The object store starts from a fresh cluster for each mode; the peak per node is kept.

    .venv/bin/python benchmarks/cluster_data.py            # writes benchmarks/RESULTS-cluster-data.md
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import make_image_folder, write_space  # noqa: E402
from tests.outside import RayCluster, S3Server, tune_run  # noqa: E402

NUM_SAMPLES = 6
MAX_EPOCHS = 2
OUT = REPO / "benchmarks" / "RESULTS-cluster-data.md"


def plasma_bytes(raylet_pid: int) -> int:
    """Bytes of memory the node's object store holds: the pages allocated in its shared-memory
    file (/dev/shm/plasma*, unlinked; read through the raylet's mapping of it, as root)."""
    seen, total = set(), 0
    for line in Path(f"/proc/{raylet_pid}/maps").read_text().splitlines():
        if "/dev/shm/plasma" not in line:
            continue
        stat = os.stat(f"/proc/{raylet_pid}/map_files/{line.split()[0]}")
        if stat.st_ino not in seen:
            seen.add(stat.st_ino)
            total += stat.st_blocks * 512
    return total


def _poll_object_stores(cluster: RayCluster, stop: threading.Event, peaks: dict) -> None:
    """Peak object-store bytes per node id, every 0.3 s until `stop`."""
    raylets = {cluster.node_id(node): cluster.raylet_pid(node) for node in cluster.nodes}
    while not stop.is_set():
        for node, pid in raylets.items():
            try:
                peaks[node] = max(peaks.get(node, 0), plasma_bytes(pid))
            except OSError:
                pass
        time.sleep(0.3)


def _trials_per_node(db: Path, experiment: str) -> dict[str, int]:
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT n.value FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id "
            "JOIN tags n ON n.run_uuid = r.run_uuid AND n.key = 'tune_run.node' "
            "WHERE e.name = ?", (experiment,)).fetchall()
    counts: dict[str, int] = {}
    for (node,) in rows:
        counts[node] = counts.get(node, 0) + 1
    return counts


def run_one(cluster: RayCluster, s3: S3Server, work: Path, images: Path, name: str,
            data_share: float) -> dict:
    space = write_space(work / f"{name}.py", {
        "dataset": "imagefolder", "data_dir": str(images), "num_samples": NUM_SAMPLES,
        "max_epochs": MAX_EPOCHS, "scheduler": "fifo", "search": "random", "name": name,
        "experiment": name, "cpus_per_trial": 1, "data_share": data_share}, """
        "lr": tune.loguniform(1e-2, 1e-1),
        "width": 0.0625,
        "batch_size": 64,
    """)
    stop, peaks = threading.Event(), {}
    poller = threading.Thread(target=_poll_object_stores, args=(cluster, stop, peaks))
    poller.start()
    started = time.time()
    done = tune_run(str(space), "--address", cluster.address, "--storage",
                    f"s3://{s3.bucket(name)}/searches", "--tracking-uri",
                    f"sqlite:///{work}/mlflow.db", cwd=work, env=cluster.env_for_drivers)
    wall = time.time() - started
    stop.set()
    poller.join()
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return {"name": name, "data_share": data_share, "wall_s": round(wall, 1),
            "peak_object_store_bytes": peaks,
            "trials_per_node": _trials_per_node(work / "mlflow.db", name)}


def main() -> None:
    from core.data import load_dataset
    from trainables.data_source import dataset_bytes

    work = Path(tempfile.mkdtemp(prefix="tr-bench-"))
    images = make_image_folder(work / "images", classes=3, train_per_class=400, test_per_class=40,
                               size=32)
    data_bytes = dataset_bytes(load_dataset("imagefolder", str(images), cache_dir=str(work / "c")))
    s3 = S3Server(work)
    runs, store = [], 0
    try:
        for name, share in (("shipped", 0.25), ("each-node-reads", 1e-9)):
            cluster = RayCluster(work, s3.env, workers=2)
            try:
                store = min(n["Resources"]["object_store_memory"] for n in cluster.alive_nodes())
                runs.append(run_one(cluster, s3, work, images, name, share))
            finally:
                cluster.close()
    finally:
        s3.close()
    lines = [
        "# How the data set reaches the nodes (benchmarks/cluster_data.py)",
        "",
        f"Ray cluster of 3 nodes on one 2-core machine (`ray start`, 1 CPU and a "
        f"{store / 1e6:.0f} MB object store each), S3 storage on moto; {NUM_SAMPLES} trials x "
        f"{MAX_EPOCHS} epochs of ResNet-18 at width 1/16 on a 1,200-image 32x32 folder "
        f"(decoded: {data_bytes / 1e6:.2f} MB). Peak object-store bytes in use per node while "
        f"the search ran (pages of each node's /dev/shm/plasma file, every 0.3 s; a fresh "
        f"cluster per mode). Run on {time.strftime('%Y-%m-%d')}.",
        "",
        "| mode | data_share | node | trials | peak object store | peak / data set |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for run in runs:
        for node, peak in sorted(run["peak_object_store_bytes"].items()):
            lines.append(f"| {run['name']} | {run['data_share']:g} | {node[:8]} | "
                         f"{run['trials_per_node'].get(node, 0)} | {peak / 1e6:.2f} MB | "
                         f"{peak / data_bytes:.2f} |")
    lines += ["", "Wall time: " + ", ".join(f"{r['name']} {r['wall_s']:.0f} s" for r in runs), ""]
    OUT.write_text("\n".join(lines))
    (OUT.with_suffix(".json")).write_text(json.dumps({"data_bytes": data_bytes,
                                                      "object_store_bytes": store,
                                                      "runs": runs}, indent=2))
    print("\n".join(lines))
    import shutil

    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    main()
