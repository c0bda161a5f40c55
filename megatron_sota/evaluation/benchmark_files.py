"""Readers of the published benchmarks' record formats (MMLU, GPQA, AIME, HumanEval/MBPP, SWE-bench), as local JSONL.

Every record is checked before a model is loaded, every bad record named at once (`<file>:<line>: field '<f>': ...`);
nothing here downloads, prompts or scores (prompting.py and runner.py do).
"""

from __future__ import annotations

import ast
import random
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, TypeVar

from megatron_sota.errors import MegatronSotaError
from megatron_sota.evaluation.task_files import (
    ExactMatchItem,
    MultipleChoiceItem,
    _field_error,
    _is_int,
    _records,
    _show,
    _string,
    _string_list,
)

Item = TypeVar("Item")

GPQA_ANSWER_FIELDS = ("Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")
"""The published GPQA CSV's answer columns, the correct one first: a permutation indexes into this order."""

_COMMIT = re.compile(r"[0-9a-fA-F]{40}")


@dataclass(frozen=True)
class CodeProblem:
    """A HumanEval-form problem: the model completes `prompt`; `test` defines check(candidate), called on `entry_point`."""

    task_id: str
    prompt: str
    test: str
    entry_point: str
    line: int
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SWEBenchInstance:
    instance_id: str
    repo: str
    """"owner/name" on GitHub."""
    base_commit: str
    problem_statement: str
    line: int
    hints_text: str = ""
    text: Optional[str] = None
    """The ready prompt of SWE-bench's oracle and BM25 retrieval datasets (issue plus code), when the record has one."""


def read_mmlu(path: str) -> list[MultipleChoiceItem]:
    """Records {"question", "subject": str, "choices": [>= 2 strings], "answer": index, or a letter "A", "B", ...}.

    The letter form is how some dumps write the answer; either way `answer` becomes an index into `choices`.
    """

    def parse(line: int, record: dict[str, Any]) -> MultipleChoiceItem:
        question = _string(path, line, record, "question")
        _string(path, line, record, "subject")
        choices = _string_list(path, line, record, "choices", 2, "a list of at least 2 non-empty strings")
        letters = [chr(ord("A") + i) for i in range(len(choices))]
        answer = record.get("answer")
        if isinstance(answer, str) and answer in letters:
            answer = letters.index(answer)
        if not _is_int(answer) or not 0 <= answer < len(choices):
            raise _field_error(
                path, line, record, "answer",
                f"an index into 'choices' (0 to {len(choices) - 1}) or a letter {letters[0]} to {letters[-1]}",
            )
        return MultipleChoiceItem(question, tuple(choices), answer, line, record)

    return _read(path, parse)


def gpqa_permutation(key: object, seed: int, n: int = 4) -> list[int]:
    """The order an item's choices are shown in: shown[i] = original[permutation[i]], the gold first in the original.

    A Fisher-Yates shuffle (random.shuffle) from random.Random(f"{seed}:{key}"): a string seed is hashed with
    SHA-512, so the order is the same on every machine and under any PYTHONHASHSEED.
    """
    permutation = list(range(n))
    random.Random(f"{seed}:{key}").shuffle(permutation)
    return permutation


def gpqa_answer_text(text: str) -> str:
    """An answer as lm-evaluation-harness's GPQA tasks clean it (lm_eval/tasks/gpqa/*/utils.py `preprocess`, 0.4.x):
    surrounding whitespace stripped, " [title]" replaced by ". ", each double space made single."""
    return text.strip().replace(" [title]", ". ").replace("  ", " ")


def read_gpqa(path: str, seed: int) -> list[MultipleChoiceItem]:
    """Records with the published CSV's columns: "Question", "Correct Answer", "Incorrect Answer 1".."3" (strings).

    Choices are the cleaned answers (gpqa_answer_text) shuffled by gpqa_permutation(key, seed), key being the
    record's "Record ID" when it has one, else its line; `answer` is the index the correct one lands on.
    """

    def parse(line: int, record: dict[str, Any]) -> MultipleChoiceItem:
        question = _string(path, line, record, "Question")
        answers = [gpqa_answer_text(_string(path, line, record, name)) for name in GPQA_ANSWER_FIELDS]
        key = _string(path, line, record, "Record ID") if "Record ID" in record else line
        permutation = gpqa_permutation(key, seed, len(answers))
        choices = tuple(answers[i] for i in permutation)
        return MultipleChoiceItem(question, choices, permutation.index(0), line, record)

    return _read(path, parse, unique="Record ID")


def read_aime(path: str) -> list[ExactMatchItem]:
    """Records {"problem": str, "answer": an integer 0 to 999, or its digits as a string ("042")}; other fields
    ("id", "year", ...) are kept. The gold is stored without leading zeros, as the answer extraction reads it."""

    def parse(line: int, record: dict[str, Any]) -> ExactMatchItem:
        problem = _string(path, line, record, "problem")
        answer = record.get("answer")
        if isinstance(answer, str) and re.fullmatch(r"[0-9]{1,3}", answer):
            answer = int(answer)
        if not _is_int(answer) or not 0 <= answer <= 999:
            raise _field_error(path, line, record, "answer", "an integer from 0 to 999 (or its digits as a string)")
        return ExactMatchItem(problem, str(answer), line, record)

    return _read(path, parse)


def read_code_problems(path: str) -> list[CodeProblem]:
    """HumanEval-form records {"task_id": str or int, "prompt", "test", "entry_point": str}.

    `test` must be Python that defines check(candidate); a sample is prompt + completion + test, then
    check(<entry_point>). MBPP is read in this form too, converted beforehand from its sanitized split: `prompt`
    the function's signature with the task's `prompt` text as its docstring, `test` a check(candidate) holding
    its `test_list` asserts with the function's name replaced by `candidate`, `entry_point` the function's name.
    """

    def parse(line: int, record: dict[str, Any]) -> CodeProblem:
        task_id = record.get("task_id")
        if _is_int(task_id):
            task_id = str(task_id)  # MBPP numbers its tasks
        if not isinstance(task_id, str) or not task_id.strip():
            raise _field_error(path, line, record, "task_id", "a non-empty string or an integer")
        prompt = _string(path, line, record, "prompt")
        entry_point = _string(path, line, record, "entry_point")
        if not entry_point.isidentifier():
            raise _field_error(path, line, record, "entry_point", "a Python function name")
        test = _string(path, line, record, "test")
        problem = _test_problem(test)
        if problem:
            raise MegatronSotaError(f"{path}:{line}: field 'test': expected Python that defines check(candidate), found {problem}")
        return CodeProblem(task_id, prompt, test, entry_point, line, record)

    return _read(path, parse, unique="task_id", key_of=lambda item: item.task_id)


def read_swebench_instances(path: str) -> list[SWEBenchInstance]:
    """SWE-bench records {"instance_id", "repo": "owner/name", "base_commit": 40 hex digits, "problem_statement"},
    optionally "hints_text" (may be empty) and "text" (the oracle/BM25 datasets' prompt); other fields are ignored."""

    def parse(line: int, record: dict[str, Any]) -> SWEBenchInstance:
        instance_id = _string(path, line, record, "instance_id")
        repo = _string(path, line, record, "repo")
        if repo.count("/") != 1 or repo.strip() != repo or "" in repo.split("/"):
            raise _field_error(path, line, record, "repo", 'a GitHub "owner/name"')
        commit = record.get("base_commit")
        if not isinstance(commit, str) or not _COMMIT.fullmatch(commit):
            raise _field_error(path, line, record, "base_commit", "a commit id of 40 hexadecimal digits")
        statement = _string(path, line, record, "problem_statement")
        hints = record.get("hints_text", "")
        if hints is None:  # some exports write a missing hint as null
            hints = ""
        if not isinstance(hints, str):
            raise _field_error(path, line, record, "hints_text", "a string (may be empty)")
        text = _string(path, line, record, "text") if "text" in record else None
        return SWEBenchInstance(instance_id, repo, commit, statement, line, hints, text)

    return _read(path, parse, unique="instance_id", key_of=lambda item: item.instance_id)


def _read(
    path: str,
    parse: Callable[[int, dict[str, Any]], Item],
    unique: Optional[str] = None,
    key_of: Optional[Callable[[Item], str]] = None,
) -> list[Item]:
    """parse(line, record) of every record; every bad record and every repeat of field `unique` in one error.

    `key_of` gives an item's value of `unique` (default: the record's own value, where it has one).
    """
    items, problems = [], []
    for line, record in _records(path):  # invalid JSON stops here: the lines after it cannot be trusted
        try:
            items.append(parse(line, record))
        except MegatronSotaError as err:
            problems.append(str(err))
    if unique is not None:
        problems += _repeats(path, items, unique, key_of or (lambda item: item.fields.get(unique)))
    if problems:
        raise MegatronSotaError("\n".join(problems))
    return items


def _repeats(path: str, items: list, name: str, key_of: Callable[[Any], Any]) -> list[str]:
    first: dict[Any, int] = {}
    problems = []
    for item in items:
        key = key_of(item)
        if key is None:
            continue
        if key in first:
            problems.append(
                f"{path}:{item.line}: field '{name}': expected a value no other record has, found {_show(key)} "
                f"(also at line {first[key]})"
            )
        else:
            first[key] = item.line
    return problems


def _test_problem(test: str) -> str:
    """Why `test` cannot run as a HumanEval test ("" when it can): a syntax error, or no top-level check()."""
    try:
        tree = ast.parse(test)
    except SyntaxError as err:
        return f"a syntax error at its line {err.lineno}: {err.msg}"
    checks = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    if not checks:
        return "no top-level 'def check'"
    if len(checks[-1].args.args) != 1:
        return f"check() taking {len(checks[-1].args.args)} arguments"
    return ""
