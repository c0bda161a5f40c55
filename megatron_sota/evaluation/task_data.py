"""The records of a task, read by the reader of its format: this project's own JSONL schemas or a benchmark's.

It picks readers and adapts their items to the task type; reading and checking records is task_files.py's and
benchmark_files.py's, prompting is prompting.py's.
"""

from __future__ import annotations

import dataclasses
from typing import Any, List

from megatron_sota.evaluation.benchmark_files import GPQA_ANSWER_FIELDS, read_aime, read_code_problems, read_gpqa, read_mmlu
from megatron_sota.evaluation.prompting import LETTERS, lettered
from megatron_sota.evaluation.task_files import ExactMatchItem, MultipleChoiceItem, read_exact_match, read_multiple_choice
from megatron_sota.evaluation.task_spec import TaskSpec


def read_task_items(spec: TaskSpec) -> List[Any]:
    """MultipleChoiceItems, ExactMatchItems or CodeProblems of a multiple_choice, exact_match or code task."""
    if spec.format == "mmlu":
        return [_with_subject_name(item) for item in read_mmlu(spec.path)]
    if spec.format == "gpqa":
        items = [_shuffled_fields(item) for item in read_gpqa(spec.path, spec.seed)]
        return items if spec.type == "multiple_choice" else [_letter_answer(item) for item in items]
    if spec.format == "aime":
        return read_aime(spec.path)
    if spec.format == "humaneval":
        return read_code_problems(spec.path)
    return {"multiple_choice": read_multiple_choice, "exact_match": read_exact_match}[spec.type](spec.path)


def choice_count(item: ExactMatchItem) -> int:
    """How many lettered choices a letter-answer item offers (its gold is one of the first that many letters)."""
    return len(item.fields["choices"])


def _with_subject_name(item: MultipleChoiceItem) -> MultipleChoiceItem:
    """MMLU's subject as its prompts write it: "high_school_physics" -> "high school physics" ({subject_name})."""
    return dataclasses.replace(item, fields={**item.fields, "subject_name": str(item.fields["subject"]).replace("_", " ")})


def _shuffled_fields(item: MultipleChoiceItem) -> MultipleChoiceItem:
    """A GPQA record's template fields: the shuffled answers as {choice1}..{choice4} (lm-eval's names); the published
    columns, which say which answer is correct, are left out so that no template can show them."""
    fields = {k: v for k, v in item.fields.items() if k not in GPQA_ANSWER_FIELDS}
    fields.update({f"choice{i + 1}": choice for i, choice in enumerate(item.choices)})
    return dataclasses.replace(item, fields=fields)


def _letter_answer(item: MultipleChoiceItem) -> ExactMatchItem:
    """A (shuffled) GPQA question answered by generating the gold choice's letter: {choices_lettered} lists them."""
    fields = {**item.fields, "choices": list(item.choices), "choices_lettered": lettered(item.choices)}
    return ExactMatchItem(item.question, LETTERS[item.answer], item.line, fields)
