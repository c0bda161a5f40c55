"""Starts `megatron-sota-serve` on a checkpoint as a child process on 127.0.0.1 and stops it by pid (test helpers)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from typing import Iterator

import httpx

from megatron_sota.runtime.launch_env import free_port

START_TIMEOUT_S = 180.0
SERVED_NAME = "tiny"
"""The `model` the session's server answers to (tests/serving/conftest.py)."""


@contextlib.contextmanager
def model_server(checkpoint: str, name: str, *flags: str, tp: int = 1) -> Iterator[str]:
    """The server's base URL (http://127.0.0.1:<port>) while it runs (`tp` > 1: under torchrun, one rank per shard);
    its output is in the error if it fails to start."""
    port = free_port()
    log = open(os.path.join(os.path.dirname(checkpoint), f"server_{port}.log"), "w+")
    launcher = [sys.executable]
    if tp > 1:
        launcher += ["-m", "torch.distributed.run", "--nproc-per-node", str(tp), "--master-port", str(free_port())]
    command = [*launcher, "-m", "megatron_sota.serving.cli", "--load", checkpoint, "--port", str(port),
               "--served-model-name", name, *flags]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"the server exited with {process.returncode}:\n{log.read()}")
            try:
                if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer /health within {START_TIMEOUT_S:.0f} s")
            time.sleep(0.25)
        yield url
    finally:
        stop_process(process, 30)
        log.close()


def stop_process(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM, then SIGKILL if it is still there after `timeout` seconds; reaped either way."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
