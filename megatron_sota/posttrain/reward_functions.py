"""Verifiable rewards for reinforcement learning: a response scored 1.0 or 0.0 by its final answer (exact match) or
by running its code against the record's unit tests in a resource-limited subprocess.

It scores decoded text only; it must not generate, tokenize or train. It is no sandbox against a hostile program
(issue 24 is): the limits below stop runaway loops, memory and process bombs, not an escape (see unit_tests).
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence

from megatron_sota.errors import MegatronSotaError
from megatron_sota.evaluation import answer_extraction
from megatron_sota.posttrain.prompt_data import PromptRecord

logger = logging.getLogger(__name__)

RewardFunction = Callable[[str, PromptRecord], float]
"""(the decoded response without its stop token, the prompt's record) -> reward."""

_FENCE = re.compile(r"```[ \t]*([^\n`]*)\n(.*?)(?:\n[ \t]*```|\Z)", re.DOTALL)
_PYTHON_FENCES = ("python", "py", "python3", "")
_BOX = ("\\boxed", "\\fbox")


def exact_match(response: str, record: PromptRecord) -> float:
    r"""1.0 when the response's final answer equals record.answer, else 0.0 (evaluation/answer_extraction.py).

    An integer answer ("8", "042", "1,234") is compared with the response's last \boxed{} integer, else its last
    integer anywhere ("3 + 5 = 8" matches "8"; "8, no, 9" does not). Any other answer is compared, after
    trimming, whitespace and case folding and dropping a final period, with the content of the response's last
    \boxed{} if it has one, else with its last non-empty line. A record without "answer": MegatronSotaError.
    """
    if record.answer is None:
        raise MegatronSotaError(
            f"{record.where}: expected field 'answer' for the exact_match reward, found a record without one"
        )
    text = response
    if answer_extraction.normalize_gold(record.answer) is None and not any(box in response for box in _BOX):
        lines = [line for line in response.splitlines() if line.strip()]
        text = lines[-1] if lines else ""
    return float(answer_extraction.exact_match(text, record.answer))


@dataclass(frozen=True)
class UnitTestLimits:
    """What one unit-test run may use."""

    timeout_s: float = 5.0
    """Wall clock; the run's whole process group is killed at it. CPU time is limited to its ceiling too."""
    memory_mb: int = 1024
    """Address space (RLIMIT_AS): an allocation beyond it raises MemoryError."""
    file_mb: int = 16
    """Largest file it may write (RLIMIT_FSIZE), its captured output included."""
    processes: int = 32
    """RLIMIT_NPROC: it counts every process and thread of the user, and the kernel does not apply it to root."""
    open_files: int = 64


@dataclass(frozen=True)
class UnitTestRun:
    passed: bool
    """Exit status 0 within the limits."""
    returncode: int
    """Negative: killed by that signal (SIGKILL at the timeout, SIGXCPU at the CPU limit)."""
    timed_out: bool
    output: str
    """The end of what it wrote to stdout and stderr (at most 2,000 characters)."""


def extract_code(response: str) -> str:
    """The last ```python (or ```py, ```python3, or plain ```) fenced block of the response, a block cut off by
    the generation budget included; the whole response when it has none."""
    blocks = [m.group(2) for m in _FENCE.finditer(response) if m.group(1).strip().lower() in _PYTHON_FENCES]
    return blocks[-1] if blocks else response


def run_unit_tests(code: str, tests: str, limits: UnitTestLimits = UnitTestLimits()) -> UnitTestRun:
    """Runs `code` then `tests` as one program under `python -I` (no PYTHON* variables, user site or script
    directory) with only PATH, HOME, TMPDIR and LC_ALL in its environment (not the caller's tokens), in a fresh
    temporary directory, stdin closed, output to a file there, with `limits` set by the child interpreter before
    the program is compiled (preexec_fn is unsafe beside threads, and scoring runs in a thread pool). It passes
    when it runs to its end and exits 0: a SystemExit (exit(), sys.exit(0)) fails it, so code cannot skip the
    tests by exiting. The process group is killed at the end, so background children do not outlive the run.

    Not a sandbox: the program can read and write any file the user can and use the network; os._exit(0) skips
    the tests; a child that starts its own session escapes the group kill (only the process limit bounds it);
    run as root, the process limit does not apply and the program may raise its own limits.
    """
    with tempfile.TemporaryDirectory(prefix="megatron_sota_unit_tests_", ignore_cleanup_errors=True) as directory:
        program = os.path.join(directory, "program.py")
        with open(program, "w", encoding="utf-8") as handle:
            handle.write(f"{code}\n\n{tests}\n")
        output_path = os.path.join(directory, "output.txt")
        env = {"PATH": os.defpath, "HOME": directory, "TMPDIR": directory, "LC_ALL": "C.UTF-8"}
        with open(output_path, "wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-I", "-c", _bootstrap(limits), program], cwd=directory, env=env,
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
            )
            timed_out = not _exited_within(process.pid, limits.timeout_s)
            try:  # the leader is alive or unreaped, so its pid (the group's id) cannot have been reused
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            returncode = process.wait()
        with open(output_path, "rb") as handle:
            handle.seek(max(os.path.getsize(output_path) - 2000, 0))
            text = handle.read().decode("utf-8", "replace")
    return UnitTestRun(returncode == 0 and not timed_out, returncode, timed_out, text)


def unit_tests(response: str, record: PromptRecord, limits: UnitTestLimits = UnitTestLimits()) -> float:
    """1.0 when the response's code (extract_code) followed by record.tests exits 0 within `limits`
    (run_unit_tests, whose docstring says what it does not protect against), else 0.0. A record without
    "tests": MegatronSotaError."""
    if record.tests is None:
        raise MegatronSotaError(
            f"{record.where}: expected field 'tests' for the unit_tests reward, found a record without one"
        )
    run = run_unit_tests(extract_code(response), record.tests, limits)
    if not run.passed:
        logger.debug("%s: unit tests failed (exit %d%s): %s", record.where, run.returncode,
                     ", timed out" if run.timed_out else "", run.output[-300:])
    return 1.0 if run.passed else 0.0


REWARD_FUNCTIONS: Dict[str, RewardFunction] = {"exact_match": exact_match, "unit_tests": unit_tests}
_FIELDS = {"exact_match": "answer", "unit_tests": "tests"}
"""The record field each reward function needs."""


def reward_function(name: str, key: str = "posttrain.reward_function") -> RewardFunction:
    """REWARD_FUNCTIONS[name]; an unknown name: MegatronSotaError naming `key`, with a "did you mean"."""
    if name in REWARD_FUNCTIONS:
        return REWARD_FUNCTIONS[name]
    hint = difflib.get_close_matches(str(name), list(REWARD_FUNCTIONS), n=1)
    raise MegatronSotaError(
        f"{key}: expected one of {', '.join(REWARD_FUNCTIONS)}, found {name!r}"
        + (f" (did you mean {hint[0]!r}?)" if hint else "")
    )


def check_records(name: str, records: Sequence[PromptRecord], key: str = "posttrain.train_files") -> None:
    """Before any rollout: every record has the field reward function `name` needs; one MegatronSotaError
    listing each record (file:line) that lacks it."""
    field = _FIELDS.get(name)
    missing = [record.where for record in records if field and getattr(record, field) is None]
    if missing:
        shown = ", ".join(missing[:20]) + (f" and {len(missing) - 20} more" if len(missing) > 20 else "")
        raise MegatronSotaError(
            f"{key}: expected field '{field}' in every record for the {name} reward, found {len(missing)} "
            f"record(s) without it: {shown}"
        )


def score_responses(
    function: RewardFunction, responses: Sequence[str], records: Sequence[PromptRecord], workers: int = 1
) -> List[float]:
    """function(response, record) of each pair, in order; `workers` > 1 scores in a thread pool (for unit
    tests, whose time is spent in subprocesses)."""
    if len(responses) != len(records):
        raise ValueError(f"{len(responses)} responses for {len(records)} records")
    if workers <= 1:
        return [function(response, record) for response, record in zip(responses, records)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(function, responses, records))


def _bootstrap(limits: UnitTestLimits) -> str:
    """The child's first code: its limits (soft = hard, so the program cannot raise them), then the program."""
    cpu = max(1, math.ceil(limits.timeout_s))
    mb = 1024 * 1024
    values = {
        "RLIMIT_CPU": (cpu, cpu + 1),  # SIGXCPU at the soft limit, SIGKILL a second later
        "RLIMIT_AS": (limits.memory_mb * mb,) * 2,
        "RLIMIT_FSIZE": (limits.file_mb * mb,) * 2,
        "RLIMIT_NPROC": (limits.processes,) * 2,
        "RLIMIT_NOFILE": (limits.open_files,) * 2,
        "RLIMIT_CORE": (0, 0),
    }
    return (
        "import resource, runpy, sys\n"
        f"for name, value in {values!r}.items():\n"
        "    resource.setrlimit(getattr(resource, name), value)\n"
        "del name, value\n"
        "sys.argv = sys.argv[1:]\n"
        "try:\n"
        "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit as stop:\n"  # exit(0) before the tests must not pass them
        "    sys.exit(stop.code or 'the program exited before its end (its tests did not all run)')\n"
    )


def _exited_within(pid: int, seconds: float) -> bool:
    """Whether process `pid` exits within `seconds`; it is left unreaped (WNOWAIT) so its pid stays reserved."""
    deadline = time.monotonic() + seconds
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True
