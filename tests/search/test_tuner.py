"""The local Ray that tune-run starts: no dashboard open beyond this machine."""

from __future__ import annotations

import os

import pytest
import ray

from search.tuner import start_ray

pytestmark = pytest.mark.slow


def test_local_ray_has_no_dashboard_beyond_loopback():
    assert not ray.is_initialized()
    context = start_ray(None)
    try:
        url = context.dashboard_url or ""
        assert url == "" or url.startswith(("127.0.0.1:", "localhost:")), url
        assert os.environ.get("RAY_AUTH_MODE", "token") != "disabled"  # Ray's token auth left on
    finally:
        ray.shutdown()
