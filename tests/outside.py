"""Outside systems for the cluster tests, started on this machine on loopback by the tests and
stopped by their own PIDs: an S3 server (moto's server mode, as Ray's own storage tests use), a Ray
cluster of a head and worker nodes (`ray start`, as a user starts one, each node with its own ports
and one CPU), and a throwaway PostgreSQL cluster (Debian's binaries).

Each is shared by a session-scoped fixture (registered in tests/conftest.py): starting them costs
seconds each, and the suite's budget is minutes. None leaves Ray's address file
(`ray_current_cluster`) in the machine's /tmp/ray: every Ray process gets its own temp folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent
POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """`n` distinct free ports (all held open while they are picked, so none repeats)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def wait_for_port(port: int, timeout_s: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s:g} s")


def stop(proc: subprocess.Popen, timeout_s: float = 20.0) -> None:
    """Stops a process this module started, and its process group, by PID."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout_s)
    except ProcessLookupError:
        pass


class S3Server:
    """moto's S3 server on a loopback port; `env` holds the AWS variables that point at it."""

    def __init__(self, folder: Path):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = open(folder / "moto.log", "w")
        self.proc = subprocess.Popen([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p",
                                      str(self.port)], stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        wait_for_port(self.port, proc=self.proc)
        self.env = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing-secret", "AWS_DEFAULT_REGION": "us-east-1"}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="testing",
                            aws_secret_access_key="testing-secret", region_name="us-east-1")

    def bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def close(self) -> None:
        stop(self.proc)
        self.log.close()


class RayCluster:
    """A head and worker nodes started with `ray start`, as on a real cluster, each with one CPU.

    `hidden` is a folder that one worker node (started in its own mount namespace, with an empty
    tmpfs over that folder) cannot see: a node of another machine, for the shared-storage check.
    """

    def __init__(self, folder: Path, env: dict[str, str], workers: int = 2,
                 hidden: Path | None = None):
        # Short paths: Ray's sockets live under its temp folder (at most 107 characters).
        self.temp = Path(tempfile.mkdtemp(prefix="tr-ray-", dir="/tmp"))
        self.env = os.environ | env | {
            "RAY_TMPDIR": str(self.temp), "TMPDIR": str(self.temp),
            # A dead node is seen in seconds, not the default half a minute.
            "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
            "RAY_health_check_initial_delay_ms": "1000", "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_raylet_start_wait_time_s": "120",  # 2 busy cores: a node may take a while
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "1",  # nothing to drain when a test ends
            # Token authentication, as on a real cluster, with this cluster's own token (not
            # whatever ~/.ray/auth_token holds); the drivers get it through `env` too.
            "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex,
        }
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.logs = folder
        self.nodes: list[subprocess.Popen] = []
        try:
            self._start("head", ["--head", f"--port={self.port}", "--include-dashboard=false",
                                 f"--temp-dir={self.temp}"])
            wait_for_port(self.port, proc=self.nodes[0])
            for i in range(workers):  # one at a time: two joining at once timed out here
                self.add_worker(hide=hidden if i == workers - 1 else None)
                self.wait_for_nodes(2 + i)
        except BaseException:
            self.close()
            raise

    def _start(self, name: str, args: list[str], hide: Path | None = None) -> subprocess.Popen:
        # Ports of a node's own that Ray fixes by default (its agents' 52365, 8085, ...): nodes on
        # one machine must not share them, as ray.cluster_utils also avoids. The rest are random.
        agent, agent_grpc, runtime_env, metrics = free_ports(4)
        command = [str(VENV_BIN / "ray"), "start", *args, "--num-cpus=1", "--num-gpus=0",
                   "--object-store-memory=100000000", "--min-worker-port=0", "--max-worker-port=0",
                   f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
                   f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}",
                   "--disable-usage-stats", "--block"]
        if hide is not None:
            hide.mkdir(parents=True, exist_ok=True)
            inner = " ".join(f"'{a}'" for a in command)
            command = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                       f"mount -t tmpfs tmpfs '{hide}' && exec {inner}"]
        log = open(self.logs / f"ray-{name}.log", "w")
        proc = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.nodes.append(proc)
        return proc

    def add_worker(self, hide: Path | None = None) -> subprocess.Popen:
        return self._start(f"worker{len(self.nodes)}", [f"--address={self.address}"], hide)

    @property
    def env_for_drivers(self) -> dict[str, str]:
        """What a driver (tune-run --address) needs: the cluster's token, AWS variables, temp folder."""
        return {k: v for k, v in self.env.items()
                if k.startswith(("AWS_", "RAY_AUTH_", "RAY_TMPDIR")) or k == "TMPDIR"}

    def node_id(self, node: subprocess.Popen) -> str:
        """The Ray node id of the node that `ray start` process `node` started."""
        args = Path(f"/proc/{self.raylet_pid(node)}/cmdline").read_text().split("\0")
        return next(a.split("=", 1)[1] for a in args if a.startswith("--node_id="))

    def stop_node(self, node: subprocess.Popen) -> None:
        """Stops a node this cluster started (what is left of it after a test killed its raylet)."""
        stop(node)
        self.nodes.remove(node)

    def alive_nodes(self) -> list[dict]:
        """Ray's records of the alive nodes, read by a short-lived process of its own (the test
        process stays out of Ray)."""
        import json

        code = ("import json, ray; ray.init(address=%r, logging_level='ERROR', "
                "log_to_driver=False); print(json.dumps([n for n in ray.nodes() if n['Alive']]))"
                % self.address)
        done = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True,
                              text=True, timeout=60)
        if done.returncode:
            raise RuntimeError(f"cannot read the cluster's nodes: {done.stderr[-2000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def wait_for_nodes(self, count: int, timeout_s: float = 150.0) -> list[dict]:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            nodes = self.alive_nodes()
            if len(nodes) == count:
                return nodes
            time.sleep(1)
        raise TimeoutError(f"the cluster has {len(nodes)} alive nodes, not {count}")

    def raylet_pid(self, node: subprocess.Popen) -> int:
        """The PID of the raylet of the node that `ray start` process `node` started (the raylet
        stays in the session `ray start` began: its PID is the session's id)."""
        deadline = time.time() + 30
        while time.time() < deadline:
            for stat in Path("/proc").glob("[0-9]*/stat"):
                try:
                    text = stat.read_text()
                except OSError:
                    continue
                comm, rest = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:]
                if comm == "raylet" and int(rest.split()[3]) == node.pid:  # field 6: session id
                    return int(stat.parent.name)
            time.sleep(0.5)
        raise RuntimeError(f"no raylet in the session of {node.pid}")

    def close(self) -> None:
        for proc in self.nodes:  # all at once: each node drains for a while on SIGTERM
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in reversed(self.nodes):
            stop(proc)
        shutil.rmtree(self.temp, ignore_errors=True)


class Postgres:
    """A throwaway PostgreSQL cluster on a loopback port, in a temp folder, owned by `postgres`
    when the tests run as root (PostgreSQL refuses to run as root)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.data = folder / "pgdata"
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            shutil.chown(folder, self.user)
        self._run([str(POSTGRES_BIN / "initdb"), "-D", str(self.data), "-U", "tune",
                   "--auth=trust", "-E", "UTF8"])
        log = folder / "postgres.log"
        self.proc = subprocess.Popen(
            self._wrap([str(POSTGRES_BIN / "postgres"), "-D", str(self.data), "-p", str(self.port),
                        "-h", "127.0.0.1", "-k", str(folder)]),
            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_port(self.port, proc=self.proc)

    def _wrap(self, command: list[str]) -> list[str]:
        return ["runuser", "-u", self.user, "--", *command] if self.user else command

    def _run(self, command: list[str]) -> None:
        subprocess.run(self._wrap(command), check=True, capture_output=True, timeout=120)

    def database(self, name: str) -> str:
        """Creates database `name`; returns its SQLAlchemy URI."""
        import psycopg2

        con = psycopg2.connect(host="127.0.0.1", port=self.port, user="tune", dbname="postgres")
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        con.close()
        return f"postgresql+psycopg2://tune@127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        stop(self.proc)
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("s3"))
    yield server
    server.close()


# Module scope: only tests/search/test_cluster.py uses them, and a cluster left up for the rest of
# the session holds memory and runs its own processes beside every later test's local Ray.
@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory, s3_server):
    """A head and two workers; the second worker cannot see `cluster.hidden` (another machine's
    disk, for the shared-storage check). Every node has the S3 server's AWS variables."""
    folder = tmp_path_factory.mktemp("cluster")
    hidden = Path(tempfile.mkdtemp(prefix="tr-local-only-", dir="/tmp"))
    cluster = RayCluster(folder, s3_server.env, workers=2, hidden=hidden)
    cluster.hidden = hidden
    yield cluster
    cluster.close()
    shutil.rmtree(hidden, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    if not (POSTGRES_BIN / "postgres").exists():
        pytest.skip(f"PostgreSQL binaries not in {POSTGRES_BIN}")
    server = Postgres(Path(tempfile.mkdtemp(prefix="tr-pg-", dir="/tmp")))
    yield server
    server.close()


def tune_run(*args: str, cwd: Path, env: dict[str, str], timeout_s: float = 600,
             wait: bool = True) -> subprocess.CompletedProcess | subprocess.Popen:
    """`tune-run ARGS` in a process of its own (its own process group, so a test can kill it and
    the local Ray it starts), with `env` over a minimal environment."""
    from tests.conftest import REPO

    full = {"PYTHONPATH": str(REPO), "PATH": os.environ["PATH"], "HOME": str(cwd),
            "TUNE_RUN_TEST_FAULTS": "1", "TUNE_RUN_CACHE": str(cwd / "cache")} | env
    proc = subprocess.Popen([sys.executable, "-m", "search.cli", *args], cwd=cwd, env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    if not wait:
        return proc
    try:
        out, err = proc.communicate(timeout=timeout_s)
    finally:
        kill_group(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILLs what is left of a tune-run process group (its local Ray), by the group's id."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
