"""HumanEval-form programs: a completion is trimmed at the conventional stop sequences, assembled with the problem's
test, and passes or fails in the sandbox according to whether it is right."""

from megatron_sota.evaluation.code_execution import STOP_SEQUENCES, completion_program, run_samples
from megatron_sota.evaluation.runner import cut_at_stops
from megatron_sota.evaluation.sandbox import SandboxLimits


def trim_completion(text: str) -> str:
    """A completion as the runner cuts a code task's generations."""
    return cut_at_stops(text, STOP_SEQUENCES)


# A problem written for this repository, in HumanEval's form.
PROMPT = 'def running_max(values):\n    """The largest value seen so far at each position."""\n'
TEST = ("def check(candidate):\n    assert candidate([1, 3, 2, 5]) == [1, 3, 3, 5]\n"
        "    assert candidate([]) == []\n")
ENTRY_POINT = "running_max"
CORRECT = ("    best, out = None, []\n    for value in values:\n"
           "        best = value if best is None else max(best, value)\n        out.append(best)\n    return out\n")
INCORRECT = "    return sorted(values)\n"
LIMITS = SandboxLimits(cpu_seconds=2, wall_seconds=5)


def test_completion_that_runs_into_a_second_def_is_trimmed_before_it():
    raw = CORRECT + "\n\ndef main():\n    print(running_max([2, 1]))\n"
    assert trim_completion(raw) == CORRECT + "\n"


def test_trimming_stops_at_the_earliest_top_level_stop_sequence_only():
    nested = "    if values:\n        print(values)\n    return values\n"  # indented: not a stop
    assert trim_completion(nested) == nested
    assert trim_completion(nested + "#done\nclass A: pass\n") == nested[:-1]  # the stop takes its newline
    assert trim_completion(nested + "\nif __name__ == '__main__':\n    pass\n") == nested


def test_program_is_prompt_completion_test_and_check_call():
    program = completion_program(PROMPT, CORRECT, TEST, ENTRY_POINT)
    assert program.startswith(PROMPT + CORRECT) and TEST in program
    assert program.rstrip().endswith("check(running_max)")
    namespace = {}
    exec(compile(program, "program", "exec"), namespace)  # ours, not generated: safe to run here
    assert namespace["running_max"]([4, 2, 7]) == [4, 4, 7]


def test_correct_completion_passes_and_incorrect_one_fails_in_the_sandbox():
    raw = [CORRECT + "\ndef unused():\n    raise SystemExit(1)\n", INCORRECT]
    programs = [completion_program(PROMPT, trim_completion(text), TEST, ENTRY_POINT) for text in raw]
    correct, incorrect = run_samples(programs, LIMITS, workers=2)
    assert correct.passed, correct
    assert incorrect.outcome == "failed" and "AssertionError" in incorrect.output_tail
