"""The ``slurm_cluster`` fixture (one for the tests/slurm package): a real one-node SLURM cluster (see cluster.py).

Skipped when SLURM/munge are not installed or the tests do not run as root, unless
MEGATRON_SOTA_REQUIRE_SLURM=1 (CI), which turns that into a failure. Tests that use the fixture
get the ``slurm`` marker automatically.
"""

from __future__ import annotations

import atexit
import tempfile
from pathlib import Path

import pytest

from tests.slurm.cluster import REQUIRE_ENV, SlurmCluster, missing_requirements, slurm_required
from tests.slurm.sigterm import interrupted_by_sigterm


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "slurm_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slurm)


# Package scope: one cluster for every module of tests/slurm, stopped (and its SIGTERM handler removed, see
# sigterm.py) when the last of them has run, before any later test forks pool workers.
@pytest.fixture(scope="package")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A started SlurmCluster; SLURM_CONF points at its slurm.conf while tests/slurm runs."""
    reason = missing_requirements()
    if reason:
        if slurm_required():
            pytest.fail(f"{REQUIRE_ENV}=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    directory = tmp_path_factory.mktemp("slurm")
    if not SlurmCluster.paths_fit(directory):  # Unix socket paths are short (108 bytes)
        directory = Path(tempfile.mkdtemp(prefix="slurm-"))
    cluster = SlurmCluster(directory)
    # Should the finalizer below not run otherwise: at exit (and a SIGTERM interrupts like Ctrl-C, after which
    # pytest still tears the fixtures down).
    atexit.register(cluster.stop)
    monkeypatch = pytest.MonkeyPatch()

    def stop() -> None:
        monkeypatch.undo()
        try:
            cluster.stop()
        finally:
            atexit.unregister(cluster.stop)

    with interrupted_by_sigterm(stop):
        cluster.start()
        monkeypatch.setenv("SLURM_CONF", str(cluster.conf_path))
        yield cluster
