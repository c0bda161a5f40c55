"""A real redis-server for the gateway's tests: started on a free 127.0.0.1 port with no persistence, stopped by pid.

Skips the test when Debian's redis-server is missing, unless MEGATRON_SOTA_REQUIRE_REDIS=1 (then it fails).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time

import pytest

from megatron_sota.runtime.launch_env import free_port
from tests.serving.model_server import stop_process


@contextlib.contextmanager
def running_redis(directory):
    """Yields redis://127.0.0.1:<port>/0 while a redis-server runs with `directory` as its working directory."""
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server not installed (Debian package redis-server)"
        if os.environ.get("MEGATRON_SOTA_REQUIRE_REDIS") == "1":
            pytest.fail(message + ", and MEGATRON_SOTA_REQUIRE_REDIS=1")
        pytest.skip(message)
    import redis

    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {port} did not start (exit code {process.poll()})") from None
                time.sleep(0.02)
        client.close()
        yield url
    finally:
        stop_process(process, 10)
