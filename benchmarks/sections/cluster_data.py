"""Section `cluster-data`: how the decoded data set reaches the nodes of a Ray cluster, in
object-store bytes per node. Writes RESULTS-cluster-data.md.

A cluster of a head and two workers on this machine (Ray's own `ray.cluster_utils.Cluster`, one CPU
and a 100 MB object store each) runs one tune-run search twice over the same image folder:

- shipped: the data set fits `data_share` of a node's object store, so the driver decodes it and
  puts it in the object store once; each node that runs trials should hold one copy, however many
  trials it runs;
- read by each node: `data_share` set so low that it does not fit; nothing should go through the
  object store, each trial's worker reads `data_dir` and decodes it (cached on disk per node).

While each search runs, the memory each node's object store holds is read every 0.3 s: the pages
allocated in its shared-memory file (/dev/shm/plasma*, through the raylet's mapping; root needed).
Each mode gets a fresh cluster; the peak per node is kept. The images are the first of each of 3
classes of benchmarks/data/cifar10-subset.npz, written as PNG files.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.harness import (
    HERE,
    Context,
    Report,
    Section,
    Skipped,
    Table,
    Target,
    run_tune_run,
    write_space,
)

RESULTS = "RESULTS-cluster-data.md"
NODES = 3  # the head and two workers
OBJECT_STORE_BYTES = 100_000_000

ONE_COPY_PER_NODE = Target("shipped: each node's object store holds the data set once (peak / data "
                           "set <= 1.1), however many trials it runs", "<=", 1.1)
NOTHING_SHIPPED = Target("read by each node: the object stores hold none of it (peak / data set "
                         "< 0.1)", "<", 0.1)


@dataclass(frozen=True)
class Sizes:
    num_samples: int
    max_epochs: int
    train_per_class: int  # of 3 classes
    test_per_class: int


FULL = Sizes(num_samples=6, max_epochs=2, train_per_class=400, test_per_class=40)
QUICK = Sizes(num_samples=3, max_epochs=1, train_per_class=40, test_per_class=8)
MODES = (("shipped", 0.25), ("each-node-reads", 1e-9))


def image_folder(root: Path, sizes: Sizes, classes: int = 3) -> Path:
    """train/<class>/*.png and test/<class>/*.png from the carried CIFAR-10 subset."""
    import numpy as np
    from PIL import Image

    with np.load(HERE / "data" / "cifar10-subset.npz") as z:
        splits = {"train": (z["x_train"], z["y_train"], sizes.train_per_class),
                  "test": (z["x_test"], z["y_test"], sizes.test_per_class)}
        names = [str(c) for c in z["classes"]][:classes]
        for split, (x, y, n) in splits.items():
            for label, name in enumerate(names):
                folder = root / split / name
                folder.mkdir(parents=True, exist_ok=True)
                for i, row in enumerate(np.flatnonzero(y == label)[:n]):
                    Image.fromarray(x[row].transpose(1, 2, 0)).save(folder / f"{i}.png")
    return root


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


def _poll_object_stores(raylets: dict[str, int], stop: threading.Event, peaks: dict) -> None:
    """Peak object-store bytes per node id, every 0.3 s until `stop`."""
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


def _cluster():
    """A head and two workers, one CPU each, in Ray's temp folder of this section's own."""
    from ray import ray_constants
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "object_store_memory": OBJECT_STORE_BYTES, "include_dashboard": False})
    for _ in range(NODES - 1):
        cluster.add_node(num_cpus=1, object_store_memory=OBJECT_STORE_BYTES)
    cluster.wait_for_nodes()
    raylets = {node.node_id: node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
               for node in cluster.list_all_nodes()}
    return cluster, raylets


def run_one(ctx: Context, images: Path, name: str, data_share: float, env: dict) -> dict:
    sizes: Sizes = ctx.sizes
    space = write_space(ctx.work / f"{name}.py", {
        "dataset": "imagefolder", "data_dir": str(images), "num_samples": sizes.num_samples,
        "max_epochs": sizes.max_epochs, "scheduler": "fifo", "search": "random", "name": name,
        "experiment": name, "cpus_per_trial": 1, "data_share": data_share}, """
        "lr": tune.loguniform(1e-2, 1e-1),
        "width": 0.0625,
        "batch_size": 64,
    """)
    cluster, raylets = _cluster()
    stop, peaks = threading.Event(), {}
    poller = threading.Thread(target=_poll_object_stores, args=(raylets, stop, peaks))
    poller.start()
    try:
        wall = run_tune_run(ctx.work, str(space), "--address", cluster.address, env=env,
                            storage=str(ctx.work / "results" / name))
    finally:
        stop.set()
        poller.join()
        cluster.shutdown()
    return {"name": name, "data_share": data_share, "wall_s": round(wall, 1),
            "peak_object_store_bytes": peaks,
            "trials_per_node": _trials_per_node(ctx.work / "mlflow.db", name)}


def run_cluster_data(ctx: Context) -> dict:
    if os.geteuid() != 0:
        raise Skipped("reading another process's /proc/PID/map_files needs root")
    from core.data import load_dataset
    from trainables.data_source import dataset_bytes

    images = image_folder(ctx.work / "images", ctx.sizes)
    data_bytes = dataset_bytes(load_dataset("imagefolder", str(images), cache_dir=str(ctx.work / "c")))
    # Ray's address file and sockets in a temp folder of this section's own (short: sockets live
    # under it), so no other Ray on this machine finds this cluster, for this process and tune-run's.
    temp = tempfile.mkdtemp(prefix="tr-ray-", dir="/tmp")
    env = {"RAY_TMPDIR": temp, "TMPDIR": temp, "RAY_USAGE_STATS_ENABLED": "0"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        runs = [run_one(ctx, images, name, share, env) for name, share in MODES]
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(temp, ignore_errors=True)
    return {"data_bytes": data_bytes, "object_store_bytes": OBJECT_STORE_BYTES, "runs": runs,
            "images": sum(1 for _ in images.glob("train/*/*.png")), "sizes": vars(ctx.sizes)}


def report_cluster_data(r: dict) -> Report:
    c = r["cluster-data"]
    data_bytes = c["data_bytes"]
    rows, worst = [], {}
    for run in c["runs"]:
        for node, peak in sorted(run["peak_object_store_bytes"].items()):
            rows.append([run["name"], f"{run['data_share']:g}", node[:8],
                         run["trials_per_node"].get(node, 0), f"{peak / 1e6:.2f} MB",
                         f"{peak / data_bytes:.2f}"])
        peaks = run["peak_object_store_bytes"].values()
        worst[run["name"]] = max(peaks) / data_bytes if peaks else None
    sizes = c["sizes"]
    return Report("How the data set reaches the nodes", [
        f"Ray cluster of {NODES} nodes on this machine (`ray.cluster_utils.Cluster`, 1 CPU and a "
        f"{c['object_store_bytes'] / 1e6:.0f} MB object store each); {sizes['num_samples']} trials x "
        f"{sizes['max_epochs']} epochs of ResNet-18 at width 1/16 on a {c['images']:,}-image 32x32 "
        f"folder (decoded: {data_bytes / 1e6:.2f} MB). Peak object-store bytes in use per node while "
        "the search ran (pages of each node's /dev/shm/plasma file, every 0.3 s; a fresh cluster per "
        "mode).",
        Table(["mode", "data_share", "node", "trials", "peak object store", "peak / data set"], rows),
        "Wall time: " + ", ".join(f"{run['name']} {run['wall_s']:.0f} s" for run in c["runs"])],
        [ONE_COPY_PER_NODE.check(worst.get("shipped"), _ratio(worst.get("shipped"))),
         NOTHING_SHIPPED.check(worst.get("each-node-reads"), _ratio(worst.get("each-node-reads")))])


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f} at most"


SECTIONS = (
    Section("cluster-data", "object-store bytes per node of a 3-node Ray cluster, data set shipped "
            "or read by each node", RESULTS, run_cluster_data, report_cluster_data,
            (ONE_COPY_PER_NODE, NOTHING_SHIPPED), FULL, QUICK, default=False),
)
