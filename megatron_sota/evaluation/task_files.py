"""Readers of task JSONL files that check every record before a model is loaded.

A bad record (a missing answer, an index out of range) would otherwise surface hours into a run, or
worse, silently score as wrong; errors read `<file>:<line>: field '<f>': expected ..., found ...`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from megatron_sota.errors import MegatronSotaError


@dataclass(frozen=True)
class MultipleChoiceItem:
    question: str
    choices: tuple[str, ...]
    answer: int
    """Index of the gold choice."""
    line: int
    """1-based line of the record in its file (for error messages)."""
    fields: dict[str, Any] = field(default_factory=dict)
    """Every field of the record, for templates."""


@dataclass(frozen=True)
class ExactMatchItem:
    question: str
    """The record's "question", or its "problem" (MATH/AIME style files)."""
    answer: str
    """The gold answer as text (an integer answer is stored as its decimal string)."""
    line: int
    fields: dict[str, Any] = field(default_factory=dict)


def read_multiple_choice(path: str) -> list[MultipleChoiceItem]:
    """Records {"question": str, "choices": [str, ...] (non-empty strings), "answer": int index into choices}."""
    items = []
    for line, record in _records(path):
        question = _string(path, line, record, "question")
        choices = _string_list(path, line, record, "choices", 1, "a non-empty list of strings")
        answer = record.get("answer")
        if not _is_int(answer) or not 0 <= answer < len(choices):
            raise _field_error(
                path, line, record, "answer", f"an integer index into 'choices' (0 to {len(choices) - 1})"
            )
        items.append(MultipleChoiceItem(question, tuple(choices), answer, line, record))
    return items


def read_exact_match(path: str) -> list[ExactMatchItem]:
    """Records {"question" (or "problem"): str, "answer": str or int}."""
    items = []
    for line, record in _records(path):
        key = "question" if "question" in record or "problem" not in record else "problem"
        question = _string(path, line, record, key)
        answer = record.get("answer")
        if _is_int(answer):
            answer = str(answer)
        if not isinstance(answer, str) or not answer.strip():
            raise _field_error(path, line, record, "answer", "a non-empty string or an integer")
        items.append(ExactMatchItem(question, answer, line, record))
    return items


def read_text_documents(path: str) -> list[str]:
    """Records {"text": non-empty str}: the documents a perplexity task scores."""
    return [_string(path, line, record, "text") for line, record in _records(path)]


def _records(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, JSON object) of every non-blank line; an error for invalid JSON or no records at all."""
    try:
        with open(path, "rb") as handle:
            lines = handle.readlines()  # task files are small; reading first keeps I/O errors apart from record errors
    except OSError as err:
        raise MegatronSotaError(f"{path}: {err.strerror}") from None
    count = 0
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as err:
            raise MegatronSotaError(f"{path}:{number}: expected UTF-8 text, found byte {raw[err.start]:#04x}") from None
        except json.JSONDecodeError as err:
            raise MegatronSotaError(
                f"{path}:{number}: expected one JSON object per line, found invalid JSON ({err.msg}, column {err.colno})"
            ) from None
        if not isinstance(record, dict):
            raise MegatronSotaError(f"{path}:{number}: expected a JSON object, found {type(record).__name__}")
        count += 1
        yield number, record
    if not count:
        raise MegatronSotaError(f"{path}: expected one JSON object per line, found no records")


def _string(path: str, line: int, record: dict[str, Any], key: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        raise _field_error(path, line, record, key, "a non-empty string")
    return value


def _string_list(path: str, line: int, record: dict[str, Any], key: str, minimum: int, expected: str) -> list[str]:
    """record[key] as a list of at least `minimum` non-empty strings (`expected` describes that in the error)."""
    values = record.get(key)
    if not isinstance(values, list) or len(values) < minimum:
        raise _field_error(path, line, record, key, expected)
    for i, value in enumerate(values):
        if not isinstance(value, str) or not value:
            raise MegatronSotaError(f"{path}:{line}: field '{key}': expected a non-empty string at index {i}, found {value!r}")
    return values


def _field_error(path: str, line: int, record: dict[str, Any], key: str, expected: str) -> MegatronSotaError:
    found = f"no such field (the record has: {', '.join(record) or 'no fields'})" if key not in record else _show(record[key])
    return MegatronSotaError(f"{path}:{line}: field '{key}': expected {expected}, found {found}")


def _show(value: Any) -> str:
    """A value as the message shows it: JSON spelling (true, null) so it matches the file, shortened."""
    text = json.dumps(value, ensure_ascii=False)
    kind = {bool: "boolean", type(None): "null"}.get(type(value), type(value).__name__)
    kind = {"str": "string", "dict": "object", "list": "list", "int": "integer", "float": "number"}.get(kind, kind)
    return f"{kind} {text if len(text) <= 60 else text[:57] + '...'}"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
