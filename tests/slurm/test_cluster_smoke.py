"""The local SLURM cluster does what the sbatch-script tests rely on: srun tasks, requeue, signals."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.slurm.cluster import SlurmCluster, SlurmTimeout
from tests.slurm.processes import alive

pytestmark = pytest.mark.slurm


def _script(directory: Path, name: str, body: str) -> Path:
    path = directory / name
    path.write_text("#!/bin/bash\n" + body.lstrip())
    path.chmod(0o755)
    return path


def test_two_task_job_runs_srun_with_the_test_python(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    assert os.environ["SLURM_CONF"] == str(slurm_cluster.conf_path)
    sinfo = subprocess.run(["sinfo", "-h", "-o", "%D %c %T"], capture_output=True, text=True, check=True)
    assert sinfo.stdout.split() == ["1", str(os.cpu_count()), "idle"]

    script = _script(
        tmp_path,
        "tasks.sh",
        """
#SBATCH --ntasks=2
#SBATCH --job-name=smoke-tasks
set -euo pipefail
echo "args: $*"
srun python -c 'import os, sys; print("task", os.environ["SLURM_PROCID"], os.environ["SLURM_NTASKS"], sys.executable)'
""",
    )
    job = slurm_cluster.submit(script, ["a", "b"], sbatch_options=["--export=ALL"])
    info = slurm_cluster.wait(job, timeout=60)
    assert (info.state, info.exit_code) == ("COMPLETED", 0), slurm_cluster.diagnostics(job)
    out = info.output()
    assert "args: a b" in out
    tasks = sorted(line.split()[1:] for line in out.splitlines() if line.startswith("task "))
    python = os.path.realpath(sys.executable)
    assert [(procid, ntasks, os.path.realpath(exe)) for procid, ntasks, exe in tasks] == [
        ("0", "2", python),
        ("1", "2", python),
    ], out


def test_job_requeues_itself_from_inside(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    marker = tmp_path / "second_run"
    script = _script(
        tmp_path,
        "requeue.sh",
        f"""
echo "run restart_count=${{SLURM_RESTART_COUNT:-unset}}"
if [ "${{SLURM_RESTART_COUNT:-0}}" = 0 ]; then
    scontrol requeue "$SLURM_JOB_ID"
    echo "requeue exit status $?"
    exit 0
fi
echo "restarted $SLURM_RESTART_COUNT" > {marker}
""",
    )
    start = time.monotonic()
    job = slurm_cluster.submit(script)
    # The requeued job waits out requeue_delay + 1 s (Reason=BeginTime) before it runs again.
    pending = slurm_cluster.wait_for_state(job, "PENDING", timeout=30, min_restarts=1, poll=0.2)
    assert pending.restarts == 1
    info = slurm_cluster.wait(job, timeout=60, min_restarts=1)
    elapsed = time.monotonic() - start
    assert (info.state, info.exit_code, info.restarts) == ("COMPLETED", 0, 1), slurm_cluster.diagnostics(job)
    assert marker.read_text().strip() == "restarted 1"
    # Both runs' output is in the (append-mode) output file. The requeue cancels the running job at
    # once ("*** JOB n ON node CANCELLED ... DUE TO JOB REQUEUE ***" unless the script has already
    # exited): SIGTERM to the batch shell, which may or may not get to the echo, and its children.
    lines = info.output().splitlines()
    assert lines[0] == "run restart_count=unset" and lines[-1] == "run restart_count=1", lines
    assert elapsed < slurm_cluster.requeue_delay + 15


def test_usr1_reaches_the_batch_script_trap_while_it_waits(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    caught = tmp_path / "caught_usr1"
    script = _script(
        tmp_path,
        "trap.sh",
        f"""
trap 'echo "caught USR1"; touch {caught}; kill "$child"' USR1
python -c 'import time; time.sleep(120)' &
child=$!
echo ready
wait "$child"
echo "wait returned $?"
wait "$child"
echo "child exit status $?"
[ -e {caught} ]
""",
    )
    job = slurm_cluster.submit(script)
    slurm_cluster.wait_for_state(job, "RUNNING", timeout=30, poll=0.1)
    deadline = time.monotonic() + 30
    while "ready" not in (slurm_cluster.show_job(job).output()):
        assert time.monotonic() < deadline, slurm_cluster.diagnostics(job)
        time.sleep(0.1)
    sent = time.monotonic()
    slurm_cluster.signal_batch(job, "USR1")
    info = slurm_cluster.wait(job, timeout=30, poll=0.1)
    assert (info.state, info.exit_code) == ("COMPLETED", 0), slurm_cluster.diagnostics(job)
    assert caught.exists()
    out = info.output()
    assert "caught USR1" in out and "wait returned 138" in out, out  # 128 + SIGUSR1: the trap interrupted wait
    assert time.monotonic() - sent < 5


def test_wait_timeout_reports_logs(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    script = _script(tmp_path, "sleep.sh", "echo sleeping\nexec sleep 120\n")
    job = slurm_cluster.submit(script)
    try:
        with pytest.raises(SlurmTimeout) as raised:
            slurm_cluster.wait(job, timeout=1.5)
        message = str(raised.value)
        assert f"job {job} not in" in message
        assert "slurmctld.log" in message and "slurmd.log" in message
        assert f"JobId={job}" in message
    finally:
        slurm_cluster.cancel(job)
    info = slurm_cluster.wait(job, timeout=30)
    assert info.state == "CANCELLED"


def test_second_cluster_takes_other_ports_and_stops_only_its_own_daemons(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    directory = tempfile.mkdtemp(prefix="slurm-")  # short: Unix sockets live under it
    second = SlurmCluster(directory)
    with second:
        assert {second.ctld_port, second.slurmd_port}.isdisjoint({slurm_cluster.ctld_port, slurm_cluster.slurmd_port})
        assert second.munge_socket != slurm_cluster.munge_socket
        assert second.node_state() == "idle"
        pids = {daemon.name: daemon.process.pid for daemon in second._daemons}
        assert sorted(pids) == ["munged", "slurmctld", "slurmd"]
        for name, pid_file in [
            ("munged", second.munge_dir / "munged.pid"),
            ("slurmctld", second.ctld_pid_file),
            ("slurmd", second.slurmd_pid_file),
        ]:
            assert int(pid_file.read_text().split()[0]) == pids[name]
    assert not any(alive(pid) for pid in pids.values())
    # Stopping the second cluster (its munged included) leaves the session's cluster working.
    assert slurm_cluster.controller_answers()
    job = slurm_cluster.submit(_script(tmp_path, "hello.sh", "echo hello\n"))
    info = slurm_cluster.wait(job, timeout=30)
    assert (info.state, info.output().strip()) == ("COMPLETED", "hello"), slurm_cluster.diagnostics(job)
    shutil.rmtree(directory, ignore_errors=True)
