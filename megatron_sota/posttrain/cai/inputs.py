"""The JSONL inputs of tools/cai.py: prompts, and comparisons of two responses; every problem of the file at once.

It reads and checks text only; it must not tokenize (the context limit is checked where prompts are rendered).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

from megatron_sota.errors import MegatronSotaError
from megatron_sota.posttrain.records import MAX_LISTED, jsonl_lines


@dataclass(frozen=True)
class PromptItem:
    prompt: str
    where: str
    """"path:line", for messages and the side records."""


@dataclass(frozen=True)
class Comparison:
    prompt: str
    response_a: str
    response_b: str
    where: str


def read_prompts(path: str) -> List[PromptItem]:
    """`{"prompt": "..."}` per line (other fields are kept out of the way, e.g. "id" and "kind")."""
    return [PromptItem(values[0], where) for where, values in _read(path, ("prompt",))]


def read_comparisons(path: str) -> List[Comparison]:
    """`{"prompt", "response_a", "response_b"}` per line: two responses to one prompt for the judge to compare."""
    return [Comparison(*values, where) for where, values in _read(path, ("prompt", "response_a", "response_b"))]


def has_responses(path: str) -> bool:
    """Whether the first record of `path` holds response_a (a comparison file) rather than a bare prompt."""
    for _, value in jsonl_lines(path, []):
        return isinstance(value, dict) and "response_a" in value
    return False


def _read(path: str, fields: tuple) -> list:
    problems: List[str] = []
    found = []
    for where, value in jsonl_lines(path, problems):
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a JSON object with {', '.join(fields)}, found {type(value).__name__}")
            continue
        bad = [f"field '{f}': expected a non-empty string, found {value.get(f, 'nothing')!r}" for f in fields
               if not isinstance(value.get(f), str) or not value[f].strip()]
        problems.extend(f"{where}: {b}" for b in bad)
        if not bad:
            found.append((where, tuple(value[f] for f in fields)))
    if not found and not problems:
        problems.append(f"{path}: expected JSON lines with {', '.join(fields)}, found no records")
    if problems:
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise MegatronSotaError(f"{path}: {len(problems)} problem(s):\n  " + "\n  ".join(problems[:MAX_LISTED]) + more)
    return found
