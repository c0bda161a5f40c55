"""The code sandbox: each way a generated sample can try to escape its limits ends as a failed sample, and a batch
that mixes such samples with good ones still passes the good ones."""

import os
import socket
import tempfile
import textwrap
import time
from dataclasses import replace

import pytest

from megatron_sota.evaluation.code_execution import run_samples
from megatron_sota.evaluation.sandbox import LAYERS, SandboxLimits, run_sandboxed, sandbox_layers

LIMITS = SandboxLimits(cpu_seconds=1, wall_seconds=4, memory_bytes=256 << 20, file_bytes=1 << 20, processes=16)
GRACE = 3.0  # launcher start-up and reaping, on a loaded machine
GOOD = "import os\nopen('scratch.txt', 'w').write('ok')\nopen(os.path.join(os.environ['TMPDIR'], 't'), 'w')\n"
LOOP = "while True:\n    pass\n"
FORK_BOMB = textwrap.dedent("""\
    import os, time
    for _ in range(100):  # bounded, so that a sandbox without a process limit cannot take the machine down
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
    """)
MEMORY_HOG = "chunks = [bytearray(32 << 20) for _ in range(24)]\n"  # 768 MiB, above LIMITS.memory_bytes


def _require(layer: str) -> None:
    if not sandbox_layers()[layer]:
        pytest.skip(f"this machine does not provide the sandbox layer {layer!r}")


def _processes_running_in(directory: str) -> list[int]:
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if directory.encode() in handle.read():
                    pids.append(int(pid))
        except OSError:
            continue
    return pids


def test_sandbox_layers_names_every_layer_with_a_flag():
    layers = sandbox_layers()
    assert set(layers) == set(LAYERS) and all(isinstance(on, bool) for on in layers.values())
    assert layers["process_group"] and layers["rlimits"]


def test_correct_program_passes_and_may_write_in_its_own_directory():
    result = run_sandboxed(GOOD + "print('done')\n", LIMITS)
    assert result.passed, result
    assert "done" in result.output_tail


def test_wrong_program_fails_with_its_error_in_the_output():
    result = run_sandboxed("assert 1 + 1 == 3, 'arithmetic'\n", LIMITS)
    assert result.outcome == "failed" and result.returncode == 1
    assert "AssertionError: arithmetic" in result.output_tail


def test_infinite_loop_is_stopped_by_the_cpu_limit():
    result = run_sandboxed(LOOP, LIMITS)
    assert result.outcome == "failed", result  # not "timeout": the CPU limit, not the wall clock, ended it
    assert result.seconds < LIMITS.cpu_seconds + GRACE


def test_idle_program_is_killed_at_the_wall_limit_and_its_directory_removed():
    limits = SandboxLimits(cpu_seconds=1, wall_seconds=1.5)
    result = run_sandboxed("import os, time\nprint(os.getcwd(), flush=True)\ntime.sleep(30)\n", limits)
    assert result.outcome == "timeout" and not result.passed
    assert result.seconds < limits.wall_seconds + GRACE
    work_dir = result.output_tail.strip()
    assert work_dir.startswith(tempfile.gettempdir()) and not os.path.exists(work_dir)


def test_fork_bomb_is_stopped_by_the_process_limit():
    result = run_sandboxed(FORK_BOMB, LIMITS)
    assert result.outcome == "failed", result
    assert "BlockingIOError" in result.output_tail  # fork() refused, not a time limit


def test_processes_that_leave_the_process_group_die_with_the_sample():
    _require("pid_namespace")
    program = textwrap.dedent("""\
        import os, time
        print(os.getcwd(), flush=True)
        for _ in range(3):
            if os.fork() == 0:
                os.setsid()  # out of the sample's process group, out of reach of a group kill
                time.sleep(30)
                os._exit(0)
        """)
    result = run_sandboxed(program, LIMITS)
    work_dir = result.output_tail.strip()
    survivors = _processes_running_in(work_dir)
    for pid in survivors:  # do not leave them behind when the layer is missing
        os.kill(pid, 9)
    assert result.passed and work_dir and survivors == []


def test_memory_hog_fails():
    result = run_sandboxed(MEMORY_HOG, LIMITS)
    assert result.outcome == "failed" and "MemoryError" in result.output_tail, result


def test_large_file_write_fails():
    result = run_sandboxed("open('big', 'wb').write(b'x' * (4 << 20))\n", LIMITS)
    assert result.outcome == "failed" and "File too large" in result.output_tail, result


def _connect_program(port: int, udp_port: int) -> str:
    return textwrap.dedent(f"""\
        import socket
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"udp", ("127.0.0.1", {udp_port}))
        socket.create_connection(("127.0.0.1", {port}), timeout=2).sendall(b"tcp")
        """)


def _run_against_listeners(skip: frozenset = frozenset()):
    """Run a program that connects to a TCP and a UDP socket of ours; return its result and what reached us."""
    with socket.create_server(("127.0.0.1", 0)) as server, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        result = run_sandboxed(_connect_program(server.getsockname()[1], udp.getsockname()[1]), LIMITS,
                               skip_layers=skip)
        server.setblocking(False)
        udp.setblocking(False)
        reached = {}
        for name, receive in (("tcp", server.accept), ("udp", lambda: udp.recv(16))):
            try:
                receive()
                reached[name] = True
            except BlockingIOError:
                reached[name] = False
        return result, reached


def test_network_connection_fails_in_the_network_namespace():
    _require("network_namespace")
    result, reached = _run_against_listeners()
    assert result.outcome == "failed" and reached == {"tcp": False, "udp": False}, (result, reached)


def test_landlock_refuses_tcp_even_without_the_network_namespace():
    _require("landlock_net")
    result, reached = _run_against_listeners(skip=frozenset({"network_namespace"}))
    assert result.outcome == "failed" and "PermissionError" in result.output_tail, result
    assert not reached["tcp"]  # UDP may pass: Landlock governs TCP only


def test_write_outside_its_directory_fails_and_leaves_no_file():
    _require("landlock_fs")
    with tempfile.TemporaryDirectory() as outside:
        os.chmod(outside, 0o777)  # writable by anyone, as /tmp is: only the sandbox can stop the write
        target = os.path.join(outside, "escaped.txt")
        result = run_sandboxed(f"open({target!r}, 'w').write('x')\n", LIMITS)
        assert result.outcome == "failed" and not os.path.exists(target), result


def test_program_does_not_run_when_a_required_layer_is_missing():
    result = run_sandboxed("print('ran')\n", LIMITS, require_layers=("no_such_layer",))
    assert result.outcome == "error" and "no_such_layer" in result.detail
    assert "ran" not in result.output_tail


def test_batch_of_hostile_and_good_samples_passes_the_good_ones_in_order():
    programs = [GOOD, LOOP, GOOD, FORK_BOMB, MEMORY_HOG, GOOD, "import time\ntime.sleep(30)\n", GOOD]
    calls = []
    limits = replace(LIMITS, wall_seconds=2)
    start = time.monotonic()
    results = run_samples(programs, limits, workers=3, progress=lambda done, total: calls.append((done, total)))
    assert [result.passed for result in results] == [program == GOOD for program in programs], results
    assert calls[-1] == (len(programs), len(programs)) and len(calls) == len(programs)
    assert time.monotonic() - start < 2 * (limits.wall_seconds + GRACE)
