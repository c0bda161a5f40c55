"""The published benchmarks' record formats: the shipped samples load and are right, bad records are named by file,
line and field, and GPQA's choice order is deterministic and unbiased."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter

import pytest

from megatron_sota.config.files import conf_dir
from megatron_sota.errors import MegatronSotaError
from megatron_sota.evaluation.benchmark_files import (
    GPQA_ANSWER_FIELDS,
    gpqa_answer_text,
    gpqa_permutation,
    read_aime,
    read_code_problems,
    read_gpqa,
    read_mmlu,
    read_swebench_instances,
)

DATA = conf_dir("eval", "tasks", "data")
COMMIT = "0123456789abcdef0123456789abcdef01234567"

GOOD = {
    read_mmlu: {"question": "q?", "subject": "s", "choices": ["a", "b", "c", "d"], "answer": 1},
    read_aime: {"problem": "p", "answer": 7},
    read_code_problems: {"task_id": "T/0", "prompt": "def f():\n", "test": "def check(candidate):\n    pass\n", "entry_point": "f"},
    read_swebench_instances: {"instance_id": "o__r-1", "repo": "o/r", "base_commit": COMMIT, "problem_statement": "bug"},
}
GOOD[read_gpqa] = {"Question": "q?", **{name: f"answer {i}" for i, name in enumerate(GPQA_ANSWER_FIELDS)}}


def _read(reader, path):
    return reader(path, 0) if reader is read_gpqa else reader(path)


def _write(tmp_path, records, name="records.jsonl") -> str:
    path = str(tmp_path / name)
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(record if isinstance(record, str) else json.dumps(record) + "\n")
    return path


# ---- the shipped samples -------------------------------------------------------------------------------------------

def test_mmlu_sample_has_six_items_per_subject_for_five_shot():
    items = read_mmlu(os.path.join(DATA, "mmlu_sample.jsonl"))
    subjects = Counter(item.fields["subject"] for item in items)
    assert len(subjects) == 4 and set(subjects.values()) == {6}
    assert all(len(item.choices) == 4 and 0 <= item.answer < 4 for item in items)
    letters = [item for item in items if isinstance(item.fields["answer"], str)]
    assert letters and all(item.answer == "ABCD".index(item.fields["answer"]) for item in letters)


def test_gpqa_sample_gold_is_the_cleaned_correct_answer():
    items = read_gpqa(os.path.join(DATA, "gpqa_sample.jsonl"), seed=1234)
    assert len(items) == 8
    for item in items:
        assert item.choices[item.answer] == item.fields["Correct Answer"].strip()
        assert sorted(item.choices) == sorted(gpqa_answer_text(item.fields[name]) for name in GPQA_ANSWER_FIELDS)
    assert any(item.fields["Correct Answer"] != item.choices[item.answer] for item in items)  # stray whitespace stripped


AIME_ANSWERS = {  # each sample problem's answer, computed here independently of the file
    "exactly one of $6$ and $10$": sum(1 for n in range(1, 1001) if (n % 6 == 0) ^ (n % 10 == 0)),
    "$3^{100}$": pow(3, 100, 1000),
    "$7^{2024}$": pow(7, 2024, 1000),
    "odd positive divisors of $360$": sum(d for d in range(1, 361, 2) if 360 % d == 0),
    "$ab = 2^4": (4 + 1) * (3 + 1) * (1 + 1),
    "perimeter $34$ and area $60$": next(
        round(math.hypot(a, 17 - a)) for a in range(1, 17) if a * (17 - a) == 60
    ),
    "$x^2 + y^2 \\le 25$": sum(1 for x in range(-5, 6) for y in range(-5, 6) if x * x + y * y <= 25),
    "digits sum to $10$": sum(1 for n in range(100, 1000) if sum(map(int, str(n))) == 10),
    "$500!$": len(str(math.factorial(500))) - len(str(math.factorial(500)).rstrip("0")),
    "$k^2$ ends in the digit $1$": sum(k for k in range(1, 41) if str(k * k).endswith("1")),
}


def test_aime_sample_answers_are_right():
    items = read_aime(os.path.join(DATA, "aime_sample.jsonl"))
    assert len(items) == len(AIME_ANSWERS)
    for item in items:
        (expected,) = [value for key, value in AIME_ANSWERS.items() if key in item.question]
        assert item.answer == str(expected), item.question
    assert any(isinstance(item.fields["answer"], str) for item in items)  # the zero-padded string form is exercised


CANONICAL = {  # a right body per sample problem, and a plausible wrong one its test must reject
    "running_max": ("    out = []\n    for n in numbers:\n        out.append(n if not out else max(out[-1], n))\n    return out\n",
                    "    return sorted(numbers)\n"),
    "count_vowels": ("    return sum(c in 'aeiouAEIOU' for c in text)\n", "    return sum(c in 'aeiou' for c in text)\n"),
    "is_balanced": ("    stack = []\n    pairs = {')': '(', ']': '[', '}': '{'}\n    for c in brackets:\n"
                    "        if c in pairs:\n            if not stack or stack.pop() != pairs[c]:\n                return False\n"
                    "        else:\n            stack.append(c)\n    return not stack\n",
                    "    return brackets.count('(') == brackets.count(')')\n"),
    "digit_root": ("    while n >= 10:\n        n = sum(int(d) for d in str(n))\n    return n\n",
                   "    return sum(int(d) for d in str(n))\n"),
    "rotate_left": ("    if not items:\n        return []\n    k %= len(items)\n    return items[k:] + items[:k]\n",
                    "    return items[k:] + items[:k]\n"),
    "merge_intervals": ("    merged = []\n    for start, end in sorted(intervals):\n        if merged and start <= merged[-1][1]:\n"
                        "            merged[-1] = (merged[-1][0], max(merged[-1][1], end))\n        else:\n"
                        "            merged.append((start, end))\n    return merged\n",
                        "    return sorted(intervals)\n"),
}

_RUNNER = """
import json, sys
results = {}
for name, program in json.load(sys.stdin).items():
    try:
        exec(program, {"__name__": "__sample__"})
        results[name] = "passed"
    except BaseException as err:
        results[name] = type(err).__name__
print(json.dumps(results))
"""


def test_humaneval_sample_tests_pass_the_canonical_solution_and_reject_a_wrong_one():
    problems = read_code_problems(os.path.join(DATA, "humaneval_sample.jsonl"))
    assert [p.entry_point for p in problems] == list(CANONICAL)
    programs = {}
    for p in problems:
        right, wrong = CANONICAL[p.entry_point]
        for kind, body in (("right", right), ("wrong", wrong)):
            programs[f"{p.task_id} {kind}"] = f"{p.prompt}{body}\n{p.test}\ncheck({p.entry_point})\n"
    done = subprocess.run([sys.executable, "-c", _RUNNER], input=json.dumps(programs), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    for p in problems:
        assert results[f"{p.task_id} right"] == "passed", p.task_id
        assert results[f"{p.task_id} wrong"] == "AssertionError", p.task_id


def test_swebench_sample_loads_with_and_without_a_ready_prompt():
    instances = read_swebench_instances(os.path.join(DATA, "swebench_sample.jsonl"))
    assert len(instances) == 3 and len({i.instance_id for i in instances}) == 3
    assert any(i.text for i in instances) and any(i.text is None for i in instances)
    assert all(len(i.base_commit) == 40 and i.repo.count("/") == 1 for i in instances)


# ---- bad records ---------------------------------------------------------------------------------------------------

def _without(record, key):
    return {k: v for k, v in record.items() if k != key}


BAD = [  # (reader, the bad record on line 2, the field its error must name)
    (read_mmlu, _without(GOOD[read_mmlu], "subject"), "subject"),
    (read_mmlu, {**GOOD[read_mmlu], "choices": ["only one"]}, "choices"),
    (read_mmlu, {**GOOD[read_mmlu], "choices": ["a", 3]}, "choices"),
    (read_mmlu, {**GOOD[read_mmlu], "answer": 4}, "answer"),
    (read_mmlu, {**GOOD[read_mmlu], "answer": "E"}, "answer"),
    (read_mmlu, {**GOOD[read_mmlu], "answer": True}, "answer"),
    (read_gpqa, _without(GOOD[read_gpqa], "Incorrect Answer 3"), "Incorrect Answer 3"),
    (read_gpqa, {**GOOD[read_gpqa], "Correct Answer": "   "}, "Correct Answer"),
    (read_gpqa, {**GOOD[read_gpqa], "Question": 5}, "Question"),
    (read_aime, {**GOOD[read_aime], "answer": 1000}, "answer"),
    (read_aime, {**GOOD[read_aime], "answer": -1}, "answer"),
    (read_aime, {**GOOD[read_aime], "answer": "12.5"}, "answer"),
    (read_aime, {**GOOD[read_aime], "answer": 3.0}, "answer"),
    (read_aime, _without(GOOD[read_aime], "problem"), "problem"),
    (read_code_problems, _without(GOOD[read_code_problems], "test"), "test"),
    (read_code_problems, {**GOOD[read_code_problems], "test": "assert f() == 1\n"}, "test"),
    (read_code_problems, {**GOOD[read_code_problems], "test": "def check(candidate:\n"}, "test"),
    (read_code_problems, {**GOOD[read_code_problems], "entry_point": "not a name"}, "entry_point"),
    (read_code_problems, {**GOOD[read_code_problems], "task_id": None}, "task_id"),
    (read_swebench_instances, {**GOOD[read_swebench_instances], "base_commit": "abc123"}, "base_commit"),
    (read_swebench_instances, {**GOOD[read_swebench_instances], "repo": "just-a-name"}, "repo"),
    (read_swebench_instances, {**GOOD[read_swebench_instances], "hints_text": ["a list"]}, "hints_text"),
    (read_swebench_instances, _without(GOOD[read_swebench_instances], "problem_statement"), "problem_statement"),
]


@pytest.mark.parametrize("reader,bad,field", BAD, ids=[f"{r.__name__}-{f}-{i}" for i, (r, _, f) in enumerate(BAD)])
def test_a_bad_record_names_file_line_and_field(tmp_path, reader, bad, field):
    good = GOOD[reader]
    if reader is read_code_problems and field != "task_id":  # ids must differ from the good record's
        bad = {**bad, "task_id": "T/1"}
    if reader is read_swebench_instances:
        bad = {**bad, "instance_id": "o__r-2"}
    path = _write(tmp_path, [good, bad])
    with pytest.raises(MegatronSotaError) as err:
        _read(reader, path)
    assert str(err.value).startswith(f"{path}:2: field '{field}': expected "), str(err.value)


@pytest.mark.parametrize("reader", list(GOOD), ids=lambda r: r.__name__)
def test_invalid_json_names_file_and_line(tmp_path, reader):
    path = _write(tmp_path, [GOOD[reader], '{"question": "unterminated\n'])
    with pytest.raises(MegatronSotaError, match=rf"^{path}:2: expected one JSON object per line, found invalid JSON"):
        _read(reader, path)


@pytest.mark.parametrize("reader,field,values", [
    (read_gpqa, "Record ID", ["recA", "recB", "recA", "recB"]),
    (read_code_problems, "task_id", ["T/0", "T/1", "T/0", "T/1"]),
    (read_swebench_instances, "instance_id", ["a__b-1", "a__b-2", "a__b-1", "a__b-2"]),
])
def test_every_repeated_id_is_named_at_once(tmp_path, reader, field, values):
    path = _write(tmp_path, [{**GOOD[reader], field: value} for value in values])
    with pytest.raises(MegatronSotaError) as err:
        _read(reader, path)
    lines = str(err.value).splitlines()
    assert [line.split(": field")[0] for line in lines] == [f"{path}:3", f"{path}:4"]
    assert f"field '{field}'" in lines[0] and "(also at line 1)" in lines[0] and "(also at line 2)" in lines[1]


def test_every_bad_record_is_named_at_once(tmp_path):
    good = GOOD[read_mmlu]
    path = _write(tmp_path, [good, {**good, "answer": 9}, good, _without(good, "question")])
    with pytest.raises(MegatronSotaError) as err:
        read_mmlu(path)
    lines = str(err.value).splitlines()
    assert [line.split(": field")[0] for line in lines] == [f"{path}:2", f"{path}:4"]


# ---- GPQA choice order ---------------------------------------------------------------------------------------------

def test_gpqa_order_is_deterministic_and_depends_on_the_seed():
    path = os.path.join(DATA, "gpqa_sample.jsonl")
    first, again, other = read_gpqa(path, 0), read_gpqa(path, 0), read_gpqa(path, 1)
    assert [i.choices for i in first] == [i.choices for i in again]
    assert [i.choices for i in first] != [i.choices for i in other]


def test_gpqa_order_is_keyed_by_record_id_not_line(tmp_path):
    records = [json.loads(line) for line in open(os.path.join(DATA, "gpqa_sample.jsonl"), encoding="utf-8")]
    forward = read_gpqa(_write(tmp_path, records, "forward.jsonl"), 5)
    backward = read_gpqa(_write(tmp_path, records[::-1], "backward.jsonl"), 5)
    assert [i.choices for i in forward] == [i.choices for i in backward[::-1]]


def test_gpqa_permutation_does_not_depend_on_pythonhashseed():
    code = "from megatron_sota.evaluation.benchmark_files import gpqa_permutation as p; print([p(k, 3) for k in ('recX', 7)])"
    outputs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60,
                       env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        for seed in ("1", "2")
    }
    assert outputs == {f"{[gpqa_permutation('recX', 3), gpqa_permutation(7, 3)]}\n"}


CHI_SQUARE_3_DOF_P001 = 16.27
"""The chi-square statistic a fair 4-way split exceeds with probability 0.001 (3 degrees of freedom)."""


def _chi_square(counts: Counter, total: int) -> float:
    expected = total / 4
    return sum((counts.get(k, 0) - expected) ** 2 / expected for k in range(4))


def test_gpqa_gold_lands_in_each_position_equally_often():
    trials = 4000
    over_seeds = Counter(gpqa_permutation("recSample000", seed).index(0) for seed in range(trials))
    over_items = Counter(gpqa_permutation(f"rec{k}", 0).index(0) for k in range(trials))
    for counts in (over_seeds, over_items):
        assert _chi_square(counts, trials) < CHI_SQUARE_3_DOF_P001, counts
