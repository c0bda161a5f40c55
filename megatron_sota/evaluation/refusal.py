"""A refusal task's records and metrics: harmful prompts the model should refuse, per category, and benign prompts
that look like them, which it should answer.

It reads, checks and counts; it must not run a model (runner.refusal_task generates, refusal_detection decides).
Records: {"prompt": str, "category": one of the task's `categories`, "harmful": true | false}. Every problem of a
file is reported at once, each as `<file>:<line>: field '<f>': expected ..., found ...`. Metrics (each a mean of
0/1 per prompt, with its standard error):
  refusal_rate              harmful prompts refused, over all categories
  refusal_rate/<category>   the same within one category (one row per category of the task)
  over_refusal_rate         benign prompts refused (lower is better)
  over_refusal_rate/<category>  the same among the benign prompts that name that category (those that have some)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

from megatron_sota.errors import MegatronSotaError
from megatron_sota.evaluation.metrics import mean_stderr
from megatron_sota.evaluation.prompting import record_prompt
from megatron_sota.evaluation.report import MetricRow
from megatron_sota.evaluation.task_files import _records, _show
from megatron_sota.evaluation.task_spec import TaskSpec


@dataclass(frozen=True)
class RefusalItem:
    prompt: str
    category: str
    harmful: bool
    line: int
    fields: dict[str, Any]


def read_refusal(path: str, categories: Sequence[str]) -> list[RefusalItem]:
    """Every record of `path`, checked: all problems (per record, then of the whole set) in one error."""
    items, problems = [], []
    for line, record in _records(path):
        found = []
        prompt, category, harmful = record.get("prompt"), record.get("category"), record.get("harmful")
        if not isinstance(prompt, str) or not prompt.strip():
            found.append(_problem(path, line, record, "prompt", "a non-empty string"))
        if category not in categories or not isinstance(category, str):
            found.append(_problem(path, line, record, "category", f"one of the task's categories ({', '.join(categories)})"))
        if not isinstance(harmful, bool):
            found.append(_problem(path, line, record, "harmful", "true or false"))
        problems.extend(found)
        if not found:
            items.append(RefusalItem(prompt, category, harmful, line, record))
    if not problems:
        problems.extend(_set_problems(path, items, categories))
    if problems:
        raise MegatronSotaError("\n".join(problems))
    return items


def _set_problems(path: str, items: Sequence[RefusalItem], categories: Sequence[str]) -> list[str]:
    """A gate needs both sides: harmful prompts in every category (else it cannot fail) and benign ones (else a
    model that refuses everything passes)."""
    problems = [
        f"{path}: category '{c}': expected at least one harmful prompt (\"harmful\": true), found none"
        for c in categories if not any(i.harmful and i.category == c for i in items)
    ]
    if not any(not i.harmful for i in items):
        problems.append(f"{path}: expected at least one benign prompt (\"harmful\": false) to measure over-refusal, found none")
    return problems


def _problem(path: str, line: int, record: dict, key: str, expected: str) -> str:
    found = f"no such field (the record has: {', '.join(record) or 'no fields'})" if key not in record else _show(record[key])
    return f"{path}:{line}: field '{key}': expected {expected}, found {found}"


def limited(items: Sequence[RefusalItem], limit: Optional[int]) -> list[RefusalItem]:
    """At most `limit` prompts of each (harmful, category) group, in file order, so a limit keeps every category."""
    if limit is None:
        return list(items)
    kept, counts = [], {}
    for item in items:
        group = (item.harmful, item.category)
        if counts.get(group, 0) < limit:
            counts[group] = counts.get(group, 0) + 1
            kept.append(item)
    return kept


def refusal_prompt(spec: TaskSpec, item: RefusalItem) -> str:
    """The task's `template` with the record's fields; {prompt} is the prompt ({question} too, the default template's)."""
    return record_prompt(spec, item.line, {**item.fields, "question": item.prompt, "prompt": item.prompt})


def refusal_rows(task: str, categories: Sequence[str], items: Sequence[RefusalItem], refused: Sequence[float]) -> list[MetricRow]:
    """The rows of the module docstring; refused[i] is 1.0 when items[i]'s response was a refusal, else 0.0."""
    if len(items) != len(refused):
        raise ValueError(f"{len(items)} items but {len(refused)} refusal decisions")
    rows = []
    for metric, harmful in (("refusal_rate", True), ("over_refusal_rate", False)):
        side = [(item.category, value) for item, value in zip(items, refused) if item.harmful == harmful]
        if not side:
            continue
        rows.append(MetricRow(task, metric, *mean_stderr([v for _, v in side]), len(side)))
        for category in categories:
            values = [v for c, v in side if c == category]
            if values:
                rows.append(MetricRow(task, f"{metric}/{category}", *mean_stderr(values), len(values)))
    return rows
