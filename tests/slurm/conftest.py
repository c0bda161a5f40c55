"""The ``slurm_cluster`` fixture (one per test module): a real one-node SLURM cluster (see cluster.py).

Skipped when SLURM/munge are not installed or the tests do not run as root, unless
MEGATRON_SOTA_REQUIRE_SLURM=1 (CI), which turns that into a failure. Tests that use the fixture
get the ``slurm`` marker automatically.
"""

from __future__ import annotations

import atexit
import os
import signal
import tempfile
from pathlib import Path

import pytest

from tests.slurm.cluster import REQUIRE_ENV, SlurmCluster, missing_requirements, slurm_required


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "slurm_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slurm)


# Module scope: the cluster (and the SIGTERM handler below) lives only while a SLURM test module runs. A
# session-long handler was inherited by multiprocessing.Pool workers forked in later tests, and one such
# worker outlived Pool.terminate(), leaving the suite joining it forever. Starting a cluster takes ~1 s.
@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A started SlurmCluster; SLURM_CONF points at its slurm.conf for the test module."""
    reason = missing_requirements()
    if reason:
        if slurm_required():
            pytest.fail(f"{REQUIRE_ENV}=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    directory = tmp_path_factory.mktemp("slurm")
    if not SlurmCluster.paths_fit(directory):  # Unix socket paths are short (108 bytes)
        directory = Path(tempfile.mkdtemp(prefix="slurm-"))
    cluster = SlurmCluster(directory)
    # Should the finalizer below not run otherwise: at exit; and a SIGTERM (`timeout 900 pytest ...`),
    # which would leave the daemons behind, becomes a KeyboardInterrupt, like Ctrl-C, after which
    # pytest still tears the fixtures down.
    atexit.register(cluster.stop)
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
        raise KeyboardInterrupt("SIGTERM")

    if previous == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, on_sigterm)
    monkeypatch = pytest.MonkeyPatch()
    try:
        cluster.start()
        monkeypatch.setenv("SLURM_CONF", str(cluster.conf_path))
        yield cluster
    finally:
        monkeypatch.undo()
        # A SIGTERM during the stop waits for it, then takes its ordinary course.
        deferred: list[int] = []

        def defer(signum: int, frame: object) -> None:
            deferred.append(signum)

        if signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, defer)
        try:
            cluster.stop()
        finally:
            atexit.unregister(cluster.stop)
            if signal.getsignal(signal.SIGTERM) in (on_sigterm, defer):
                signal.signal(signal.SIGTERM, previous)
            if deferred:
                os.kill(os.getpid(), signal.SIGTERM)
