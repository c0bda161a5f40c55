"""Runs one untrusted Python program (a generated code sample) in an isolated, limited process and reports how it ended.
It must never raise or hang on what the program does: every call returns a result within the wall limit + a grace."""

import functools
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

logger = logging.getLogger(__name__)
_CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_child.py")
_NOBODY = 65534  # the uid and gid a sample runs as when the harness is root
_GRACE_SECONDS = 5.0  # for the launcher to start and the killed tree to be reaped
_TAIL_BYTES = 2000
# Every layer the child can apply; sandbox_layers() says which of them this machine provides.
LAYERS = ("process_group", "rlimits", "drop_privileges", "user_namespace", "network_namespace", "pid_namespace",
          "no_new_privs", "landlock_fs", "landlock_net")


@dataclass(frozen=True)
class SandboxLimits:
    cpu_seconds: float = 10.0
    wall_seconds: float = 20.0
    memory_bytes: int = 1 << 30
    file_bytes: int = 16 << 20
    processes: int = 32


@dataclass(frozen=True)
class SandboxResult:
    # "passed" (exit 0), "failed" (non-zero exit or killed by a limit), "timeout" (wall clock), "error" (sandbox)
    outcome: str
    returncode: int | None
    seconds: float
    output_tail: str
    detail: str = ""
    layers: dict = field(default_factory=dict)  # the layers this run actually had

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"


def _environment(work_dir: str) -> dict:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": work_dir, "TMPDIR": work_dir, "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1"}


def _wait_for_exit(pid: int, seconds: float) -> bool:
    """Wait until `pid` has exited without reaping it, so its process group id stays reserved for the kill."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        try:
            return bool(select.select([fd], [], [], max(0.0, seconds))[0])
        finally:
            os.close(fd)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:  # kernels without pidfd
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        time.sleep(0.02)
    return False


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_report(fd: int) -> dict:
    os.set_blocking(fd, False)
    try:
        data = os.read(fd, 1 << 16)
    except BlockingIOError:
        data = b""
    try:
        return json.loads(data) if data else {}
    except ValueError:
        return {}


def _tail(path: str) -> str:
    with open(path, "rb") as handle:
        handle.seek(max(0, os.fstat(handle.fileno()).st_size - _TAIL_BYTES))
        return handle.read().decode("utf-8", "replace")


def _outcome(timed_out: bool, report: dict, returncode: int | None) -> tuple[str, str]:
    if timed_out:
        return "timeout", "killed at the wall-clock limit"
    if not report.get("ready"):
        missing = report.get("missing") or "unknown"
        return "error", f"sandbox setup failed (layers missing: {missing}; {report.get('errors', {})})"
    if returncode == 0:
        return "passed", ""
    if returncode is not None and returncode > 128:
        try:
            return "failed", f"killed by {signal.Signals(returncode - 128).name}"
        except ValueError:
            pass
    return "failed", f"exit status {returncode}"


def _remove(path: str) -> None:
    def writable_then_retry(function, failed_path, _):
        # a program may leave directories without write permission; we own them (or are root): open and retry
        os.chmod(os.path.dirname(failed_path), 0o700)
        os.chmod(failed_path, 0o700)
        function(failed_path)

    shutil.rmtree(path, onerror=writable_then_retry)


def _run(program: str, limits: SandboxLimits, skip: frozenset, require: tuple, root: str) -> SandboxResult:
    start = time.monotonic()
    work_dir = os.path.join(root, "work")
    os.mkdir(work_dir, 0o700)
    program_path = os.path.join(work_dir, "program.py")
    with open(program_path, "w", encoding="utf-8") as handle:
        handle.write(program)
    if os.geteuid() == 0 and "drop_privileges" not in skip:
        # the program runs as "nobody": give it its directory (the harness, root, removes it afterwards)
        for path in (work_dir, program_path):
            os.chown(path, _NOBODY, _NOBODY)
    output_path = os.path.join(root, "output")  # outside work_dir: the program cannot replace it, only write to it
    report_read, report_write = os.pipe()
    config = {"work_dir": work_dir, "program": program_path, "limits": asdict(limits), "skip": sorted(skip),
              "require": list(require), "report_fd": report_write, "uid": _NOBODY}
    process = None
    try:
        with open(output_path, "wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-I", "-S", _CHILD, json.dumps(config)], stdin=subprocess.DEVNULL, stdout=output,
                stderr=subprocess.STDOUT, cwd=work_dir, env=_environment(work_dir), pass_fds=(report_write,),
                start_new_session=True)
        os.close(report_write)
        report_write = -1
        timed_out = not _wait_for_exit(process.pid, limits.wall_seconds + 0.5)  # the child's own startup
        _kill_group(process.pid)  # the program's leftovers, whether it ended or not
        try:
            returncode = process.wait(timeout=_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            returncode = None
        report = _read_report(report_read)
    finally:
        os.close(report_read)
        if report_write >= 0:
            os.close(report_write)
        if process is not None and process.returncode is None:  # we failed half-way: take the sample down with us
            _kill_group(process.pid)
            process.wait()
    outcome, detail = _outcome(timed_out, report, returncode)
    layers = dict(report.get("layers", {}), process_group=True)
    return SandboxResult(outcome, returncode, time.monotonic() - start, _tail(output_path), detail, layers)


def run_sandboxed(program: str, limits: SandboxLimits = SandboxLimits(), *, skip_layers: frozenset = frozenset(),
                  require_layers: tuple | None = None) -> SandboxResult:
    """Run `program` with every layer of sandbox_layers() (each named in `require_layers`, default: all this
    machine provides, must apply or the program does not run). `skip_layers` leaves layers out (for tests)."""
    start = time.monotonic()
    if require_layers is None:
        require_layers = tuple(name for name, on in sandbox_layers().items()
                               if on and name not in skip_layers and name != "process_group")  # set by us, not it
    root = None
    try:
        root = tempfile.mkdtemp(prefix="megatron-sota-sandbox-")
        return _run(program, limits, frozenset(skip_layers), tuple(require_layers), root)
    except Exception as err:  # the harness must survive anything, including its own failure to start a sample
        return SandboxResult("error", None, time.monotonic() - start, "", f"sandbox could not run: {err!r}")
    finally:
        if root is not None:
            try:
                _remove(root)
            except OSError as err:  # a leftover directory must not end the evaluation
                logger.warning("could not remove the sandbox directory %s: %s", root, err)


@functools.lru_cache(maxsize=1)
def sandbox_layers() -> dict[str, bool]:
    """Which isolation layers this machine provides, found by running an empty program with all of them tried."""
    probe = run_sandboxed("", SandboxLimits(cpu_seconds=5, wall_seconds=10), require_layers=())
    return {name: bool(probe.layers.get(name)) for name in LAYERS}
