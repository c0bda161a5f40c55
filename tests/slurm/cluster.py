"""A real single-node SLURM cluster for tests: slurm.conf in a private directory, daemons started by hand.

Everything the cluster writes (slurm.conf, controller state, slurmd spool, logs, pid files, job
output) lives under one directory; the daemons and the client commands find the configuration
through the ``SLURM_CONF`` environment variable, so /etc/slurm is never read or written. Each
cluster runs its own munged too, with a fresh key and its socket in that directory (slurm.conf's
``AuthInfo=socket=``), so neither /etc/munge, /run/munge nor a system munged is touched, and two
clusters (two test sessions) cannot stop each other's munged.

Daemons run in the foreground as children of this process (``-D``/``-F``), so they can be reaped;
``stop()`` cancels the cluster's jobs, then signals exactly the daemons this object started (the pid
in each pid file, which is the child's pid), SIGTERM and, after a few seconds, SIGKILL, and last
any slurmstepd of this cluster (found by the SLURM_CONF in its environment) still alive, with its
processes.

See docs/slurm.md ("The one-node cluster on the development machines") for the behaviour observed
on the project's machines. Typical use (the ``slurm_cluster`` fixture in conftest.py does this)::

    cluster = SlurmCluster(directory)
    cluster.start()
    job = cluster.submit("job.sh", ["arg"], sbatch_options=["--ntasks=2"])
    info = cluster.wait(job, timeout=60)
    assert info.state == "COMPLETED" and info.exit_code == 0, cluster.diagnostics(job)
    cluster.stop()
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from tests.slurm.job_records import TERMINAL_STATES, JobInfo, job_info, parse_scontrol_line, read_text, tail_text
from tests.slurm.processes import (
    Daemon,
    SlurmError,
    available_memory_mib,
    child_pids,
    free_ports,
    kill_all,
    process_environment,
    read_pid,
    slurm_processes,
)

REQUIRE_ENV = "MEGATRON_SOTA_REQUIRE_SLURM"
"""Set to 1 (CI does) to make a missing SLURM fail the slurm tests instead of skipping them."""

REPO_ROOT = Path(__file__).resolve().parents[2]


_REQUIRED_PROGRAMS = (
    "sbatch", "srun", "scontrol", "squeue", "sinfo", "scancel", "slurmctld", "slurmd", "slurmstepd", "munged"
)
_SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")




class SlurmTimeout(AssertionError):
    """A job did not reach the awaited state in time; the message carries the logs."""


def find_program(name: str) -> str | None:
    """The path of a SLURM/munge program; daemons live in sbin, which a non-login PATH may lack."""
    found = shutil.which(name)
    if found:
        return found
    for directory in _SBIN:
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def missing_requirements() -> str | None:
    """Why a cluster cannot be started here (programs not installed, not root), or None."""
    missing = [name for name in _REQUIRED_PROGRAMS if find_program(name) is None]
    if missing:
        return f"SLURM/munge not installed (missing {', '.join(missing)}; apt-get install -y slurm-wlm munge)"
    if os.geteuid() != 0:
        return "starting slurmctld/slurmd/munged needs root"
    return None


def slurm_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")



def _sbatch_directives(script: str | os.PathLike) -> list[str]:
    """The options of a batch script's ``#SBATCH`` lines (those before its first command)."""
    options: list[str] = []
    try:
        lines = Path(script).read_text(errors="replace").splitlines()
    except OSError:
        return options
    for line in lines[1:] if lines and lines[0].startswith("#!") else lines:
        stripped = line.strip()
        if stripped.startswith("#SBATCH"):
            options.extend(stripped[len("#SBATCH") :].split("#")[0].split())
        elif stripped and not stripped.startswith("#"):
            break
    return options


def _has_option(options: Sequence[str], long: str, short: str | None = None) -> bool:
    for option in options:
        if option == long or option.startswith(long + "="):
            return True
        if short and option.startswith(short):
            return True
    return False




class SlurmCluster:
    """A one-node SLURM cluster whose configuration, state and logs live under ``directory``.

    cpus: the node's CPUs (default os.cpu_count()). kill_wait: seconds between SIGTERM and SIGKILL
    when a job is cancelled, requeued or times out. requeue_delay: AuthInfo=cred_expire, how long a
    requeued job waits before it may run again (+1 s; SLURM's minimum is 5, its default 120).
    extra_config: more slurm.conf lines.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        cpus: int | None = None,
        kill_wait: int = 10,
        requeue_delay: int = 5,
        partition: str = "debug",
        extra_config: Sequence[str] = (),
    ) -> None:
        self.dir = Path(directory).resolve()
        self.node = socket.gethostname().split(".")[0]
        self.cpus = cpus or os.cpu_count() or 1
        self.kill_wait = kill_wait
        self.partition = partition
        self.extra_config = tuple(extra_config)
        if requeue_delay < 5:
            raise ValueError("SLURM rejects AuthInfo=cred_expire below 5 (and then uses 120)")
        self.requeue_delay = requeue_delay
        self.conf_path = self.dir / "slurm.conf"
        self.state_dir = self.dir / "state"
        self.spool_dir = self.dir / "spool"
        self.log_dir = self.dir / "log"
        self.job_dir = self.dir / "jobs"
        """Default place of job output files (slurm-<id>.out), so that nothing lands in the repo."""
        self.ctld_log = self.log_dir / "slurmctld.log"
        self.slurmd_log = self.log_dir / "slurmd.log"
        self.ctld_pid_file = self.dir / "slurmctld.pid"
        self.slurmd_pid_file = self.dir / "slurmd.pid"
        self.munge_dir = self.dir / "munge"
        self.munge_socket = self.munge_dir / "munge.socket"
        self.ctld_port: int | None = None
        self.slurmd_port: int | None = None
        self._daemons: list[Daemon] = []
        self.started = False
        self.start_seconds: float | None = None

    # ----------------------------------------------------------------------------- configuration

    @staticmethod
    def paths_fit(directory: str | os.PathLike) -> bool:
        """Whether the Unix sockets under ``directory`` fit in 107 bytes: munged's, and slurmd's step
        sockets <dir>/spool/<node>_<job id>.<step id> (ids up to 10 digits each)."""
        root = len(str(Path(directory).resolve()))
        node = len(socket.gethostname().split(".")[0])
        return root + len("/munge/munge.socket") <= 107 and root + len("/spool/") + node + 22 <= 107

    def config_text(self) -> str:
        node, cpus = self.node, self.cpus
        memory = max(256, int(available_memory_mib() * 0.8))
        lines = [
            "ClusterName=local",
            f"SlurmctldHost={node}(127.0.0.1)",
            f"SlurmctldPort={self.ctld_port}",
            f"SlurmdPort={self.slurmd_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            # A requeued job stays PENDING (Reason=BeginTime) for cred_expire + 1 seconds: 120 by default.
            f"AuthInfo=cred_expire={self.requeue_delay},socket={self.munge_socket}",
            "CredType=cred/munge",
            f"StateSaveLocation={self.state_dir}",
            f"SlurmdSpoolDir={self.spool_dir}",
            f"SlurmctldPidFile={self.ctld_pid_file}",
            f"SlurmdPidFile={self.slurmd_pid_file}",
            f"SlurmctldLogFile={self.ctld_log}",
            f"SlurmdLogFile={self.slurmd_log}",
            "MpiDefault=none",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SwitchType=switch/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "ReturnToService=2",
            "SchedulerType=sched/backfill",
            # Start jobs on submission, and a requeued job as soon as its BeginTime passes (the
            # defaults, 3 s, and 30 s/60 s between passes, would leave jobs pending for seconds).
            "SchedulerParameters=batch_sched_delay=0,bf_interval=1,sched_interval=1",
            # Finished jobs stay visible to `scontrol show job` (default 300 s).
            "MinJobAge=3600",
            "JobRequeue=1",
            f"KillWait={self.kill_wait}",
            "MailProg=/bin/true",
            # Trust the node line below instead of comparing it with the detected hardware.
            "SlurmdParameters=config_overrides",
            *self.extra_config,
            (
                f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} Sockets=1 CoresPerSocket={cpus} "
                f"ThreadsPerCore=1 RealMemory={memory} State=UNKNOWN"
            ),
            f"PartitionName={self.partition} Nodes={node} Default=YES MaxTime=INFINITE State=UP",
        ]
        return "\n".join(lines) + "\n"

    def write_config(self) -> Path:
        for directory in (self.state_dir, self.spool_dir, self.log_dir, self.job_dir):
            directory.mkdir(parents=True, exist_ok=True)
        if not self.paths_fit(self.dir):
            raise SlurmError(f"{self.dir} is too long a path for the Unix sockets under it; take a shorter one")
        if self.ctld_port is None or self.slurmd_port is None:
            self.ctld_port, self.slurmd_port = free_ports(2)
        self.conf_path.write_text(self.config_text())
        return self.conf_path

    # ----------------------------------------------------------------------------- environment

    def client_env(self) -> dict[str, str]:
        """The environment for SLURM commands: this process's, less inherited SLURM_/SBATCH_ settings."""
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))
        }
        env["SLURM_CONF"] = str(self.conf_path)
        return env

    def job_env(self, env: Mapping[str, str | None] | None = None) -> dict[str, str]:
        """The environment sbatch exports to a job: ``client_env()``, this interpreter's directory first
        on PATH (so `python` in a job is ``sys.executable``), the repository first on PYTHONPATH (so jobs
        import the same megatron_sota as the tests), unbuffered Python output, then ``env`` (None
        values remove a variable)."""
        result = self.client_env()
        bin_dir = os.path.dirname(sys.executable)
        result["PATH"] = os.pathsep.join([bin_dir, *[p for p in result.get("PATH", "").split(os.pathsep) if p]])
        python_path = [p for p in result.get("PYTHONPATH", "").split(os.pathsep) if p]
        result["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *[p for p in python_path if p != str(REPO_ROOT)]])
        result.setdefault("PYTHONUNBUFFERED", "1")
        for key, value in (env or {}).items():
            if value is None:
                result.pop(key, None)
            else:
                result[key] = value
        return result

    def command(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float = 30,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
    ) -> subprocess.CompletedProcess:
        """Runs a SLURM client command (sbatch, squeue, scontrol, ...) against this cluster."""
        program = find_program(argv[0]) or argv[0]
        result = subprocess.run(
            [program, *argv[1:]],
            env=dict(env) if env is not None else self.client_env(),
            cwd=cwd,
            capture_output=True,
            check=False,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise SlurmError(
                f"{' '.join(argv)} exited {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
                + self._log_tails()
            )
        return result

    # ----------------------------------------------------------------------------- daemons

    def _start_munged(self) -> None:
        """A private munged: fresh key, socket, pid and seed files under <dir>/munge, run as root.

        munged insists that every directory above its socket be world-searchable; pytest's temporary
        directories are not (0700), hence --force, which turns that check into a warning.
        """
        self.munge_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.munge_dir, 0o755)
        key = self.munge_dir / "munge.key"
        key.touch(mode=0o600)
        key.write_bytes(os.urandom(128))
        pid_file = self.munge_dir / "munged.pid"
        # In the foreground munged logs to stderr: <dir>/log/munged.log.
        with open(self.log_dir / "munged.log", "ab") as out:
            process = subprocess.Popen(
                [
                    find_program("munged") or "munged",
                    "--foreground",
                    "--force",
                    f"--socket={self.munge_socket}",
                    f"--key-file={key}",
                    f"--pid-file={pid_file}",
                    f"--seed-file={self.munge_dir / 'munged.seed'}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._daemons.append(Daemon("munged", process, pid_file))
        self._wait_until(
            lambda: self.munge_socket.exists() and read_pid(pid_file) == process.pid,
            "munged to create its socket",
            timeout=10,
            process=process,
        )

    def _start_daemon(self, name: str, pid_file: Path) -> subprocess.Popen:
        with open(self.log_dir / f"{name}.out", "ab") as out:
            process = subprocess.Popen(
                [find_program(name) or name, "-D", "-f", str(self.conf_path)],
                env=self.client_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._daemons.append(Daemon(name, process, pid_file))
        return process

    def _wait_until(self, condition, what: str, timeout: float, process: subprocess.Popen | None = None) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if process is not None and process.poll() is not None:
                raise SlurmError(f"{what}: the daemon exited with {process.returncode}" + self._log_tails())
            if time.monotonic() > deadline:
                raise SlurmError(f"timed out after {timeout} s waiting for {what}" + self._log_tails())
            time.sleep(0.05)

    def controller_answers(self) -> bool:
        """Whether a slurmctld answers on this configuration's port (``scontrol ping``)."""
        result = self.command(["scontrol", "ping"], check=False, timeout=30)
        return result.returncode == 0 and "UP" in result.stdout

    def node_state(self) -> str:
        result = self.command(["sinfo", "-h", "-o", "%T"], check=False)
        return result.stdout.strip() if result.returncode == 0 else ""

    def start(self, timeout: float = 30) -> SlurmCluster:
        """Writes slurm.conf, starts munged, slurmctld and slurmd; waits until the node is idle (~0.2 s)."""
        if self.started:
            return self
        t0 = time.monotonic()
        self.write_config()
        try:
            self._start_munged()
            if self.controller_answers():
                raise SlurmError(
                    f"a slurmctld already answers on port {self.ctld_port}; "
                    f"running SLURM daemons: {slurm_processes()}"
                )
            ctld = self._start_daemon("slurmctld", self.ctld_pid_file)
            self._wait_until(self.controller_answers, "slurmctld to answer `scontrol ping`", timeout, ctld)
            slurmd = self._start_daemon("slurmd", self.slurmd_pid_file)
            self._wait_until(lambda: self.node_state() == "idle", "the node to become idle", timeout, slurmd)
        except BaseException:
            self.stop()
            raise
        self.started = True
        self.start_seconds = time.monotonic() - t0
        return self

    def job_ids(self) -> list[str]:
        """Ids of the jobs still pending, running or completing (squeue's default; finished jobs are
        not listed: see ``jobs()``)."""
        result = self.command(["squeue", "-h", "-o", "%A"], check=False, timeout=10)
        return result.stdout.split() if result.returncode == 0 else []

    def jobs(self) -> list[JobInfo]:
        """Every job the controller remembers, finished ones included (MinJobAge=3600), oldest first."""
        result = self.command(["scontrol", "show", "job", "-o"], check=False)
        lines = [line for line in result.stdout.splitlines() if line.startswith("JobId=")]
        return sorted((job_info(parse_scontrol_line(line)) for line in lines), key=lambda job: int(job.job_id))

    def step_processes(self) -> list[int]:
        """Pids of this cluster's slurmstepd processes (SLURM_CONF=<our slurm.conf> in their
        environment, inherited from slurmd) and of all their descendants."""
        marker = b"\0SLURM_CONF=" + str(self.conf_path).encode() + b"\0"
        steps = [
            pid
            for pid, name in slurm_processes()
            if name == "slurmstepd" and marker in b"\0" + process_environment(pid) + b"\0"
        ]
        children, found, todo = child_pids(), [], list(steps)
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def stop(self) -> None:
        """Cancels the cluster's jobs, stops exactly the daemons this object started, then ends any
        of its job steps that outlived them. Idempotent; safe after a failed start."""
        try:
            running = {d.name for d in self._daemons if d.process.poll() is None}
            if {"munged", "slurmctld", "slurmd"} <= running:
                jobs = self.job_ids()
                if jobs:
                    self.command(["scancel", "--full", *jobs], check=False, timeout=10)
                    deadline = time.monotonic() + self.kill_wait + 10
                    while self.job_ids() and time.monotonic() < deadline:
                        time.sleep(0.2)
        except (OSError, subprocess.SubprocessError):
            pass
        finally:
            # slurmd before slurmctld before munged: the reverse of the start order.
            while self._daemons:
                daemon = self._daemons.pop()
                if daemon.name == "munged":
                    kill_all(self.step_processes())  # without munged no step can be cancelled cleanly
                daemon.stop()
            kill_all(self.step_processes())
            self.started = False

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # ----------------------------------------------------------------------------- jobs

    def submit(
        self,
        script: str | os.PathLike,
        args: Iterable[str] = (),
        env: Mapping[str, str | None] | None = None,
        sbatch_options: Iterable[str] = (),
        *,
        cwd: str | os.PathLike | None = None,
    ) -> str:
        """``sbatch --parsable [options] script args`` run in ``cwd`` (the job's working directory;
        default: this process's); returns the job id.

        The job's environment is ``job_env(env)`` (sbatch exports the whole submitting environment by
        default; with ``--export=NONE`` or a list, keep SLURM_CONF in it, or srun/scontrol inside the
        job find no configuration). Unless the options or the script's ``#SBATCH`` lines name an
        output file, stdout and stderr go to ``<dir>/jobs/slurm-<id>.out`` (``JobInfo.stdout``),
        opened in append mode so that a requeued job's runs all stay in it.
        """
        options = [str(option) for option in sbatch_options]
        directives = _sbatch_directives(script) + options
        if not _has_option(directives, "--output", "-o"):
            options.append(f"--output={self.job_dir}/slurm-%j.out")
            if not _has_option(directives, "--open-mode"):
                options.append("--open-mode=append")
        result = self.command(
            ["sbatch", "--parsable", *options, str(script), *[str(a) for a in args]],
            env=self.job_env(env),
            cwd=cwd,
        )
        return result.stdout.strip().split(";")[0]

    def show_job(self, job_id: str) -> JobInfo | None:
        """The job as ``scontrol show job -o`` reports it, or None if the controller does not know it."""
        result = self.command(["scontrol", "show", "job", "-o", str(job_id)], check=False)
        if result.returncode != 0 or not result.stdout.strip():
            return None
        return job_info(parse_scontrol_line(result.stdout.splitlines()[0]))

    def wait_for_state(
        self,
        job_id: str,
        states: str | Iterable[str],
        timeout: float = 60,
        *,
        min_restarts: int = 0,
        poll: float = 0.5,
    ) -> JobInfo:
        """Polls until the job's state is one of ``states`` (and Restarts >= min_restarts); returns it.

        Raises SlurmTimeout, whose message holds the job's record, its output and the daemons' logs.
        """
        wanted = {states} if isinstance(states, str) else set(states)
        deadline = time.monotonic() + timeout
        info = None
        while True:
            info = self.show_job(job_id)
            if info is not None and info.state in wanted and info.restarts >= min_restarts:
                return info
            if time.monotonic() > deadline:
                state = f"{info.state} (Restarts={info.restarts}, Reason={info.reason})" if info else "unknown"
                raise SlurmTimeout(
                    f"job {job_id} not in {sorted(wanted)} (min_restarts={min_restarts}) after {timeout} s; "
                    f"it is {state}\n" + self.diagnostics(job_id)
                )
            time.sleep(poll)

    def wait(self, job_id: str, timeout: float = 60, *, min_restarts: int = 0, poll: float = 0.5) -> JobInfo:
        """Polls until the job reaches a terminal state (COMPLETED, FAILED, CANCELLED, TIMEOUT, ...).

        A requeued job passes through REQUEUED/PENDING with Restarts incremented and runs again; pass
        ``min_restarts`` to wait for a run after the N-th requeue.
        """
        return self.wait_for_state(job_id, TERMINAL_STATES, timeout, min_restarts=min_restarts, poll=poll)

    def signal_batch(self, job_id: str, sig: str = "USR1") -> None:
        """``scancel --signal=SIG --batch ID``: signals only the batch shell (not the job steps)."""
        self.command(["scancel", f"--signal={sig}", "--batch", str(job_id)])

    def signal_job(self, job_id: str, sig: str = "USR1") -> None:
        """``scancel --signal=SIG --full ID``: the batch shell, its children and every step."""
        self.command(["scancel", f"--signal={sig}", "--full", str(job_id)])

    def cancel(self, job_id: str) -> None:
        self.command(["scancel", str(job_id)])

    def requeue(self, job_id: str) -> None:
        self.command(["scontrol", "requeue", str(job_id)])

    def release(self, job_id: str) -> None:
        """``scontrol update JobId=ID StartTime=now``: a requeued job waiting out its BeginTime
        (requeue_delay + 1 s) becomes eligible at once."""
        self.command(["scontrol", "update", f"JobId={job_id}", "StartTime=now"])

    # ----------------------------------------------------------------------------- diagnostics

    def _log_tails(self, lines: int = 40) -> str:
        parts = []
        # <name>.out, the daemon's stdout, repeats its log file, but also holds what it printed before
        # it opened that (a slurm.conf it could not parse, say).
        for log, out in [(self.ctld_log, "slurmctld.out"), (self.slurmd_log, "slurmd.out"), (None, "munged.log")]:
            path = log if log is not None and read_text(log) else self.log_dir / out
            if path.exists():
                parts.append(f"\n--- tail of {path} ---\n{tail_text(path, lines if log else 10)}")
        return "".join(parts)

    def diagnostics(self, job_id: str | None = None, lines: int = 40) -> str:
        """The job's scontrol record and output files, then the tails of slurmctld.log and slurmd.log."""
        parts = []
        if job_id is not None:
            record = self.command(["scontrol", "show", "job", str(job_id)], check=False)
            parts.append(f"--- scontrol show job {job_id} ---\n{record.stdout}{record.stderr}")
            info = self.show_job(job_id)
            outputs = {info.stdout, info.stderr} if info else set()
            for path in sorted(p for p in outputs if p):
                parts.append(f"--- tail of {path} ---\n{tail_text(path, lines)}")
        return "\n".join(parts) + self._log_tails(lines)
