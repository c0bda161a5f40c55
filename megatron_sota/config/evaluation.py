"""Typed evaluation settings: the `eval` group of conf/ (in-loop evaluation) and the schema of a task file.

A task file is conf/eval/tasks/<name>.yaml; evaluation/task_spec.py reads it against TaskFile and adds the
checks a type cannot express (ranges, templates, the metrics of each task type). No file is read here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from omegaconf import MISSING


@dataclass
class EvalConfig:
    tasks: List[str] = field(default_factory=list)
    """Task names from conf/eval/tasks/ (or JSONL paths with `type` given there); empty disables in-loop evaluation."""
    interval: int = 0
    """Evaluate every this many steps and at the last step; 0 disables."""
    limit: Optional[int] = None
    """Score at most this many records per task (in-loop evaluation should cost seconds, not minutes)."""
    micro_batch_size: int = 4
    """Sequences per forward pass while scoring."""
    stop_on_threshold: bool = False
    """A release gate in the loop: when an evaluation breaches a task's threshold, save a checkpoint and stop the
    run with exit code 3 (evaluation.report.BELOW_THRESHOLD_EXIT_CODE); false: thresholds are only warnings."""


@dataclass(frozen=True, kw_only=True)
class TaskSettings:
    """How a task is prompted, scored and judged: every key of a task file except `type` and `file`.

    metadata "min"/"max": the smallest/largest value allowed (of each item, for a list); "keys": what the keys of a
    mapping name (for messages).
    """

    format: Optional[str] = None
    """The records' schema: null for this project's own per type (see conf/eval/tasks/README.md), or a benchmark's
    published one: mmlu (multiple_choice), gpqa (multiple_choice, exact_match), aime (exact_match), humaneval (code,
    also MBPP converted to that form)."""
    num_fewshot: int = field(default=0, metadata={"min": 0})
    fewshot_seed: int = 1234
    template: str = "Question: {question}\nAnswer:"
    """The context of one record (str.format with its fields); never shows the answer."""
    choice_template: str = " {choice}"
    """multiple_choice: the continuation scored for each choice (its leading space belongs to it)."""
    target_template: str = " {answer}"
    """exact_match: how a few-shot example's answer follows its template."""
    fewshot_separator: str = "\n\n"
    preamble: str = ""
    """Written once before the few-shot examples (str.format with the item's fields), as lm-eval's `description`:
    "The following are multiple choice questions (with answers) about {subject_name}.\n\n" for MMLU."""
    max_new_tokens: int = field(default=256, metadata={"min": 1})
    """exact_match, code: generation budget per record."""
    stop: Any = ("\n\n",)
    """exact_match: generation is cut at the first of these non-empty strings (a task file may give one
    string or a list; an empty list: only max_new_tokens)."""
    num_samples: int = field(default=1, metadata={"min": 1})
    """exact_match, code: answers generated per record (n of pass@k); above 1 needs temperature > 0."""
    pass_at: List[int] = field(default_factory=lambda: [1], metadata={"min": 1})
    """exact_match, code: the k of each pass@k reported (each at most num_samples), by the unbiased estimator."""
    temperature: float = field(default=0.0, metadata={"min": 0.0})
    """exact_match, code: 0 generates greedily; above 0 samples (with top_p), seeded by `seed` per record and sample."""
    top_p: float = field(default=1.0, metadata={"min": 0.0, "max": 1.0})
    chat: bool = False
    """Generated-answer tasks (exact_match, refusal, code): the prompt is rendered as a conversation with the model's
    chat template (few-shot examples as earlier user/assistant turns), and the model answers as the assistant."""
    limit: Optional[int] = field(default=None, metadata={"min": 1})
    """Score only the first `limit` records (few-shot examples are still drawn from all of them)."""
    thresholds: Any = field(default_factory=dict)
    """metric -> a number: a minimum, or a maximum for metrics where lower is better (perplexity, bits_per_byte,
    over_refusal_rate); or {min: number}, {max: number} or both, explicitly (checked by evaluation/task_spec.py)."""
    description: str = ""
    lengths: List[int] = field(default_factory=list, metadata={"min": 1})
    """passkey: prompt lengths in the model's tokens (filler, needle and question together); required there."""
    depths: List[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0], metadata={"min": 0.0, "max": 1.0})
    """passkey: where the needle starts, as a fraction of the filler tokens (0: first, 1: just before the question)."""
    samples: int = field(default=4, metadata={"min": 1})
    """passkey: samples per (length, depth) cell, each with its own key and filler offset."""
    seed: int = 1234
    """passkey: seeds the keys and filler offsets, per cell and sample; exact_match, code: seeds each sample's draws;
    gpqa: seeds each record's order of choices."""
    filler: Optional[str] = None
    """passkey: a UTF-8 text file (relative to the task file) repeated as the haystack; null: a built-in text."""
    categories: List[str] = field(default_factory=lambda: ["cbrn", "cyber", "autonomy", "misuse"])
    """refusal: the categories a record may name (each needs at least one harmful prompt); one refusal_rate per category."""
    refusal_phrases: Optional[List[str]] = None
    """refusal: phrases that mark a response as a refusal (evaluation/refusal_detection.py); null: its default list."""


@dataclass(frozen=True, kw_only=True)
class TaskFile(TaskSettings):
    """One task file; its name (without .yaml) is the task's name."""

    type: str = MISSING
    """multiple_choice, exact_match, perplexity, passkey, refusal or code."""
    file: Optional[str] = None
    """The records: a .jsonl file, or for perplexity a Megatron .bin/.idx prefix; relative to the task file.
    Required by every type but passkey, whose samples are generated."""
