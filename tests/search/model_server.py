"""A real `mlflow models serve` of a logged model, on loopback, stopped by its process group."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(model_uri: str, tracking_uri: str, log_file: Path,
            env: dict[str, str] | None = None) -> Iterator[str]:
    """Yields the URL of a fresh `mlflow models serve` process of `model_uri` once it answers
    /ping. `env`: the server's environment over this one (a PYTHONPATH without the user's files)."""
    port, log = free_port(), open(log_file, "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri,
         "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
        env=os.environ | {"MLFLOW_TRACKING_URI": tracking_uri,  # uvicorn: beside this Python
                          "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        | (env or {}),
        stdout=log, stderr=log,
        start_new_session=True,  # its workers share its process group: stopped with it below
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, log_file.read_text()[-2000:]
            try:
                if requests.get(f"http://127.0.0.1:{port}/ping", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the model server did not start in 120 s"
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def ask(url: str, images: np.ndarray) -> requests.Response:
    """POSTs uint8 (N, H, W, C) images to the server's /invocations."""
    return requests.post(f"{url}/invocations", timeout=60,
                         data=json.dumps({"inputs": images.tolist()}),
                         headers={"Content-Type": "application/json"})
