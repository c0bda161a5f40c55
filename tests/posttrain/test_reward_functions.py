"""Verifiable rewards: exact match of the final answer, and unit tests run in a limited subprocess that a
runaway loop, a memory bomb or a fork bomb fails without hurting the test process or leaving processes behind."""

from __future__ import annotations

import os
import time

import pytest

from megatron_sota.errors import MegatronSotaError
from megatron_sota.posttrain.prompt_data import PromptRecord
from megatron_sota.posttrain.reward_functions import (
    UnitTestLimits,
    check_records,
    exact_match,
    reward_function,
    run_unit_tests,
    score_responses,
    unit_tests,
)


def _record(answer=None, tests=None, line=1) -> PromptRecord:
    return PromptRecord((1, 2), ({"role": "user", "content": "q"},), answer, tests, f"prompts.jsonl:{line}")


def test_exact_match_compares_the_final_answer():
    eight = _record("8")
    scores = {response: exact_match(response, eight) for response in (
        "8", "3 + 5 = 8", "The answer is \\boxed{8}. (Not 9.)", "\\boxed{08}", "8 or 9", "9", "", "eight")}
    assert scores == {"8": 1.0, "3 + 5 = 8": 1.0, "The answer is \\boxed{8}. (Not 9.)": 1.0, "\\boxed{08}": 1.0,
                      "8 or 9": 0.0, "9": 0.0, "": 0.0, "eight": 0.0}
    paris = _record("Paris")  # not an integer: the last line, or the last box, after folding
    assert [exact_match(r, paris) for r in ("Let me think.\n  paris. \n", "Paris?\nNo: London", "\\boxed{PARIS}\nok",
                                            "It is Paris", "")] == [1.0, 0.0, 1.0, 0.0, 0.0]
    with pytest.raises(MegatronSotaError, match="prompts.jsonl:3: expected field 'answer' for the exact_match"):
        exact_match("8", _record(line=3))


def test_reward_functions_by_name_and_records_that_lack_their_field():
    assert reward_function("exact_match") is exact_match and reward_function("unit_tests") is unit_tests
    with pytest.raises(MegatronSotaError, match=r"^posttrain.reward_function: expected one of exact_match, "
                                                r"unit_tests, found 'exact_mach' \(did you mean 'exact_match'\?\)"):
        reward_function("exact_mach")
    records = [_record("1", line=1), _record(tests="assert True", line=2), _record(line=3)]
    check_records("exact_match", records[:1])
    with pytest.raises(MegatronSotaError, match=r"field 'answer' .* 2 record\(s\) without it: prompts.jsonl:2, "
                                                r"prompts.jsonl:3$"):
        check_records("exact_match", records)
    with pytest.raises(MegatronSotaError, match=r"field 'tests' .* 2 record\(s\) without it: prompts.jsonl:1, "
                                                r"prompts.jsonl:3$"):
        check_records("unit_tests", records)


ADD_TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0"
RIGHT = "Here is the code:\n```python\ndef add(a, b):\n    return a + b\n```\nExample:\n```text\nadd(2, 3) -> 5\n```"


def test_unit_tests_pass_on_right_code_and_fail_on_wrong_code():
    record = _record(tests=ADD_TESTS)
    assert unit_tests(RIGHT, record) == 1.0  # the python block, not the prose or the text block
    assert unit_tests("def add(a, b):\n    return a + b", record) == 1.0  # no block: the whole response
    assert unit_tests("```python\ndef add(a, b):\n    return a + b", record) == 1.0  # cut off by the budget
    draft = "```python\ndef add(a, b):\n    return 0\n```\nFixed:\n```py\ndef add(a, b):\n    return a + b\n```"
    assert unit_tests(draft, record) == 1.0  # the last block is the answer
    assert unit_tests(RIGHT.replace("a + b", "a - b"), record) == 0.0
    assert unit_tests("Here is the code: def add(a, b): return a + b", record) == 0.0  # a syntax error
    for skip in ("import sys\nsys.exit(0)", "exit()", "raise SystemExit"):  # exiting before the tests
        assert unit_tests(skip, record) == 0.0, skip
    with pytest.raises(MegatronSotaError, match="prompts.jsonl:1: expected field 'tests'"):
        unit_tests(RIGHT, _record())


def test_the_program_runs_alone_with_its_limits(tmp_path, monkeypatch):
    monkeypatch.setenv("MEGATRON_SOTA_TEST_SECRET", "x")
    limits = UnitTestLimits(timeout_s=2.5, memory_mb=300, file_mb=3, processes=17, open_files=33)
    code = (
        "import os, resource, sys\n"
        "def limit(name): return resource.getrlimit(getattr(resource, 'RLIMIT_' + name))\n"
        "assert limit('CPU') == (3, 4), limit('CPU')\n"
        "assert limit('AS') == (300 << 20,) * 2 and limit('FSIZE') == (3 << 20,) * 2\n"
        "assert limit('NPROC') == (17, 17) and limit('NOFILE') == (33, 33) and limit('CORE') == (0, 0)\n"
        "assert 'MEGATRON_SOTA_TEST_SECRET' not in os.environ and sys.flags.isolated\n"
        f"assert os.getcwd() != {str(os.getcwd())!r} and sorted(os.listdir()) == ['output.txt', 'program.py']\n"
        "assert sys.stdin.read() == ''\n"
        "print('ran')\n"
    )
    run = run_unit_tests(code, "", limits)
    assert (run.passed, run.returncode, run.timed_out, run.output) == (True, 0, False, "ran\n"), run.output
    too_much = run_unit_tests("open('big', 'wb').write(b'x' * (4 << 20))", "", limits)  # over file_mb
    assert not too_much.passed and too_much.returncode != 0


def test_a_runaway_loop_is_killed_at_the_timeout():
    limits = UnitTestLimits(timeout_s=0.5)
    for spin in ("while True:\n    pass", "import time\nwhile True:\n    time.sleep(0.1)"):  # CPU; wall clock
        started = time.monotonic()
        run = run_unit_tests(spin, "", limits)
        assert time.monotonic() - started < 2.0
        assert run.timed_out and not run.passed and run.returncode < 0
    assert unit_tests("import time\ntime.sleep(30)", _record(tests="pass"), limits) == 0.0


def test_a_memory_bomb_fails_on_its_memory_limit():
    bomb = "block = bytearray(256 << 20)"
    run = run_unit_tests(bomb, "", UnitTestLimits(memory_mb=128))
    assert not run.passed and "MemoryError" in run.output


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")  # a zombie is dead
    except FileNotFoundError:
        return False


def test_a_fork_bomb_fails_and_leaves_no_process_behind(tmp_path):
    pids = tmp_path / "pids"
    # At most 200 children (as root the process limit does not apply, and this machine is shared), each
    # sleeping, then the parent waits: only the timeout (or, unprivileged, the process limit) ends it.
    bomb = (
        "import os, time\n"
        "for _ in range(200):\n"
        "    if os.fork() == 0:\n"
        f"        with open({str(pids)!r}, 'a') as f:\n"
        "            f.write(f'{os.getpid()}\\n')\n"
        "        time.sleep(60)\n"
        "        os._exit(0)\n"
        "time.sleep(60)\n"
    )
    started = time.monotonic()
    assert unit_tests(bomb, _record(tests="pass"), UnitTestLimits(timeout_s=1.5)) == 0.0
    assert time.monotonic() - started < 4.0
    children = [int(line) for line in pids.read_text().split()]
    assert children, "the bomb forked nothing: nothing was tested"
    deadline = time.monotonic() + 2.0  # SIGKILL is delivered asynchronously
    while any(map(_alive, children)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in children if _alive(pid)]


def test_scoring_in_a_thread_pool_keeps_the_order():
    record = _record(tests=ADD_TESTS)
    responses = [RIGHT, "def add(a, b):\n    return a * b", RIGHT, "oops", RIGHT]
    assert score_responses(unit_tests, responses, [record] * 5, workers=3) == [1.0, 0.0, 1.0, 0.0, 1.0]
    assert score_responses(exact_match, ["7", "3"], [_record("7"), _record("4")]) == [1.0, 0.0]
    with pytest.raises(ValueError, match="2 responses for 1 records"):
        score_responses(exact_match, ["7", "3"], [_record("7")])
