"""Processes of a test SLURM cluster: free ports, pids and pid files, stopping daemons and stray job steps."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path


class SlurmError(RuntimeError):
    """The cluster could not be started, or a SLURM command failed."""


def free_ports(count: int, start: int = 6817, stop: int = 7817) -> list[int]:
    """``count`` TCP ports that nothing listens on (a stale slurmctld keeps 6817 busy: take the next)."""
    ports: list[int] = []
    for port in range(start, stop):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("0.0.0.0", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise SlurmError(f"no {count} free TCP ports in {start}..{stop}")


def available_memory_mib() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 1024


def _process_name(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def alive(pid: int) -> bool:
    """Whether pid is a live process (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def child_pids() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[-1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    return children


def process_environment(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def slurm_processes() -> list[tuple[int, str]]:
    """(pid, name) of every running slurmctld, slurmd, slurmstepd and munged on this machine."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            name = _process_name(int(entry.name))
            if name in ("slurmctld", "slurmd", "slurmstepd", "munged") and alive(int(entry.name)):
                found.append((int(entry.name), name))
    return sorted(found)


def kill_all(pids: Sequence[int], grace: float = 3.0) -> None:
    """SIGTERM, then after ``grace`` seconds SIGKILL, to each pid still alive."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        live = [pid for pid in pids if alive(pid)]
        for pid in live:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while live and time.monotonic() < deadline:
            live = [pid for pid in live if alive(pid)]
            time.sleep(0.05)
        if not live:
            return


class Daemon:
    """One daemon this object started: the child process and the pid file it writes."""

    def __init__(self, name: str, process: subprocess.Popen, pid_file: Path) -> None:
        self.name, self.process, self.pid_file = name, process, pid_file

    def pids(self) -> list[int]:
        pids = [self.process.pid]
        from_file = read_pid(self.pid_file)
        # The pid file should name the child itself; should a daemon ever fork, signal that too.
        if from_file and from_file != self.process.pid and _process_name(from_file) == self.name:
            pids.append(from_file)
        return pids

    def stop(self, grace: float = 5.0) -> None:
        pids = self.pids()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                if alive(pid):
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                self.process.poll()  # reap the child
                if not any(alive(pid) for pid in pids):
                    return
                time.sleep(0.05)
        self.process.poll()
