"""Prompt files for reinforcement learning (PPO, GRPO): JSONL prompts, with what a reward function checks, rendered
by the chat template into the ids the policy continues; every problem of every file listed at once.

It reads, checks and tokenizes only; it must not generate, score or batch (reward_functions.py scores).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import List, Optional, Tuple

from megatron_sota.errors import MegatronSotaError
from megatron_sota.posttrain.chat_template import ChatTemplate
from megatron_sota.posttrain.records import Messages, read_records, read_turns, show_value

PROMPT_LIMIT_KEYS = "train.seq_length minus posttrain.max_new_tokens"
"""What sets the prompt budget: a prompt and its generated response share the context."""


@dataclass(frozen=True)
class PromptRecord:
    """One prompt to generate from, and what its reward function checks."""

    ids: Tuple[int, ...]
    """The prompt rendered by the chat template with the generation prompt, tokenized: exactly the ids the model
    continues (the response starts right after them)."""
    messages: Messages
    """The conversation as given (a string prompt is one user message)."""
    answer: Optional[str]
    """The expected final answer (an integer answer is kept as its decimal text), for exact-match rewards."""
    tests: Optional[str]
    """Python source with asserts, run after the response's code, for unit-test rewards."""
    where: str
    """"path:line" of the record, for error messages."""


def read_prompt_files(
    files: Sequence[str], template_source: Optional[str], tokenizer, max_prompt_tokens: int,
    key: str = "posttrain.train_files",
) -> List[PromptRecord]:
    """Every prompt record of the JSONL `files`, in order; one MegatronSotaError (naming `key`) listing every
    problem of every file with its file:line, expected and found.

    A record has "prompt": a string (one user message) or a list of {"role", "content"} messages ending with a
    user message (TRL's conversational prompt); optional "answer" (a string or an integer) and "tests" (Python
    source). Records of post-training I's other formats that carry a prompt (prompt/completion,
    prompt/chosen/rejected) are accepted: only their prompt is used, their other fields are ignored.
    `template_source` is posttrain.chat_template (None: the shipped default); a prompt rendered longer than
    `max_prompt_tokens` (train.seq_length minus posttrain.max_new_tokens) is a problem.
    """
    if not files:
        raise MegatronSotaError(f"{key}: expected at least one JSONL file of prompts, found an empty list")
    if max_prompt_tokens < 1:
        raise MegatronSotaError(
            f"{key}: expected room for a prompt ({PROMPT_LIMIT_KEYS} at least 1), found {max_prompt_tokens}"
        )
    template = ChatTemplate.load(template_source, tokenizer)

    def parse(value: dict, where: str, problems: list) -> Optional[PromptRecord]:
        before = len(problems)
        prompt = read_turns(value, "prompt", "user", where, problems)
        answer = _optional_text(value, "answer", where, problems, integer=True)
        tests = _optional_text(value, "tests", where, problems, integer=False)
        if prompt is not None and prompt[-1]["role"] != "user":
            problems.append(
                f"{where}: field 'prompt': expected a list of messages ending with a user message (the model "
                f"answers it), found a last message of role {prompt[-1]['role']!r}"
            )
        if len(problems) > before:
            return None
        try:
            text = template.render(prompt, add_generation_prompt=True, where=where)
        except MegatronSotaError as err:
            problems.append(str(err))
            return None
        ids = tuple(tokenizer.tokenize(text))
        if len(ids) > max_prompt_tokens:
            problems.append(
                f"{where}: expected a prompt of at most {max_prompt_tokens} tokens ({PROMPT_LIMIT_KEYS}), found "
                f"{len(ids)} tokens with chat template {template.origin}: shorten or drop it, or raise "
                f"train.seq_length or lower posttrain.max_new_tokens"
            )
            return None
        return PromptRecord(ids, prompt, answer, tests, where)

    try:
        return read_records(files, parse)
    except MegatronSotaError as err:
        raise MegatronSotaError(f"{key}: {err}") from None


def _optional_text(value: dict, field: str, where: str, problems: list, integer: bool) -> Optional[str]:
    """The field as text: absent or null gives None; a non-empty string (or, with `integer`, an integer)."""
    found = value.get(field)
    if found is None:
        return None
    if integer and isinstance(found, int) and not isinstance(found, bool):
        return str(found)
    if isinstance(found, str) and found.strip():
        return found
    expected = "a non-empty string or an integer" if integer else "a non-empty string"
    problems.append(f"{where}: field '{field}': expected {expected}, found {show_value(found)}")
    return None
