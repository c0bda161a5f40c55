"""Prompts as lm-evaluation-harness builds them: few-shot examples, a separator, then the question.

A multiple-choice context is `example_1 + sep + ... + example_k + sep + template(item)`, each example
being `template(ex) + choice_template(gold choice of ex)`; the model then scores each
`choice_template(choice)` as a continuation. exact_match writes examples as
`template(ex) + target_template(ex)` and the model generates after `template(item)`.

Template fields are the record's own fields plus:
  question      the item's question (also from "problem" in exact-match files)
  answer        exact_match: the gold answer; multiple_choice: the gold choice's text
  answer_index  multiple_choice: the gold index;  answer_letter: its letter (A, B, ...)
  choices_lettered  multiple_choice: "A. first\\nB. second\\n..." (MMLU-style listings)
  choice, letter    choice_template only: the choice being written and its letter
`template` may not name answer, answer_index, answer_letter, choice or letter (checked at load).
Few-shot examples come from the same file (for MMLU, the same subject), never the item itself, chosen by a
seeded draw so a run is reproducible whatever PYTHONHASHSEED is. A `preamble` is written once before them.
A chat-formatted task (`chat: true`) gives the same parts as messages: the preamble as the system message, each
example as a user turn (its template) and an assistant turn (its answer), then the item as the last user turn.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Sequence
from typing import Any

from megatron_sota.errors import MegatronSotaError
from megatron_sota.evaluation.task_files import ExactMatchItem, MultipleChoiceItem
from megatron_sota.evaluation.task_spec import ANSWER_FIELDS, TaskSpec

LETTERS = string.ascii_uppercase


def fewshot_indices(num_items: int, index: int, k: int, seed: int) -> list[int]:
    """k distinct indices in [0, num_items) other than `index`, the same for the same (seed, index).

    The generator is seeded with the string "seed:index" (hashed with SHA-512 by `random`, not by
    Python's salted `hash`), so examples differ between items but never between runs.
    """
    if not 0 <= index < num_items:
        raise IndexError(f"item index {index} outside 0..{num_items - 1}")
    if k < 0 or k > num_items - 1:
        raise MegatronSotaError(
            f"num_fewshot: expected at most {max(num_items - 1, 0)} (the task has {num_items} records and an item "
            f"is never its own example), found {k}"
        )
    rng = random.Random(f"{seed}:{index}")
    return [j + 1 if j >= index else j for j in rng.sample(range(num_items - 1), k)]


def multiple_choice_context(spec: TaskSpec, items: Sequence[MultipleChoiceItem], index: int) -> str:
    """Few-shot examples (each with its gold choice), then the item's question; no trailing separator."""

    def solved(example: MultipleChoiceItem) -> str:
        return _render(spec, "choice_template", example.line, _choice_fields(_mc_fields(example), example.answer, example.choices))

    return _with_fewshot(spec, items, index, _mc_fields, solved)


def multiple_choice_continuations(spec: TaskSpec, item: MultipleChoiceItem) -> list[str]:
    """choice_template written for each choice, in the file's order (the gold one at item.answer)."""
    fields = _mc_fields(item)
    return [
        _render(spec, "choice_template", item.line, _choice_fields(fields, i, item.choices))
        for i in range(len(item.choices))
    ]


def without_delimiter(spec: TaskSpec, continuation: str) -> str:
    """The choice a continuation writes, without the delimiter that joins it to the context: the whitespace the
    choice_template starts with (" " in " {choice}"), as lm-eval's target_delimiter is not part of its choices."""
    template = spec.choice_template
    delimiter = template[: len(template) - len(template.lstrip())]
    return continuation[len(delimiter):] if continuation.startswith(delimiter) else continuation


def exact_match_prompt(spec: TaskSpec, items: Sequence[ExactMatchItem], index: int) -> str:
    """Few-shot examples written with their answers (target_template), then the item's question."""

    def solved(example: ExactMatchItem) -> str:
        return _render(spec, "target_template", example.line, _em_fields(example))

    return _with_fewshot(spec, items, index, _em_fields, solved)


def _with_fewshot(spec: TaskSpec, items: Sequence[Any], index: int, fields_of: Callable[[Any], dict[str, Any]], solved: Callable[[Any], str]) -> str:
    """The preamble, the drawn examples as template + their answer, then the item's template, joined by the separator."""
    parts = [_render(spec, "template", items[j].line, fields_of(items[j])) + solved(items[j]) for j in _fewshot(spec, items, index)]
    parts.append(_render(spec, "template", items[index].line, fields_of(items[index])))
    return _render(spec, "preamble", items[index].line, fields_of(items[index])) + spec.fewshot_separator.join(parts)


def exact_match_messages(spec: TaskSpec, items: Sequence[ExactMatchItem], index: int) -> list[dict[str, str]]:
    """exact_match_prompt as a conversation: [system preamble], (user example, assistant answer)..., user question."""
    preamble = _render(spec, "preamble", items[index].line, _em_fields(items[index]))
    messages = [{"role": "system", "content": preamble.strip()}] if preamble.strip() else []
    for j in _fewshot(spec, items, index):
        messages.append({"role": "user", "content": _render(spec, "template", items[j].line, _em_fields(items[j]))})
        messages.append({"role": "assistant", "content": _render(spec, "target_template", items[j].line, _em_fields(items[j])).strip()})
    messages.append({"role": "user", "content": _render(spec, "template", items[index].line, _em_fields(items[index]))})
    return messages


def record_prompt(spec: TaskSpec, line: int, fields: dict[str, Any]) -> str:
    """The task's `template` filled with one record's fields (no few-shot examples), errors naming the record's line."""
    return _render(spec, "template", line, fields)


def check_prompts(spec: TaskSpec, items: Sequence[MultipleChoiceItem] | Sequence[ExactMatchItem]) -> None:
    """Builds every prompt of the scored records once (cheap), so a template naming a field some record
    lacks, or a num_fewshot larger than the file allows, fails before a model is loaded."""
    count = len(items) if spec.limit is None else min(spec.limit, len(items))
    for index in range(count):
        if spec.type == "multiple_choice":
            multiple_choice_context(spec, items, index)  # type: ignore[arg-type]
            multiple_choice_continuations(spec, items[index])  # type: ignore[arg-type]
        elif spec.type == "exact_match":
            exact_match_prompt(spec, items, index)  # type: ignore[arg-type]
            if spec.chat:
                exact_match_messages(spec, items, index)  # type: ignore[arg-type]


_subjects_seen: list = [None, {}]
"""[the last MMLU item list seen, {subject: its records' indices}]: prompts are built item by item, and grouping the
14k records of MMLU again for each would cost minutes."""


def _fewshot(spec: TaskSpec, items: Sequence[Any], index: int) -> list[int]:
    """The item's examples: drawn from the whole file, or for MMLU from the records of the item's subject."""
    pool: Sequence[int] = range(len(items))
    if spec.format == "mmlu":
        if _subjects_seen[0] is not items:
            groups: dict[Any, list[int]] = {}
            for j, item in enumerate(items):
                groups.setdefault(item.fields.get("subject"), []).append(j)
            _subjects_seen[:] = [items, groups]
        pool = _subjects_seen[1][items[index].fields.get("subject")]
    try:
        return [pool[j] for j in fewshot_indices(len(pool), pool.index(index), spec.num_fewshot, spec.fewshot_seed)]
    except MegatronSotaError as err:
        among = f" (subject {items[index].fields.get('subject')!r})" if spec.format == "mmlu" else ""
        raise MegatronSotaError(f"task {spec.name} ({spec.path}){among}: {err}") from None


def _mc_fields(item: MultipleChoiceItem) -> dict[str, Any]:
    fields = dict(item.fields)
    fields.update(
        question=item.question,
        answer=item.choices[item.answer],
        answer_index=item.answer,
        answer_letter=_letter(item.answer),
        choices_lettered=lettered(item.choices),
    )
    return fields


def _choice_fields(fields: dict[str, Any], i: int, choices: Sequence[str]) -> dict[str, Any]:
    return {**fields, "choice": choices[i], "letter": _letter(i)}


def _em_fields(item: ExactMatchItem) -> dict[str, Any]:
    return {**item.fields, "question": item.question, "answer": item.answer}


def lettered(choices: Sequence[str]) -> str:
    """"A. first\nB. second\n...": the choices as MMLU-style prompts list them."""
    return "\n".join(f"{_letter(i)}. {c}" for i, c in enumerate(choices))


def _letter(i: int) -> str:
    return LETTERS[i] if i < len(LETTERS) else str(i)


def _render(spec: TaskSpec, key: str, line: int, fields: dict[str, Any]) -> str:
    """getattr(spec, key).format(**fields), or an error naming the task, the record's line and the field."""
    template = getattr(spec, key)
    if key in ("template", "preamble"):  # the question never sees the answer, even in a TaskSpec built without load_task
        fields = {k: v for k, v in fields.items() if k not in ANSWER_FIELDS}
    try:
        return template.format_map(fields)
    except KeyError as err:
        name = err.args[0]
        why = " (the question template may not show the answer)" if name in ANSWER_FIELDS else ""
        raise MegatronSotaError(
            f"task {spec.name}: {spec.path}:{line}: {key} {template!r} names field '{name}'{why}: expected the record "
            f"to have it, found only {', '.join(sorted(fields))}"
        ) from None
    except (IndexError, AttributeError, ValueError, TypeError) as err:
        raise MegatronSotaError(f"task {spec.name}: {spec.path}:{line}: {key} {template!r}: cannot be filled ({err})") from None
